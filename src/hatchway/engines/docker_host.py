"""One Docker daemon as hatchway uses it: a lazily made API client, the thread pool that blocking SDK
calls run in, and the translation of docker and requests errors into hatchway's.

Both Docker engines (runc and gVisor's runsc) and the image manager share one host.
"""

from __future__ import annotations

import asyncio
import functools
import io
import os
import shutil
import tarfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors
import requests.exceptions

from hatchway.errors import EngineError, EngineUnavailable

_T = TypeVar("_T")
FOREIGN_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException)
PROBE_IMAGE = "hatchway-probe:1"
PROBE_COMMAND = ["/probe", "--version"]
# tini, statically linked, ships with every Docker engine as docker-init: a probe image needs no registry.
_PROBE_BINARIES = ("docker-init", "tini-static", "tini")


class DockerHost:
    """The Docker daemon: client, thread pool, and error translation."""

    def __init__(self, *, docker_url: str | None, max_concurrent_jobs: int) -> None:
        self._docker_url = docker_url
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
                    raise EngineUnavailable(f"the Docker engine does not answer: {explain(exc)}") from exc
            return self._client

    async def call(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run a blocking SDK call in the pool; docker and requests errors become EngineError."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.pool, functools.partial(fn, *args))
        except docker.errors.NotFound as exc:
            raise EngineError(f"container or image vanished: {explain(exc)}") from exc
        except FOREIGN_ERRORS as exc:
            raise EngineError(explain(exc)) from exc

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


def explain(exc: BaseException) -> str:
    """The most useful words in a docker or requests exception."""
    explanation = getattr(exc, "explanation", None)
    if isinstance(explanation, bytes):
        explanation = explanation.decode(errors="replace")
    return str(explanation or exc)
