"""One Docker daemon as hatchway uses it: a lazily made API client, the thread pool that blocking SDK
calls run in, and the translation of docker and requests errors into hatchway's.

The translation tells the engine *not answering* (its socket gone, connection refused or cut, a 5xx that says the
daemon or its containerd is down: `EngineUnavailable`, which jobs outlast) from the engine *refusing* a request
(`EngineError`), and puts either into words a user understands rather than a library's exception tuple.

Both Docker engines (runc and gVisor's runsc) and the image manager share one host.
"""

from __future__ import annotations

import asyncio
import functools
import http.client
import io
import os
import shutil
import socket
import tarfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors
import requests.exceptions
import urllib3.exceptions
from docker.transport.unixconn import UnixHTTPConnection

from hatchway.errors import EngineError, EngineUnavailable

_T = TypeVar("_T")
# A streamed response cut short raises urllib3's error, not requests'.
FOREIGN_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException, urllib3.exceptions.HTTPError)
DEFAULT_URL = "unix:///var/run/docker.sock"
# How a daemon that is up says that what it needs is not (its containerd, say), or that it is going away.
# How the daemon words a failure to reach a registry (`Get "https://host/v2/": dial tcp host: connect: connection
# refused`): the same words as an engine part that is down, but the daemon answered, so it is the pull that failed.
_REMOTE_HINTS = ("dial tcp ", '/v2/"')
_DOWN_HINTS = (
    "connection refused",
    "error while dialing",
    "transport is closing",
    "is shutting down",
    "cannot connect to the docker daemon",
    "daemon is not running",
)
PROBE_IMAGE = "hatchway-probe:1"
PROBE_COMMAND = ["/probe", "--version"]
# tini, statically linked, ships with every Docker engine as docker-init: a probe image needs no registry.
_PROBE_BINARIES = ("docker-init", "tini-static", "tini")


class DockerHost:
    """The Docker daemon: client, thread pool, and error translation."""

    def __init__(self, *, docker_url: str | None, max_concurrent_jobs: int) -> None:
        self._docker_url = docker_url
        self.url = docker_url or os.environ.get("DOCKER_HOST") or DEFAULT_URL
        """Where the daemon is, as messages name it."""
        # Each running job holds up to four threads and connections: output pump, stdin, stats, wait.
        self._connections = 4 * max_concurrent_jobs + 8
        self.pool = ThreadPoolExecutor(self._connections + 8, thread_name_prefix="docker")
        self._client: docker.APIClient | None = None
        self._lock = threading.Lock()

    def api(self) -> docker.APIClient:
        """The API client, made on first use (the daemon may start after the worker)."""
        with self._lock:
            if self._client is None:
                try:
                    if self._docker_url:
                        self._client = docker.APIClient(
                            base_url=self._docker_url, version="auto", max_pool_size=self._connections
                        )
                    else:
                        self._client = docker.from_env(max_pool_size=self._connections).api
                except FOREIGN_ERRORS as exc:
                    raise EngineUnavailable(f"the Docker engine does not answer ({explain(exc, self.url)})") from exc
            return self._client

    async def call(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run a blocking SDK call in the pool; docker and requests errors become EngineError, and
        EngineUnavailable where they mean the engine is not answering (even under hatchway's own error, as
        when an image pull is cut off)."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.pool, functools.partial(fn, *args))
        except docker.errors.NotFound as exc:
            raise EngineError(f"the container or image is gone ({explain(exc)})") from exc
        except FOREIGN_ERRORS as exc:
            raise translate(exc, self.url) from exc
        except EngineError as exc:
            cause = exc.__cause__
            if isinstance(exc, EngineUnavailable) or cause is None or not unavailable(cause):
                raise
            raise translate(cause, self.url) from cause

    async def ping(self) -> bool:
        try:
            return bool(await self.call(lambda: self.api().ping()))
        except EngineError:
            return False

    def probe_image(self) -> str:
        """A tiny image to try runtimes with, imported from the engine's own static tini if missing."""
        api = self.api()
        try:
            api.inspect_image(PROBE_IMAGE)  # type: ignore[no-untyped-call]
            return PROBE_IMAGE
        except docker.errors.ImageNotFound:
            pass
        binary = _find_probe_binary()
        if binary is None:
            raise EngineError("no static tini (docker-init) on this host to build the probe image from")
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w") as tar:
            tar.add(binary, arcname="probe")
        repository, _, tag = PROBE_IMAGE.partition(":")
        api.import_image_from_data(archive.getvalue(), repository=repository, tag=tag)
        return PROBE_IMAGE

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        if self._client is not None:
            self._client.close()


def _connect_or_close(self: UnixHTTPConnection) -> None:
    """docker's `UnixHTTPConnection.connect`, but closing its socket when the connect fails: docker's leaves it to
    the garbage collector, so every call to an engine that is down would leak one until then (the fix proposed
    upstream in docker/docker-py#3356)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(self.timeout)
        sock.connect(self.unix_socket)
    except BaseException:
        sock.close()
        raise
    self.sock = sock


UnixHTTPConnection.connect = _connect_or_close  # type: ignore[method-assign]


def _find_probe_binary() -> Path | None:
    for name in _PROBE_BINARIES:
        for directory in (*os.get_exec_path(), "/usr/bin", "/usr/libexec/docker", "/usr/local/bin"):
            candidate = Path(directory) / name
            if candidate.is_file():
                return candidate.resolve()
        found = shutil.which(name)
        if found:
            return Path(found).resolve()
    return None


def translate(exc: BaseException, url: str = DEFAULT_URL) -> EngineError:
    """A docker, requests or urllib3 error as hatchway's: EngineUnavailable if it means the engine at `url` is not
    answering, else EngineError; either with a message that is a sentence, not a library's exception tuple."""
    if unavailable(exc):
        return EngineUnavailable(f"the Docker engine stopped answering ({explain(exc, url)})")
    return EngineError(f"the Docker engine failed: {explain(exc, url)}")


def unavailable(exc: BaseException) -> bool:
    """Whether a docker, requests or urllib3 error means the engine is not answering (down, restarting, its
    socket gone), as opposed to it answering that something cannot be done. A request that merely took too long
    does not count: a daemon that answers pings but hangs would otherwise hold jobs back for ever."""
    if not isinstance(exc, FOREIGN_ERRORS):
        return False
    if isinstance(exc, docker.errors.APIError):
        status = exc.status_code or 0
        text = _explanation(exc).lower()
        if any(hint in text for hint in _REMOTE_HINTS):
            return False  # the daemon answered: what it could not reach was a registry, over the network
        return status in (502, 503, 504) or (status >= 500 and any(hint in text for hint in _DOWN_HINTS))
    if isinstance(exc, requests.exceptions.Timeout) and not isinstance(exc, requests.exceptions.ConnectTimeout):
        return False
    return any(isinstance(cause, (ConnectionError, FileNotFoundError, *_CUT)) for cause in _causes(exc))


def explain(exc: BaseException, url: str = DEFAULT_URL) -> str:
    """The most useful words in a docker, requests or urllib3 exception: the daemon's own explanation, or what
    happened to the connection to `url` (which the libraries word as a tuple of nested exceptions)."""
    if isinstance(exc, docker.errors.APIError):
        return _explanation(exc)
    causes = _causes(exc)
    # The innermost system error says most ("no such file" is the socket); the wrappers say "aborted".
    for kinds, words in (
        ((FileNotFoundError,), f"no socket at {url}"),
        ((ConnectionRefusedError,), f"connection refused at {url}"),
        ((PermissionError,), f"no permission to use {url}"),
        ((requests.exceptions.ConnectTimeout,), f"{url} did not accept a connection in time"),
        ((ConnectionError, *_CUT), f"the connection to {url} was cut"),
        ((TimeoutError, requests.exceptions.Timeout, urllib3.exceptions.TimeoutError), f"no answer in time from {url}"),
    ):
        if any(isinstance(cause, kinds) for cause in causes):
            return words
    return str(exc) or type(exc).__name__


# What a response cut off mid-way raises (http.client's RemoteDisconnected is a ConnectionError already).
_CUT = (
    http.client.IncompleteRead,
    urllib3.exceptions.ProtocolError,
    requests.exceptions.ChunkedEncodingError,
)


def _causes(exc: BaseException) -> list[BaseException]:
    """`exc` and what it wraps, nearest first: requests and urllib3 keep the underlying error in `args` or
    `reason`, and docker in the exception it was raised while handling."""
    found: list[BaseException] = []
    pending: list[BaseException] = [exc]
    while pending and len(found) < 20:
        current = pending.pop(0)
        if any(current is seen for seen in found):
            continue
        found.append(current)
        inner = [arg for arg in current.args if isinstance(arg, BaseException)]
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException):
            inner.append(reason)
        inner += [link for link in (current.__cause__, current.__context__) if link is not None]
        pending += inner
    return found


def _explanation(exc: docker.errors.APIError) -> str:
    explanation = exc.explanation
    if isinstance(explanation, bytes):
        explanation = explanation.decode(errors="replace")
    return str(explanation or exc)
