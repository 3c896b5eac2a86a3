"""The `hatchway` command: one local job, and the client commands against a running worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import docker
import pytest

from tests.acceptance.conftest import Server, ServerFactory, free_port
from tests.conftest import BUSYBOX, mounts_under

pytestmark = pytest.mark.docker


def hatchway(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hatchway.cli.main", *args],
        input=stdin, capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip


def local_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HATCHWAY_")}
    env["HATCHWAY_DATA_DIR"] = str(tmp_path)
    env["HATCHWAY_URL"] = "http://127.0.0.1:9"  # nothing listens there: `run` runs the job in-process
    return env


@pytest.fixture(params=["in-process", "through a worker"])
def run_env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """`hatchway run` with no worker running (the job runs in-process), and with one (the job goes to it)."""
    env = local_env(tmp_path)
    if request.param == "through a worker":
        server: Server = request.getfixturevalue("server")
        env["HATCHWAY_URL"] = server.url
    return env


def test_run_streams_output_and_exits_with_the_job_code(run_env: dict[str, str]) -> None:
    env = run_env
    result = hatchway("run", BUSYBOX, "--memory-mb", "64", "-e", "WHO=you", "-i", "--",
                      "sh", "-c", 'echo "hi $WHO"; cat; echo oops >&2; exit 4', stdin="piped\n", env=env)  # fmt: skip
    assert (result.returncode, result.stdout) == (4, "hi you\npiped\n")
    assert result.stderr == "oops\n"
    timed_out = hatchway("run", BUSYBOX, "--timeout-s", "1", "--", "sleep", "30", env=env)
    assert timed_out.returncode == 124
    assert timed_out.stderr.startswith("hatchway: job ") and timed_out.stderr.endswith(" timed out after 1 s\n")


def test_run_endings_that_are_not_the_jobs_own_exit(run_env: dict[str, str]) -> None:
    env = run_env
    as_json = hatchway("run", "--json", BUSYBOX, "--", "sh", "-c", "echo hidden; exit 3", env=env)
    assert as_json.returncode == 3, as_json.stderr
    job = json.loads(as_json.stdout)
    assert (job["state"], job["exit_code"], job["stdout"]) == ("failed", 3, "hidden\n")
    flooded = hatchway("run", "--output-bytes", "1000", BUSYBOX, "--", "sh", "-c", "yes | head -c 100000", env=env)
    assert flooded.returncode == 153 and "more than 1000 bytes" in flooded.stderr
    not_allowed = hatchway("run", "--network", "host", BUSYBOX, "--", "true", env=env)
    assert not_allowed.returncode == 125 and not_allowed.stderr.startswith("hatchway: the job cannot run: ")
    no_command = hatchway("run", BUSYBOX, env=env)
    assert no_command.returncode == 2 and "give the command" in no_command.stderr
    bad_option = hatchway("run", "--memory-mb", "lots", BUSYBOX, "--", "true", env=env)
    assert bad_option.returncode == 2 and "invalid int value" in bad_option.stderr


def test_submit_wait_runs_like_docker_run(server: Server) -> None:
    url = ["--url", server.url]
    both = hatchway("submit", *url, "--wait", BUSYBOX, "--", "sh", "-c", "echo out; echo err >&2; exit 2")
    assert (both.returncode, both.stdout, both.stderr) == (2, "out\n", "err\n")
    timed_out = hatchway("submit", *url, "--wait", "--timeout-s", "1", BUSYBOX, "--", "sleep", "30")
    assert (timed_out.returncode, timed_out.stdout) == (124, "")
    assert timed_out.stderr.startswith("hatchway: job ") and timed_out.stderr.endswith(" timed out after 1 s\n")
    as_json = hatchway("submit", *url, "--wait", "--json", BUSYBOX, "--", "sh", "-c", "echo out; exit 5")
    assert as_json.returncode == 5 and as_json.stderr == ""
    assert {"state": "failed", "exit_code": 5, "stdout": "out\n"}.items() <= json.loads(as_json.stdout).items()
    refused = hatchway("submit", *url, "--wait", "busybox-from-elsewhere", "--", "true")
    assert refused.returncode == 125 and "403" in refused.stderr and "Traceback" not in refused.stderr


def test_client_commands_against_a_worker(server: Server) -> None:
    url = ["--url", server.url]
    submitted = hatchway("submit", *url, "--label", "k=v", BUSYBOX, "--", "echo", "from-cli")
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    job = server.wait_state(job_id, "succeeded")
    assert job["stdout"] == "from-cli\n"
    assert json.loads(hatchway("status", *url, "--json", job_id).stdout)["id"] == job_id
    status = hatchway("status", *url, job_id).stdout.splitlines()
    assert f"id:           {job_id}" in status and "state:        succeeded" in status
    assert "command:      echo from-cli" in status
    assert hatchway("logs", *url, job_id).stdout == "from-cli\n"
    listed = hatchway("list", *url, "--label", "k:v").stdout.splitlines()
    assert listed[0].split() == ["ID", "STATE", "EXIT", "IMAGE", "COMMAND", "CREATED", "DURATION"]
    assert listed[1].startswith(f"{job_id}  succeeded  0     {BUSYBOX}  echo from-cli  ")
    assert len(listed) == 2 and all(line == line.rstrip() and "\x1b" not in line for line in listed)
    page = json.loads(hatchway("list", *url, "--json", "--label", "k:v").stdout)
    assert [item["id"] for item in page["jobs"]] == [job_id]
    sleeper = hatchway("submit", *url, BUSYBOX, "--", "sleep", "60").stdout.strip()
    server.wait_state(sleeper, "running")
    killed = json.loads(hatchway("kill", *url, "--json", "--grace-s", "0", sleeper).stdout)
    assert killed["state"] == "killed"
    missing = hatchway("status", *url, "no-such-job")
    assert missing.returncode == 1 and "404" in missing.stderr and "Traceback" not in missing.stderr
    hooked = hatchway("submit", *url, "--json", "--callback-url", "http://127.0.0.1:9/hook", BUSYBOX, "--", "true")
    assert json.loads(hooked.stdout)["callback"]["url"] == "http://127.0.0.1:9/hook"
    refused = hatchway("submit", *url, "--callback-url", "http://user:pw@127.0.0.1:9/hook", BUSYBOX, "--", "true")
    assert refused.returncode == 1 and "callback_url" in refused.stderr and "Traceback" not in refused.stderr


def test_logs_keep_the_jobs_streams_apart(server: Server) -> None:
    url = ["--url", server.url]
    job = server.post_job(wait=True, image=BUSYBOX, command="echo out; echo err >&2").json()
    both = hatchway("logs", *url, "--follow", job["id"])
    assert (both.returncode, both.stdout, both.stderr) == (0, "out\n", "err\n")
    assert hatchway("logs", *url, "--stream", "stderr", job["id"]).stderr == "err\n"


def test_sources_and_images_tables(start_server: ServerFactory) -> None:
    sources = json.dumps([{"name": "queue", "kind": "tasks", "url": "http://127.0.0.1:9", "poll_interval_s": 60}])
    server = start_server(sources=sources)
    url = ["--url", server.url]
    table = hatchway("sources", *url)
    assert table.returncode == 0, table.stderr
    header, api, row = table.stdout.splitlines()
    assert header.split()[:4] == ["NAME", "KIND", "URL", "LAST"]
    assert api.split() == ["api", "http", server.url, "-", "0", "-", "-", "-", "-", "-"]
    assert row.startswith("queue  tasks  http://127.0.0.1:9")
    assert header.index("KIND") == row.index("tasks") == api.index("http")
    assert [source["name"] for source in json.loads(hatchway("sources", *url, "--json").stdout)] == ["api", "queue"]
    images = hatchway("images", *url)
    assert images.returncode == 0 and images.stdout.split()[:5] == ["NAME", "SOURCE", "SIZE", "LAST", "USED"]
    assert json.loads(hatchway("images", "list", *url, "--json").stdout) == []


def test_an_unreachable_worker_has_an_exit_code_of_its_own() -> None:
    gone = hatchway("list", "--url", f"http://127.0.0.1:{free_port()}")
    assert gone.returncode == 69 and gone.stderr.startswith("hatchway: cannot reach the worker at ")


def test_run_cleans_up_after_a_run_killed_with_sigkill(tmp_path: Path) -> None:
    """A `hatchway run` killed with -9 cannot remove its container or unmount the job's disk; the next run does."""
    env = local_env(tmp_path)
    killed = subprocess.Popen(
        [sys.executable, "-m", "hatchway.cli.main", "run", "--local", BUSYBOX, "--", "sleep", "120"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    client = docker.from_env()
    try:
        deadline = time.monotonic() + 60
        while not (left := _run_containers(client, killed.pid)):
            assert time.monotonic() < deadline and killed.poll() is None, "the run's container never started"
            time.sleep(0.2)
        killed.kill()
        killed.wait()
        dirs = list(Path(tempfile.gettempdir()).glob(f"hatchway-run-{killed.pid}-*"))
        assert len(dirs) == 1 and mounts_under(dirs[0])  # what the run left: its container, its disk mounted
        assert _run_containers(client, killed.pid) == left
        after = hatchway("run", "--local", BUSYBOX, "--", "echo", "next", env=env)
        assert (after.returncode, after.stdout) == (0, "next\n"), after.stderr
        assert _run_containers(client, killed.pid) == []
        assert not dirs[0].exists() and not mounts_under(dirs[0])
    finally:
        for container_id in _run_containers(client, killed.pid):
            client.api.remove_container(container_id, force=True)
        client.close()


def _run_containers(client: docker.DockerClient, pid: int) -> list[str]:
    return [
        summary["Id"]
        for summary in client.api.containers(all=True, filters={"label": "hatchway.worker_id"})
        if summary["Labels"]["hatchway.worker_id"].endswith(f"-run-{pid}")
    ]
