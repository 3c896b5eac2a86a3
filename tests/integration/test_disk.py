"""The disk limit: a job's working directory and /tmp share `limits.disk_mb`, on runc and gVisor, and a bundle that
would unpack past it is refused before anything is written."""

from __future__ import annotations

import asyncio
import os
import time
import zipfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from hatchway.models import Job, JobState
from hatchway.settings import Settings
from hatchway.worker.worker import Worker
from tests.integration.conftest import RunJob, make_settings, wait_for_state

pytestmark = pytest.mark.docker
Submit = Callable[..., Awaitable[Job]]
MIB = 1 << 20

RUNTIMES = pytest.mark.parametrize("runtime", ["docker", "gvisor"])


@pytest.fixture
def worker_settings(tmp_path: Path, worker_id: str) -> Settings:
    """Bundles from this test's directory."""
    return make_settings(tmp_path, worker_id, bundle_allowed_urls=[f"file://{tmp_path}/*"])


@RUNTIMES
async def test_writing_past_the_disk_limit_fails_with_disk_limit(run_job: RunJob, worker: Worker, runtime: str) -> None:
    job = await run_job(
        "dd if=/dev/zero of=big bs=1M count=200 2>&1; echo wrote; exit 1",
        runtime=runtime,
        limits={"disk_mb": 32},
    )
    assert (job.state, job.reason, job.engine) == (JobState.FAILED, "disk_limit", runtime), job
    assert "No space left on device" in job.stdout
    assert "disk" in (job.message or "")


@RUNTIMES
async def test_the_working_directory_and_tmp_share_the_limit(run_job: RunJob, runtime: str) -> None:
    job = await run_job(
        "dd if=/dev/zero of=/workspace/a bs=1M count=20 && dd if=/dev/zero of=/tmp/b bs=1M count=20",
        runtime=runtime,
        limits={"disk_mb": 32},
    )
    assert (job.state, job.reason) == (JobState.FAILED, "disk_limit"), job


@RUNTIMES
async def test_a_job_within_its_disk_sees_it_all(run_job: RunJob, runtime: str) -> None:
    job = await run_job(
        "dd if=/dev/zero of=data bs=1M count=24 2>/dev/null && echo x > /tmp/t && cat /tmp/t && stat -c %a /tmp "
        "&& df -m /workspace | tail -1",
        runtime=runtime,
        limits={"disk_mb": 32},
    )
    assert job.state == JobState.SUCCEEDED, job
    lines = job.stdout.splitlines()
    assert lines[:2] == ["x", "1777"]
    available_mb = int(lines[2].split()[3])
    assert 6 <= available_mb <= 8, "what is left is the disk limit less the 24 MB written"


async def test_the_host_stores_only_what_the_job_wrote(worker: Worker, submit: Submit) -> None:
    """A 4 GiB disk is a sparse file: while the job runs, the host holds its 8 MB and a little of ext4's own, and
    once it has ended, nothing of what the job wrote."""
    job = await submit(
        "dd if=/dev/zero of=big bs=1M count=8 2>/dev/null && touch written && sleep 30", limits={"disk_mb": 4096}
    )
    await wait_for_state(worker, job.id, JobState.RUNNING)
    backing = worker.settings.data_dir / "volumes" / job.id / "disk.ext4"
    deadline = time.monotonic() + 20
    while not (backing.parent / "mnt" / "work" / "written").exists():
        assert time.monotonic() < deadline, "the job did not write its file"
        await asyncio.sleep(0.05)
    assert backing.stat().st_size > 4096 * MIB
    await asyncio.to_thread(os.sync)  # the job's writes reach the backing file
    assert 8 * MIB <= backing.stat().st_blocks * 512 < 80 * MIB
    await worker.jobs.kill(job.id, grace_s=0)
    final = await worker.jobs.wait_final(job.id, 30)
    assert final.reason == "killed"
    # The disk is removed, or kept wiped as a spare for the next job: then its freed blocks go back to the host.
    assert not backing.exists() or backing.stat().st_blocks * 512 < 4 * MIB


async def test_a_bundle_past_the_disk_limit_is_refused_before_it_is_written(
    run_job: RunJob, worker: Worker, tmp_path: Path
) -> None:
    bundle = tmp_path / "bomb.zip"
    with (
        zipfile.ZipFile(bundle, "w", compression=zipfile.ZIP_DEFLATED) as archive,
        archive.open("zeros", "w") as member,
    ):
        for _ in range(64):
            member.write(bytes(1 << 20))
    assert bundle.stat().st_size < 1 << 20
    job = await run_job("ls -l", bundle_url=f"file://{bundle}", limits={"disk_mb": 32})
    assert (job.state, job.reason) == (JobState.FAILED, "bad_bundle"), job
    assert "disk limit (32 MB)" in (job.message or ""), job.message


async def test_the_default_disk_refuses_a_bundle_of_a_gibibyte(run_job: RunJob, worker: Worker, tmp_path: Path) -> None:
    """The issue's case: 1 MB of zip that unpacks to 1 GiB of zeros, under the default limits."""
    bundle = tmp_path / "gib.zip"
    with (
        zipfile.ZipFile(bundle, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive,
        archive.open("zeros", "w", force_zip64=True) as member,
    ):
        for _ in range(128):
            member.write(bytes(8 << 20))
    job = await run_job("ls -l", bundle_url=f"file://{bundle}")
    assert (job.state, job.reason) == (JobState.FAILED, "bad_bundle"), job
    assert "disk limit (1024 MB)" in (job.message or ""), job.message
