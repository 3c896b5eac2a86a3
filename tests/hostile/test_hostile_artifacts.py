"""A job's files under out/ are kept on the host for days. The byte limit let any number of empty files through,
each one an inode of the host's: a few jobs writing 100 000 of them each could use up the inodes of the data
dir's filesystem. Now `artifacts_max_files` bounds the files and directories kept per job as well; what is over is
dropped, and the job's result says so."""

from __future__ import annotations

import os

import pytest

from tests.acceptance.conftest import ServerFactory

pytestmark = pytest.mark.docker

FILES = 100_000


def test_a_job_writing_a_hundred_thousand_empty_artifacts_keeps_at_most_the_limit(
    start_server: ServerFactory,
) -> None:
    server = start_server()
    command = f"mkdir -p out/a out/b && cd out && seq 1 {FILES // 2} | sed 's|^|a/|' | xargs touch" + (
        f" && seq 1 {FILES // 2} | sed 's|^|b/|' | xargs touch && find . -type f | wc -l"
    )
    # One inode per 32 KiB of a job's disk: 100 000 files need a disk of 4 GB (a sparse file on the host).
    answer = server.post_job(
        wait=True, image="hatchway-test/busybox", command=command, limits={"disk_mb": 4096, "timeout_s": 300}
    )
    assert answer.status_code == 201, answer.text
    job = server.wait_state(answer.json()["id"], "succeeded", "failed", "killed", timeout_s=300)
    assert (job["state"], job["stdout"]) == ("succeeded", f"{FILES}\n"), job
    kept_dir = server.log_path.parent / "artifacts" / job["id"]
    kept = sum(len(names) + len(dirs) for _, dirs, names in os.walk(kept_dir))
    assert kept <= 1000, f"{kept} files and directories of the job kept on the host"
    listed = server.client.get(f"/jobs/{job['id']}/artifacts").json()
    assert 0 < len(listed) < 1000, len(listed)
    assert "artifacts_max_files = 1000" in (job["message"] or ""), job["message"]
    assert server.stop() == 0
