"""Bundles and built images, prepared for real jobs on the real engine."""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import tarfile
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import docker
import pytest

from hatchway.errors import FetchFailed, NotAllowed
from hatchway.models import JobState, Reason
from hatchway.worker.bootstrap import build_worker
from hatchway.worker.worker import Worker
from tests.conftest import BUSYBOX
from tests.integration.conftest import RunJob, make_settings

pytestmark = pytest.mark.docker

CONTEXT_LIMIT = 1024 * 1024


class BundleServer:
    """Serves files from a folder on 127.0.0.1 and counts the requests per path."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: Counter[str] = Counter()
        self.redirects: dict[str, str] = {}
        counts, redirects = self.requests, self.redirects

        class Handler(SimpleHTTPRequestHandler):
            def __init__(self, *args: object, **kwargs: object) -> None:
                super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                counts[self.path] += 1
                if self.path in redirects:
                    self.send_response(302)
                    self.send_header("Location", redirects[self.path])
                    self.end_headers()
                    return
                super().do_GET()

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def publish(self, name: str, members: dict[str, bytes]) -> tuple[str, str]:
        """Write a .tar.gz of `members`; its URL and sha256."""
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            for path, data in members.items():
                info = tarfile.TarInfo(path)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        (self.root / name).write_bytes(buffer.getvalue())
        return f"{self.url}/{name}", hashlib.sha256(buffer.getvalue()).hexdigest()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def bundles(tmp_path: Path) -> Iterator[BundleServer]:
    root = tmp_path / "served"
    root.mkdir()
    server = BundleServer(root)
    yield server
    server.close()


@pytest.fixture
def worker_settings(tmp_path: Path, worker_id: str):  # type: ignore[no-untyped-def]
    return make_settings(
        tmp_path,
        worker_id,
        allowed_images=["hatchway-test/*"],
        bundle_allowed_urls=["http://127.0.0.1:*"],
        build_context_max_bytes=CONTEXT_LIMIT,
    )


@pytest.fixture
def built_images(docker_client: docker.DockerClient) -> Iterator[list[str]]:
    """Images a test built; removed afterwards."""
    built: list[str] = []
    yield built
    for image in set(built):
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.images.remove(image, force=True)


async def test_a_bundle_is_downloaded_once_for_two_jobs(run_job: RunJob, bundles: BundleServer) -> None:
    url, sha = bundles.publish("app.tar.gz", {"app/run.sh": b"echo ran from bundle", "data.txt": b"bundled\n"})
    first = await run_job("cat data.txt; sh app/run.sh", bundle_url=url, bundle_sha256=sha)
    second = await run_job("cat data.txt", bundle_url=url, bundle_sha256=sha, files={"data.txt": "inline wins\n"})
    assert (first.state, first.stdout) == (JobState.SUCCEEDED, "bundled\nran from bundle\n")
    assert second.stdout == "inline wins\n"
    assert (first.run.bundle_cached, second.run.bundle_cached) == (False, True)
    assert bundles.requests["/app.tar.gz"] == 1
    assert first.run.prepare_s is not None


async def test_sha256_mismatch_fails_the_job_as_bad_bundle(run_job: RunJob, bundles: BundleServer) -> None:
    url, _ = bundles.publish("app.tar.gz", {"a.txt": b"a"})
    job = await run_job(["true"], bundle_url=url, bundle_sha256="0" * 64)
    assert (job.state, job.reason) == (JobState.FAILED, Reason.BAD_BUNDLE)
    assert job.message is not None and "sha256 mismatch" in job.message


async def test_a_hostile_bundle_is_refused_and_writes_nothing_outside(
    run_job: RunJob, bundles: BundleServer, worker: Worker
) -> None:
    marker = f"escaped-{uuid.uuid4().hex}"
    url, _ = bundles.publish("evil.tar.gz", {"ok.txt": b"fine", f"../../{marker}": b"pwned"})
    job = await run_job(["true"], bundle_url=url)
    assert (job.state, job.reason) == (JobState.FAILED, Reason.BAD_BUNDLE)
    assert ".." in (job.message or "")
    assert not list(worker.settings.data_dir.parent.rglob(marker)), "nothing may be written outside the workspace"


async def test_a_redirect_to_a_forbidden_host_is_not_followed(
    run_job: RunJob, bundles: BundleServer, caplog: pytest.LogCaptureFixture
) -> None:
    url, _ = bundles.publish("app.tar.gz", {"a.txt": b"a"})
    bundles.redirects["/jump"] = url.replace("127.0.0.1", "localhost")  # same server, a host policy does not allow
    with caplog.at_level(logging.WARNING, logger="hatchway.bundles.cache"):
        job = await run_job(["true"], bundle_url=f"{bundles.url}/jump")
    assert (job.state, job.reason, job.message) == (JobState.FAILED, Reason.BAD_BUNDLE, FetchFailed.MESSAGE)
    assert "localhost" in caplog.text and "does not match bundle_allowed_urls" in caplog.text, "the log says why"
    assert bundles.requests["/app.tar.gz"] == 0


async def test_file_bundles_need_an_allowing_pattern(worker: Worker, tmp_path: Path) -> None:
    from hatchway.models import JobRequest

    with pytest.raises(NotAllowed, match="bundle_url"):
        await worker.jobs.submit(JobRequest(image=BUSYBOX, command=["true"], bundle_url=f"file://{tmp_path}/x.tar"))


DOCKERFILE = "FROM hatchway-test/busybox:latest\nCOPY greeting.txt /greeting.txt\nRUN echo built > /built.txt\n"


async def test_an_image_built_from_a_dockerfile_is_reused_by_the_next_job(
    run_job: RunJob, built_images: list[str]
) -> None:
    build = {"dockerfile": DOCKERFILE, "files": {"greeting.txt": f"hello {uuid.uuid4().hex}\n"}}
    first = await run_job("cat /greeting.txt /built.txt", build=build)
    assert first.run.image is not None
    built_images.append(first.run.image)
    assert first.state == JobState.SUCCEEDED, first.build_output
    assert first.stdout.endswith("\nbuilt\n") and first.stdout.startswith("hello ")
    assert first.run.image_cached is False and "greeting.txt" in first.build_output
    second = await run_job("cat /built.txt", build=build)
    assert (second.run.image, second.run.image_cached, second.stdout) == (first.run.image, True, "built\n")
    assert second.build_output == ""


async def test_a_bundle_is_part_of_the_build_context(
    run_job: RunJob, bundles: BundleServer, built_images: list[str]
) -> None:
    url, sha = bundles.publish("ctx.tar.gz", {"tool.sh": f"echo tool {uuid.uuid4().hex[:6]}".encode()})
    dockerfile = "FROM hatchway-test/busybox:latest\nCOPY tool.sh /opt/tool.sh\n"
    job = await run_job("sh /opt/tool.sh", build={"dockerfile": dockerfile}, bundle_url=url, bundle_sha256=sha)
    built_images.append(job.run.image or "")
    assert job.state == JobState.SUCCEEDED, job.build_output
    assert job.stdout.startswith("echo tool") is False and job.stdout.startswith("tool ")


async def test_a_bundle_past_the_build_context_limit_is_refused_before_it_is_read(
    run_job: RunJob, bundles: BundleServer
) -> None:
    url, sha = bundles.publish("big.tar.gz", {"blob": b"\0" * (2 * CONTEXT_LIMIT)})
    dockerfile = "FROM hatchway-test/busybox:latest\nCOPY blob /blob\n"
    job = await run_job("true", build={"dockerfile": dockerfile}, bundle_url=url, bundle_sha256=sha)
    assert (job.state, job.reason) == (JobState.FAILED, Reason.BAD_BUNDLE), job.message
    assert f"build context limit (build_context_max_bytes) of {CONTEXT_LIMIT} bytes" in (job.message or "")
    plain = await run_job("wc -c < blob", bundle_url=url, bundle_sha256=sha)
    assert plain.stdout.strip() == str(2 * CONTEXT_LIMIT), "a job that builds nothing is not held to it"


async def test_a_failing_build_fails_the_job_with_its_log(run_job: RunJob) -> None:
    dockerfile = "FROM hatchway-test/busybox:latest\nRUN echo about-to-fail && exit 3\n"
    job = await run_job(["true"], build={"dockerfile": dockerfile, "files": {"n": uuid.uuid4().hex}})
    assert (job.state, job.reason) == (JobState.FAILED, Reason.BUILD_FAILED)
    assert "about-to-fail" in job.build_output


async def test_a_build_from_a_disallowed_base_is_refused_at_submission(tmp_path: Path, worker_id: str) -> None:
    from hatchway.models import JobRequest

    worker = build_worker(make_settings(tmp_path, worker_id, allowed_images=["hatchway-test/*"]))
    with pytest.raises(NotAllowed, match="evil/base"):
        worker.parts.policy.admit(JobRequest(command=["true"], build={"dockerfile": "FROM evil/base\n"}))  # type: ignore[arg-type]
