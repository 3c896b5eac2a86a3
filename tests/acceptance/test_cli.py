"""The `hatchway` command: one local job, and the client commands against a running worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.acceptance.conftest import Server
from tests.conftest import BUSYBOX

pytestmark = pytest.mark.docker


def hatchway(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hatchway.cli.main", *args],
        input=stdin, capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip


def test_run_streams_output_and_exits_with_the_job_code(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HATCHWAY_")}
    env["HATCHWAY_DATA_DIR"] = str(tmp_path)
    result = hatchway("run", BUSYBOX, "--memory-mb", "64", "-e", "WHO=you", "-i", "--",
                      "sh", "-c", 'echo "hi $WHO"; cat; echo oops >&2; exit 4', stdin="piped\n", env=env)  # fmt: skip
    assert (result.returncode, result.stdout) == (4, "hi you\npiped\n")
    assert result.stderr == "oops\n"
    timed_out = hatchway("run", BUSYBOX, "--timeout-s", "1", "--", "sleep", "30", env=env)
    assert timed_out.returncode == 124 and "timeout" in timed_out.stderr


def test_client_commands_against_a_worker(server: Server) -> None:
    url = ["--url", server.url]
    submitted = hatchway("submit", *url, "--wait", "--label", "k=v", BUSYBOX, "--", "echo", "from-cli")
    assert submitted.returncode == 0, submitted.stderr
    job = json.loads(submitted.stdout)
    assert (job["state"], job["stdout"]) == ("succeeded", "from-cli\n")
    status = json.loads(hatchway("status", *url, job["id"]).stdout)
    assert status["id"] == job["id"]
    assert hatchway("logs", *url, job["id"]).stdout == "from-cli\n"
    assert job["id"] in hatchway("list", *url, "--label", "k:v").stdout
    sleeper = json.loads(hatchway("submit", *url, BUSYBOX, "--", "sleep", "60").stdout)
    server.wait_state(sleeper["id"], "running")
    killed = json.loads(hatchway("kill", *url, "--grace-s", "0", sleeper["id"]).stdout)
    assert killed["state"] == "killed"
    missing = hatchway("status", *url, "no-such-job")
    assert missing.returncode == 1 and "404" in missing.stderr and "Traceback" not in missing.stderr
