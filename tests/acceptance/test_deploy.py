"""The operator packaging, exercised as an operator would use it: the systemd unit installed by its script and
checked by systemd itself, and hatchway's own image built without a registry and running jobs on the host's
engine."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.acceptance.conftest import free_port
from tests.conftest import BUSYBOX

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]


def test_the_systemd_units_install_and_pass_systemd_s_own_check(tmp_path: Path) -> None:
    root = tmp_path / "root"
    subprocess.run([REPO / "deploy/install-systemd.sh", "--root", root, "--no-start"], check=True, timeout=600)
    hatchway = root / "opt/hatchway/.venv/bin/hatchway"
    assert "--config" in subprocess.run([hatchway, "serve", "--help"], capture_output=True, text=True).stdout
    assert (root / "etc/hatchway/config.yaml").read_text() == (REPO / "deploy/config.example.yaml").read_text()
    # systemd-analyze checks a unit against the real system: point it at the installed files. The fleet's template
    # is checked as one of its instances (only an instance's command is looked for).
    units = {"hatchway.service": "hatchway.service", "hatchway@.service": "hatchway@w1.service"}
    for installed, checked_as in units.items():
        unit = tmp_path / checked_as
        text = (root / "etc/systemd/system" / installed).read_text()
        unit.write_text(text.replace("/opt/hatchway", str(root / "opt/hatchway")))
        checked = subprocess.run(["systemd-analyze", "verify", unit], capture_output=True, text=True, timeout=60)
        assert (checked.returncode, checked.stderr) == (0, ""), f"{installed}: {checked.stderr}"


@pytest.fixture
def shared_data_dir() -> Iterator[Path]:
    """A data directory that is a shared mount, so that job disks hatchway mounts inside its container are seen
    by the host's engine (as the README says to set up)."""
    path = Path(f"/var/lib/hatchway-test-{uuid.uuid4().hex[:8]}")
    path.mkdir()
    subprocess.run(["mount", "--bind", path, path], check=True)
    subprocess.run(["mount", "--make-rshared", path], check=True)
    yield path
    subprocess.run(["umount", "--recursive", path], check=True)
    subprocess.run(["rm", "-rf", path], check=True)


def test_hatchway_s_own_image_builds_without_a_registry_and_runs_jobs(shared_data_dir: Path) -> None:
    built = subprocess.run(
        [REPO / "scripts/container-image.sh"], capture_output=True, text=True, timeout=1800, check=True
    )
    image = built.stdout.strip().splitlines()[-1]
    assert image.startswith("hatchway:")
    port = free_port()
    name = f"hatchway-test-{uuid.uuid4().hex[:8]}"
    data = str(shared_data_dir)
    command = [
        "docker", "run", "-d", "--name", name, "--network", "host", "--cgroupns", "host",
        # What the README's command gives it, short of --privileged (which this test machine cannot grant).
        "--cap-add", "SYS_ADMIN", "--security-opt", "apparmor=unconfined",
        "--device-cgroup-rule", "b 7:* rmw", "--device-cgroup-rule", "c 10:237 rmw", "-v", "/dev:/dev",
        "-v", "/sys/fs/cgroup:/sys/fs/cgroup", "-v", "/var/run/docker.sock:/var/run/docker.sock",
        "-v", f"{data}:{data}:rshared", "-e", f"HATCHWAY_DATA_DIR={data}",
        "-e", "HATCHWAY_HOST=127.0.0.1", "-e", f"HATCHWAY_PORT={port}", "-e", f"HATCHWAY_WORKER_ID={name}",
        image,
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, subprocess.run(["docker", "logs", name], capture_output=True).stderr
            time.sleep(0.2)
        body = {"image": BUSYBOX, "command": "echo hi; df -m . | tail -1", "limits": {"disk_mb": 64}}
        job = httpx.post(f"{url}/jobs", params={"wait": "true"}, json=body, timeout=120).json()
        assert (job["state"], job["stdout"].splitlines()[0]) == ("succeeded", "hi"), job
        # The job's disk, mounted by the containerised worker: a loop device with the 64 MB asked for. (Which of
        # its two mount points, /workspace or /tmp, df names depends on the order the engine mounted them in.)
        device, _, _, available, _, mounted_on = job["stdout"].splitlines()[-1].split()
        assert device.startswith("/dev/loop") and available == "64" and mounted_on in ("/workspace", "/tmp"), job
        stopped = subprocess.run(["docker", "stop", "-t", "60", name], capture_output=True, timeout=90)
        assert stopped.returncode == 0
        exit_code = subprocess.run(
            ["docker", "inspect", "-f", "{{.State.ExitCode}}", name], capture_output=True, text=True, check=True
        ).stdout.strip()
        assert exit_code == "0", "SIGTERM drains and exits cleanly"
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
        # The worker's job containers are gone with it; anything left would belong to this test's worker id.
        left = subprocess.run(
            ["docker", "ps", "-aq", "--filter", f"label=hatchway.worker_id={name}"], capture_output=True, text=True
        ).stdout.split()
        if left:
            subprocess.run(["docker", "rm", "-f", *left], capture_output=True)
    assert not left, "a job container outlived the containerised worker"
