"""How docker, requests and urllib3 errors become hatchway's: the engine not answering told apart from it refusing,
and both put into words a user understands."""

from __future__ import annotations

import gc
import http.client
import socket
from collections.abc import Callable
from pathlib import Path

import docker.errors
import pytest
import requests
import requests.exceptions
from urllib3.exceptions import ProtocolError

from hatchway.engines.docker_host import DockerHost, explain, translate, unavailable
from hatchway.errors import EngineError, EngineUnavailable, ImagePullFailed

URL = "unix:///run/hatchway-test/docker.sock"
REGISTRY_REFUSED = 'Get "http://127.0.0.1:9/v2/": dial tcp 127.0.0.1:9: connect: connection refused'
"""What the daemon answers for a pull from a registry that refuses connections: the daemon itself is up."""
CONTAINERD_DOWN = (
    'connection error: desc = "transport: Error while dialing dial unix /run/containerd/containerd.sock: '
    'connect: connection refused"'
)


def aborted(cause: BaseException) -> requests.exceptions.ConnectionError:
    """What requests raises when the connection to the daemon's socket fails."""
    return requests.exceptions.ConnectionError(ProtocolError("Connection aborted.", cause))


def api_error(status: int, explanation: str) -> docker.errors.APIError:
    response = requests.Response()
    response.status_code = status
    return docker.errors.APIError(f"{status} Server Error", response=response, explanation=explanation)


def version_lookup_failed() -> docker.errors.DockerException:
    """What docker's client raises when it is made while the daemon is down."""
    try:
        try:
            raise aborted(FileNotFoundError(2, "No such file or directory"))
        except requests.exceptions.ConnectionError as exc:
            raise docker.errors.DockerException(f"Error while fetching server API version: {exc}") from None
    except docker.errors.DockerException as raised:
        return raised


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda: aborted(FileNotFoundError(2, "No such file or directory")), f"no socket at {URL}"),
        (lambda: aborted(ConnectionRefusedError(111, "Connection refused")), f"connection refused at {URL}"),
        (
            lambda: aborted(http.client.RemoteDisconnected("Remote end closed connection without response")),
            f"the connection to {URL} was cut",
        ),
        (
            lambda: requests.exceptions.ChunkedEncodingError(ProtocolError("Response ended prematurely")),
            f"the connection to {URL} was cut",
        ),
        (version_lookup_failed, f"no socket at {URL}"),
        (lambda: api_error(503, "Service Unavailable"), "Service Unavailable"),
        (lambda: api_error(500, CONTAINERD_DOWN), CONTAINERD_DOWN),
    ],
    ids=["socket-missing", "refused", "disconnected", "cut-mid-response", "client-creation", "503", "containerd-down"],
)
def test_an_engine_that_does_not_answer_is_unavailable_in_a_sentence(
    make: Callable[[], BaseException], words: str
) -> None:
    exc = make()
    assert unavailable(exc)
    translated = translate(exc, URL)
    assert isinstance(translated, EngineUnavailable)
    assert str(translated) == f"the Docker engine stopped answering ({words})"
    for raw in ("Connection aborted", "FileNotFoundError", "ProtocolError", "('", "Error('"):
        assert raw not in str(translated)


@pytest.mark.parametrize(
    ("exc", "words"),
    [
        (api_error(500, "OCI runtime create failed: no such file or directory"), "OCI runtime create failed"),
        (api_error(409, "conflict: unable to remove repository reference"), "conflict"),
        (requests.exceptions.ReadTimeout("Read timed out. (read timeout=60)"), f"no answer in time from {URL}"),
        (api_error(500, REGISTRY_REFUSED), "dial tcp 127.0.0.1:9"),
    ],
    ids=["runtime-failure", "conflict", "slow-answer", "registry-refused"],
)
def test_an_engine_that_answers_with_a_failure_is_an_engine_error(exc: BaseException, words: str) -> None:
    assert not unavailable(exc)
    translated = translate(exc, URL)
    assert type(translated) is EngineError
    assert str(translated).startswith("the Docker engine failed: ") and words in str(translated)


def test_errors_of_our_own_are_never_taken_for_an_outage() -> None:
    assert not unavailable(FileNotFoundError(2, "No such file or directory", "/tmp/rootfs.tar"))
    assert explain(api_error(404, "No such container: 3f2a")) == "No such container: 3f2a"


async def test_calls_translate_at_the_boundary(tmp_path: Path) -> None:
    host = DockerHost(docker_url=f"unix://{tmp_path}/docker.sock", max_concurrent_jobs=1)
    try:

        def refused() -> None:
            raise aborted(ConnectionRefusedError(111, "Connection refused"))

        def not_found() -> None:
            raise docker.errors.NotFound("404 Client Error", explanation="No such container: 3f2a")

        def pull_cut_off() -> None:
            try:
                raise requests.exceptions.ChunkedEncodingError(ProtocolError("Response ended prematurely"))
            except requests.exceptions.ChunkedEncodingError as exc:
                raise ImagePullFailed(f"pulling image 'x' failed: {exc}") from exc

        with pytest.raises(EngineUnavailable, match=r"^the Docker engine stopped answering \(connection refused at"):
            await host.call(refused)
        with pytest.raises(EngineError, match=r"^the container or image is gone \(No such container: 3f2a\)$"):
            await host.call(not_found)
        with pytest.raises(EngineUnavailable, match="was cut"):
            await host.call(pull_cut_off)
        with pytest.raises(EngineUnavailable, match=r"^the Docker engine does not answer \(no socket at unix:///"):
            host.api()
        assert await host.ping() is False
    finally:
        host.close()
    gc.collect()  # a socket left open by a failed connect would warn now, failing the test


async def test_calls_to_an_engine_that_is_gone_leave_no_socket_open(tmp_path: Path) -> None:
    listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listening.bind(str(tmp_path / "docker.sock"))
    listening.close()  # the socket file stays, nobody listens: connection refused
    host = DockerHost(docker_url=f"unix://{tmp_path}/docker.sock", max_concurrent_jobs=1)
    try:
        for _ in range(3):
            assert await host.ping() is False
    finally:
        host.close()
    gc.collect()
