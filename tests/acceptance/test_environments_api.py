"""Artifacts, images and build logs over HTTP."""

from __future__ import annotations

import uuid
from pathlib import Path

import docker
import pytest

from tests.acceptance.conftest import Server
from tests.conftest import BUSYBOX

pytestmark = pytest.mark.docker


def test_artifacts_are_listed_and_downloaded(server: Server) -> None:
    job = server.post_job(
        wait=True, image=BUSYBOX, command="mkdir -p out/d && echo hi > out/a.txt && printf '\\377' > out/d/b.bin"
    ).json()
    assert job["state"] == "succeeded", job["stderr"]
    listed = server.client.get(f"/jobs/{job['id']}/artifacts")
    assert listed.json() == [{"path": "a.txt", "size": 3}, {"path": "d/b.bin", "size": 1}]
    assert server.client.get(f"/jobs/{job['id']}/artifacts/d/b.bin").content == b"\xff"
    for missing in ("nope.txt", "../../hatchway.db", "%2e%2e/%2e%2e/hatchway.db"):
        answer = server.client.get(f"/jobs/{job['id']}/artifacts/{missing}")
        assert answer.status_code == 404, missing
    assert server.client.get("/jobs/no-such-job/artifacts").status_code == 404


def test_an_imported_root_filesystem_runs_jobs(
    server: Server, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    rootfs = tmp_path / "rootfs.tar"
    container = docker_client.containers.create(BUSYBOX, ["true"])
    try:
        with rootfs.open("wb") as out:
            for chunk in container.export():
                out.write(chunk)
    finally:
        container.remove()
    name = f"hatchway-test/imported-{uuid.uuid4().hex[:8]}:1"
    try:
        with rootfs.open("rb") as body:
            imported = server.client.post("/images/import", params={"name": name}, content=body)
        assert imported.status_code == 201, imported.text
        assert imported.json()["source"] == "imported"
        assert name in [image["name"] for image in server.client.get("/images").json()]
        job = server.post_job(wait=True, image=name, command=["/bin/echo", "from-imported"]).json()
        assert (job["state"], job["stdout"]) == ("succeeded", "from-imported\n")
        bad = server.client.post("/images/import", params={"name": "Bad Name!"}, content=b"")
        assert bad.status_code == 422
    finally:
        docker_client.images.remove(name, force=True)


def test_build_output_is_a_log_stream(server: Server, docker_client: docker.DockerClient) -> None:
    dockerfile = f"FROM hatchway-test/busybox:latest\nRUN echo step-{uuid.uuid4().hex[:8]}\n"
    job = server.post_job(wait=True, build={"dockerfile": dockerfile}, command=["true"]).json()
    try:
        assert job["state"] == "succeeded" and job["run"]["image_cached"] is False
        build_log = server.client.get(f"/jobs/{job['id']}/logs", params={"stream": "build"}).text
        assert "step-" in build_log and build_log == job["build_output"]
    finally:
        docker_client.images.remove(job["run"]["image"], force=True)
