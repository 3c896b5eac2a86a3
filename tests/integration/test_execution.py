"""What a job sees and what the worker reports, against the real Docker engine: every test runs twice, once with
fresh containers (the cold path) and once served from pools of started containers, with the same results."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import docker
import pytest

from hatchway.engines import offline_etc
from hatchway.models import Job, JobState, Reason
from hatchway.settings import Settings
from hatchway.worker.worker import Worker
from tests.conftest import BUSYBOX, PYTHON, containers_of
from tests.integration.conftest import LOCALHOST_ECHO, RunJob, make_settings, pools_ready

pytestmark = pytest.mark.docker


@pytest.fixture(params=["cold", "pooled"])
def worker_settings(tmp_path: Path, worker_id: str, request: pytest.FixtureRequest) -> Settings:
    if request.param == "cold":
        return make_settings(tmp_path, worker_id, pool_warm_total=0)
    pools = [{"image": BUSYBOX, "size": 2}, {"image": PYTHON, "size": 1}]
    return make_settings(tmp_path, worker_id, pool_warm_total=0, pools=pools)


@pytest.fixture
def run_job(worker: Worker, submit: Callable[..., Awaitable[Job]]) -> RunJob:
    """Submit a job and return it once it has ended; with pools, a job they can serve must be served by them."""
    pooled = bool(worker.settings.pools)

    async def _run(command: list[str] | str, **fields: Any) -> Job:
        servable = pooled and "workdir" not in fields and fields.get("image", BUSYBOX) in (BUSYBOX, PYTHON)
        if servable:
            await pools_ready(worker)
        final = await worker.jobs.wait_final((await submit(command, **fields)).id, 90)
        assert final.state.is_final, f"job did not finish: {final}"
        if final.run.engine is not None:
            assert final.run.pooled == servable, final.run
        return final

    return _run


async def test_success_reports_exact_output_and_exit_code(run_job: RunJob) -> None:
    job = await run_job(["sh", "-c", "printf 'out\\nline2'; printf 'err' >&2"])
    assert (job.state, job.reason, job.exit_code) == (JobState.SUCCEEDED, None, 0)
    assert (job.stdout, job.stderr) == ("out\nline2", "err")
    assert job.started_at is not None and job.finished_at is not None and job.duration_s is not None


async def test_non_zero_exit_fails_with_reason_exit_code(run_job: RunJob) -> None:
    job = await run_job("echo partial; echo oops >&2; exit 7")
    assert (job.state, job.reason, job.exit_code) == (JobState.FAILED, Reason.EXIT_CODE, 7)
    assert (job.stdout, job.stderr) == ("partial\n", "oops\n")


async def test_stdin_reaches_the_command(run_job: RunJob) -> None:
    big = "x" * 1_000_000
    job = await run_job(["sh", "-c", "cat; printf '|'; wc -c < /dev/null"], stdin="line1\nline2\n")
    assert job.stdout == "line1\nline2\n|0\n"
    counted = await run_job(["wc", "-c"], stdin=big)
    assert counted.stdout.strip() == str(len(big))


async def test_files_are_written_into_the_working_directory(run_job: RunJob) -> None:
    job = await run_job("pwd; cat data/in.txt; cat top.txt", files={"data/in.txt": "nested\n", "top.txt": "top\n"})
    assert job.stdout == "/workspace\nnested\ntop\n"
    custom = await run_job("pwd; cat f", files={"f": "here"}, workdir="/srv/job")
    assert custom.stdout == "/srv/job\nhere"


async def test_env_is_passed_and_worker_identity_injected(run_job: RunJob, worker: Worker) -> None:
    job = await run_job('echo "$FOO|$HATCHWAY_JOB_ID|$HATCHWAY_WORKER_ID"', env={"FOO": "bar baz"})
    assert job.stdout == f"bar baz|{job.id}|{worker.worker_id}\n"


async def test_runs_as_non_root_with_read_only_root_and_writable_tmp_and_workdir(run_job: RunJob) -> None:
    job = await run_job("id -u; touch /x 2>&1 || true; touch /tmp/t && echo tmp-ok; touch w && echo work-ok")
    lines = job.stdout.splitlines()
    assert lines[0] == "65534"
    assert "Read-only file system" in lines[1]
    assert lines[2:] == ["tmp-ok", "work-ok"]


async def test_no_capabilities_and_no_new_privileges(run_job: RunJob) -> None:
    job = await run_job("grep -E '^(CapEff|NoNewPrivs)' /proc/self/status")
    assert "CapEff:\t0000000000000000" in job.stdout
    assert "NoNewPrivs:\t1" in job.stdout


async def test_network_none_has_only_loopback(run_job: RunJob) -> None:
    job = await run_job("ip -o link | cut -d: -f2; ip -o -4 addr | awk '{print $4}'")
    assert job.stdout.split() == ["lo", "127.0.0.1/8"]


async def test_network_none_has_dockers_etc_files_and_a_working_localhost(run_job: RunJob) -> None:
    """Docker's network setup is skipped (`offline_etc`): the job still finds /etc/hosts and /etc/resolv.conf as
    that setup writes them (not writable), and `localhost` names a loopback that works."""
    job = await run_job(["python3", "-c", LOCALHOST_ECHO], image=PYTHON)
    assert (job.state, job.stdout) == (JobState.SUCCEEDED, "over loopback\n"), job.stderr
    files = await run_job("cat /etc/hosts; echo ---; cat /etc/resolv.conf; echo >> /etc/hosts || echo read-only")
    hosts, _, rest = files.stdout.partition("---\n")
    assert hosts == offline_etc.HOSTS
    assert rest == offline_etc.container_resolv_conf() + "read-only\n"


async def test_timeout_stops_the_job(run_job: RunJob) -> None:
    job = await run_job(["sleep", "60"], limits={"timeout_s": 1})
    assert (job.state, job.reason) == (JobState.FAILED, Reason.TIMEOUT)
    assert job.duration_s is not None and job.duration_s < 15


async def test_memory_limit_is_reported_as_oom(run_job: RunJob) -> None:
    job = await run_job(["python3", "-c", "b = bytearray(256 * 1024 * 1024)"], image=PYTHON, limits={"memory_mb": 32})
    assert (job.state, job.reason) == (JobState.FAILED, Reason.MEMORY_LIMIT)


async def test_fork_bomb_is_held_by_the_pids_limit(run_job: RunJob) -> None:
    bomb = "f() { f | f & }; f; sleep 2; echo survived"
    job = await run_job(bomb, limits={"pids": 24, "timeout_s": 20})
    assert "can't fork" in job.stderr or "Resource temporarily unavailable" in job.stderr
    after = await run_job("echo still-fine")
    assert after.stdout == "still-fine\n"


async def test_output_flood_is_capped_and_stopped(run_job: RunJob) -> None:
    job = await run_job(["yes", "flood"], limits={"output_bytes": 10_000, "timeout_s": 30})
    assert (job.state, job.reason) == (JobState.FAILED, Reason.OUTPUT_LIMIT)
    assert job.stdout_truncated and not job.stderr_truncated
    assert len(job.stdout) == 10_000 and job.stdout.startswith("flood\nflood\n")


async def test_invalid_utf8_output_is_replaced_not_fatal(run_job: RunJob) -> None:
    job = await run_job(r"printf 'a\377\376b'; printf '\300' >&2")
    assert job.state == JobState.SUCCEEDED
    assert job.stdout == "a\ufffd\ufffdb" and job.stderr == "\ufffd"
    job.model_dump_json()


async def test_missing_image_that_cannot_be_pulled_fails_with_image_pull_failed(run_job: RunJob) -> None:
    job = await run_job(["true"], image="hatchway-test/does-not-exist:1")  # no registry answers here
    assert (job.state, job.reason) == (JobState.FAILED, Reason.IMAGE_PULL_FAILED)
    assert job.message is not None and "does-not-exist" in job.message


async def test_missing_command_fails_like_a_shell(run_job: RunJob) -> None:
    job = await run_job(["/no/such/program"])
    assert (job.state, job.reason, job.exit_code) == (JobState.FAILED, Reason.EXIT_CODE, 127)


async def test_resources_are_reported(run_job: RunJob) -> None:
    job = await run_job(["python3", "-c", "import time; b = bytearray(40 << 20); time.sleep(2.5)"], image=PYTHON)
    assert job.resources.peak_memory_bytes is not None and job.resources.peak_memory_bytes > 40 << 20
    assert job.resources.cpu_s is not None and job.resources.cpu_s > 0


async def test_container_and_workspace_are_removed_after_the_result_is_stored(
    run_job: RunJob, worker: Worker, docker_client: docker.DockerClient
) -> None:
    job = await run_job("echo done > result.txt; echo ok", files={"in": "x"})
    assert job.stdout == "ok\n"
    assert containers_of(docker_client, worker.worker_id, pooled=False) == []
    assert not (worker.settings.data_dir / "work" / job.id).exists()
    assert not list((worker.settings.data_dir / "output").glob(f"{job.id}*"))
