"""A client names URLs the worker fetches (`bundle_url`, `problem_url`) or posts to (`callback_url`). Pointed at the
worker's own loopback, the cloud's metadata address, a private network, an IPv6 spelling of loopback, or a name that
resolves to loopback, each would reach what the client cannot (a dockerd TCP port, an admin page); and if the answer
told "cannot connect" from "HTTP 403" from "not an archive", the worker would be a port scanner of its networks.
By default none of them is reached, and every one is refused in the same words whatever listens there. A redirect
from an address the operator allows to one it does not is refused at the redirect, and a `file://` URL cannot
climb out of the folder `bundle_allowed_urls` allows, by `%2e%2e` or by a symbolic link."""

from __future__ import annotations

import io
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.conftest import Server, ServerFactory, free_port
from tests.conftest import BUSYBOX
from tests.fakes.site import Answer, Site, site

pytestmark = pytest.mark.docker

TARGETS = {
    "an open port answering 403": "http://127.0.0.1:{open}/forbidden",
    "an open port serving no archive": "http://127.0.0.1:{open}/text",
    "an open port serving a good archive": "http://127.0.0.1:{open}/problem.zip",
    "a closed port": "http://127.0.0.1:{closed}/problem.zip",
    "the metadata service": "http://169.254.169.254/latest/meta-data/",
    "a private network": "http://10.0.0.1/problem.zip",
    "loopback as IPv4-mapped IPv6": "http://[::ffff:127.0.0.1]:{open}/problem.zip",
    "a name resolving to loopback": "http://localhost:{open}/problem.zip",
}


def zipped(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return buffer.getvalue()


PROBLEM = zipped({"in/1.in": "1 2\n", "out/1.out": "3\n", "hello.txt": "from the archive\n"})


@pytest.fixture
def inside() -> Iterator[Site]:
    """Something on the worker's loopback: it must never hear from the worker."""
    routes = {
        "/forbidden": Answer(403, b"go away"),
        "/text": Answer(200, b"just some text, not an archive\n"),
        "/problem.zip": Answer(200, PROBLEM),
    }
    with site(routes) as served:
        yield served


@pytest.fixture
def allowed(inside: Site) -> Iterator[Site]:
    """An origin the operator allows by name (it happens to be on loopback too), redirecting to `inside`."""
    routes = {
        "/problem.zip": Answer(200, PROBLEM),
        "/jump": Answer(302, location=f"{inside.url}/problem.zip"),
    }
    with site(routes) as served:
        yield served


def outcome(server: Server, kind: str, url: str) -> tuple[Any, ...]:
    """What the client is told when it names `url` as a problem, bundle or callback URL."""
    if kind == "problem_url":
        answer = server.client.post("/grade", json={"language": "python", "code": "print(3)", "problem_url": url})
        return answer.status_code, answer.json().get("error", {}).get("message")
    body = {"image": BUSYBOX, "command": "true", kind: url}
    created = server.post_job(**body)
    assert created.status_code == 201, created.text
    job = server.wait_state(created.json()["id"], "succeeded", "failed", timeout_s=120)
    if kind == "bundle_url":
        return job["state"], job["reason"], job["message"]
    callback = settled_callback(server, job["id"])
    return callback["state"], callback["last_status"], callback["last_error"]


def settled_callback(server: Server, job_id: str, timeout_s: float = 60) -> dict[str, Any]:
    """The job's callback once it is no longer pending (polled over HTTP, as a client would)."""
    deadline = time.monotonic() + timeout_s
    while True:
        callback: dict[str, Any] = server.client.get(f"/jobs/{job_id}").json()["callback"]
        if callback["state"] != "pending":
            return callback
        assert time.monotonic() < deadline, f"the callback is still pending: {callback}"
        time.sleep(0.1)


@pytest.mark.parametrize("kind", ["problem_url", "bundle_url", "callback_url"])
def test_addresses_that_are_not_public_are_refused_in_the_same_words_and_never_reached(
    start_server: ServerFactory, inside: Site, kind: str
) -> None:
    server = start_server(
        allowed_private_networks="",  # the default: none
        allowed_images="hatchway-test/*,hatchway-profile/*",
        callback_retry_s=0,
        callback_timeout_s=2,
        bundle_timeout_s=5,
    )
    ports = {"open": inside.url.rpartition(":")[2], "closed": str(free_port())}
    told = {name: outcome(server, kind, url.format(**ports)) for name, url in TARGETS.items()}
    assert len(set(told.values())) == 1, f"the answers tell the targets apart: {told}"
    assert inside.requests() == [], "nothing on the worker's loopback heard from it"
    said = next(iter(told.values()))
    if kind == "problem_url":
        assert said[0] == 422 and "could not be fetched" in said[1], said
    elif kind == "bundle_url":
        assert said[:2] == ("failed", "bad_bundle") and "could not be fetched" in said[2], said
    else:
        assert said[:2] == ("failed", None) and "could not be reached" in said[2], said
    assert server.stop() == 0


def test_a_redirect_from_an_allowed_origin_to_one_that_is_not_is_refused_at_the_redirect(
    start_server: ServerFactory, inside: Site, allowed: Site
) -> None:
    server = start_server(
        allowed_private_networks="",
        allowed_private_origins=allowed.url,
        allowed_images="hatchway-test/*,hatchway-profile/*",
    )
    job = server.post_job(wait=True, image=BUSYBOX, command="cat hello.txt", bundle_url=f"{allowed.url}/problem.zip")
    assert (job.json()["state"], job.json()["stdout"]) == ("succeeded", "from the archive\n"), "the origin is allowed"
    answer = server.client.post(
        "/grade", json={"language": "python", "code": "print(3)", "problem_url": f"{allowed.url}/jump"}
    )
    assert answer.status_code == 422 and "could not be fetched" in answer.json()["error"]["message"], answer.text
    job = server.post_job(wait=True, image=BUSYBOX, command="true", bundle_url=f"{allowed.url}/jump")
    assert (job.json()["state"], job.json()["reason"]) == ("failed", "bad_bundle")
    assert [path for _, path in allowed.requests()].count("/jump") == 2
    assert inside.requests() == [], "the redirect's target never heard from the worker"
    assert server.stop() == 0


def test_a_file_url_cannot_climb_out_of_the_allowed_folder(start_server: ServerFactory, tmp_path: Path) -> None:
    bundles, secrets = tmp_path / "bundles", tmp_path / "secrets"
    bundles.mkdir()
    secrets.mkdir()
    (bundles / "ok.zip").write_bytes(zipped({"hello.txt": "allowed\n"}))
    (secrets / "hidden.zip").write_bytes(zipped({"hello.txt": "the secret\n"}))
    (bundles / "link.zip").symlink_to(secrets / "hidden.zip")
    up = "/%2e%2e" * len(bundles.parts)  # from the allowed folder to /
    server = start_server(
        allowed_private_networks="",
        bundle_allowed_urls=f"https://*,http://*,file://{bundles}/*",
        allowed_images="hatchway-test/*,hatchway-profile/*",
    )
    job = server.post_job(wait=True, image=BUSYBOX, command="cat hello.txt", bundle_url=f"file://{bundles}/ok.zip")
    assert (job.json()["state"], job.json()["stdout"]) == ("succeeded", "allowed\n"), "the folder is allowed"
    for url in (f"file://{bundles}/%2e%2e/secrets/hidden.zip", f"file://{bundles}{up}/etc/passwd"):
        refused = server.post_job(image=BUSYBOX, command="cat hello.txt", bundle_url=url)
        assert refused.status_code == 403 and "bundle_url is not allowed" in refused.text, (url, refused.text)
        graded = server.client.post("/grade", json={"language": "python", "code": "print(3)", "problem_url": url})
        assert graded.status_code == 403 and "problem_url is not allowed" in graded.text, (url, graded.text)
    linked = server.post_job(wait=True, image=BUSYBOX, command="cat hello.txt", bundle_url=f"file://{bundles}/link.zip")
    assert (linked.json()["state"], linked.json()["reason"]) == ("failed", "bad_bundle"), linked.json()
    assert "the secret" not in linked.text
    assert server.stop() == 0
