"""The image side of the Docker engine: pull, build and import images, and keep what hatchway made in a bounded cache.

Every method blocks; the engine calls them from its thread pool. Images hatchway pulled or built are recorded in a
ledger (`image_ledger`) so that a size budget can be enforced across restarts, least recently used first; images
it did not make itself (and imported root filesystems) are never removed. Pulls and builds are streamed from a
helper thread, so a caller gets its answer at the deadline even when the engine has gone quiet; giving up on a
build closes its connection, which makes the engine cancel it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import tarfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import docker
import docker.errors
import requests.exceptions
import urllib3.exceptions
from docker.utils import parse_repository_tag

from hatchway.engines.base import ImageSource, ManagedImage, image_name
from hatchway.engines.docker_streams import within
from hatchway.engines.dockerfile import dockerfile_bases
from hatchway.engines.image_ledger import ImageLedger
from hatchway.errors import BuildFailed, EngineError, ImageNotFound, ImagePullFailed, NotAllowed

log = logging.getLogger(__name__)

MANAGED_LABEL = "hatchway.managed"
BUILD_REPOSITORY = "hatchway-build"
# Bump when the way images are built changes, so that old cached tags are not taken for new builds.
_BUILD_RECIPE = b"hatchway-build/1"
# What registries say when the image does not exist (or, for Docker Hub, may exist but is not ours to see).
_NOT_FOUND_HINTS = ("manifest unknown", "not found", "repository does not exist", "pull access denied")
# A streamed response that times out raises urllib3's error, not requests'.
_FOREIGN_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException, urllib3.exceptions.HTTPError)


class ImageManager:
    """Pulls, builds and imports images, and evicts the least recently used ones hatchway made when over budget."""

    def __init__(
        self,
        api: Callable[[], docker.APIClient],
        *,
        state_path: Path,
        pull_timeout_s: float,
        build_timeout_s: float,
        cache_budget_bytes: int,
        image_allowed: Callable[[str], bool],
    ) -> None:
        self._api = api
        self._ledger = ImageLedger(state_path)
        self._pull_timeout_s = pull_timeout_s
        self._build_timeout_s = build_timeout_s
        self._cache_budget_bytes = cache_budget_bytes
        self._image_allowed = image_allowed
        self._flights_lock = threading.Lock()
        self._flights: dict[str, tuple[threading.Lock, int]] = {}

    def present(self, image: str) -> bool:
        """Whether `image` is on the engine now (nothing is pulled)."""
        return self._inspect(image_name(image)) is not None

    def ensure(self, image: str) -> bool:
        """Make `image` present; True if it already was, False if it had to be pulled (recorded as managed)."""
        name = image_name(image)
        with self._single_flight(name):
            if self._inspect(name) is not None:
                return True
            self._pull(name)
            self._record(name, "pulled")
            return False

    def build(
        self, dockerfile: str, files: dict[str, bytes], on_output: Callable[[str], None], extra_inputs: str = ""
    ) -> tuple[str, bool]:
        """Build an image from `dockerfile` and the context `files`; return its tag and whether it was cached.

        The tag is a digest of every input, so equal inputs share one image and concurrent builds of it build once.
        Every base image must be allowed by policy (checked even when cached, as the policy may have changed).
        A `files` entry named `Dockerfile` is replaced by `dockerfile`.
        """
        bases = dockerfile_bases(dockerfile)
        for base in bases:
            if not self._image_allowed(base):
                raise NotAllowed(f"the Dockerfile's base image {base!r} is not in the worker's allowed images")
        tag = build_tag(dockerfile, files, extra_inputs)
        with self._single_flight(tag):
            if self._inspect(tag) is not None:
                self._record(tag, "built", keep_existing=True)
                return tag, True
            for base in bases:
                self.ensure(base)
            self._build(tag, _context_tar(dockerfile, files), on_output)
            self._record(tag, "built")
            return tag, False

    def import_rootfs(self, name: str, tarball: Path) -> ManagedImage:
        """Make image `name` from a root filesystem tarball (`docker import`); it is never evicted automatically."""
        name = image_name(name)
        repository, tag = parse_repository_tag(name)
        if not tarball.is_file():
            # The SDK would take the path for a URL and let the engine try to download it.
            raise EngineError(f"cannot import image {name!r}: {tarball} is not a file")
        try:
            answer = self._api().import_image_from_file(
                str(tarball), repository=repository, tag=tag, changes=[f"LABEL {MANAGED_LABEL}=imported"]
            )
        except (*_FOREIGN_ERRORS, OSError) as exc:
            raise EngineError(f"importing {tarball} as image {name!r} failed: {_explain(exc)}") from exc
        # The engine answers 200 before reading the tarball, so a bad one is only reported inside the answer.
        for line in str(answer).splitlines():
            with contextlib.suppress(ValueError):
                item = json.loads(line)
                if isinstance(item, dict) and item.get("error"):
                    raise EngineError(f"importing {tarball} as image {name!r} failed: {item['error']}")
        return self._record(name, "imported")

    def acquire(self, image: str) -> None:
        """Mark `image` as used by a job (it will not be evicted) and as just used."""
        self._ledger.acquire(image_name(image))

    def release(self, image: str) -> None:
        """Undo one `acquire`."""
        self._ledger.release(image_name(image))

    def evict(self) -> list[str]:
        """Remove unused built and pulled images, least recently used first, until they fit the budget."""
        self._drop_vanished()
        return self._ledger.evict(self._cache_budget_bytes, self._remove)

    def managed(self) -> list[ManagedImage]:
        """Every image hatchway manages that is still on the engine, least recently used first."""
        self._drop_vanished()
        return self._ledger.managed()

    def _remove(self, name: str) -> bool:
        """Remove image `name` from the engine; False if a container (maybe a stopped one) still uses it."""
        try:
            self._api().remove_image(name)
        except docker.errors.NotFound:
            return True  # gone already: it no longer counts either way
        except docker.errors.APIError as exc:
            if exc.status_code != 409:
                raise EngineError(f"removing image {name!r} failed: {_explain(exc)}") from exc
            return False
        except _FOREIGN_ERRORS as exc:
            raise EngineError(f"removing image {name!r} failed: {_explain(exc)}") from exc
        log.info("image evicted", extra={"event": "image_evict", "image": name})
        return True

    # Engine calls.

    def _inspect(self, name: str) -> dict[str, Any] | None:
        """The engine's record of image `name`, or None if it has no such image."""
        try:
            return cast(dict[str, Any], self._api().inspect_image(name))  # type: ignore[no-untyped-call]
        except docker.errors.NotFound:
            return None
        except docker.errors.APIError as exc:
            if exc.status_code == 400:  # no image can have that name
                raise ImageNotFound(f"{name!r} is not a valid image name: {_explain(exc)}") from exc
            raise EngineError(f"inspecting image {name!r} failed: {_explain(exc)}") from exc
        except _FOREIGN_ERRORS as exc:
            raise EngineError(f"inspecting image {name!r} failed: {_explain(exc)}") from exc

    def _pull(self, name: str) -> None:
        repository, tag = parse_repository_tag(name)
        log.info("pulling image", extra={"event": "image_pull", "image": name})
        api = self._api()
        stream = within(lambda: api.pull(repository, tag=tag, stream=True, decode=True), self._pull_timeout_s)
        try:
            with contextlib.closing(stream):
                for item in stream:
                    # A failure after the pull has begun arrives inside the stream, not as an HTTP error.
                    if isinstance(item, dict) and item.get("error"):
                        raise _pull_error(name, str(item["error"]))
        except TimeoutError as exc:
            raise ImagePullFailed(f"pulling image {name!r} timed out after {self._pull_timeout_s:g} s") from exc
        except docker.errors.APIError as exc:
            raise _pull_error(name, _explain(exc), exc.status_code) from exc
        except _FOREIGN_ERRORS as exc:
            raise ImagePullFailed(f"pulling image {name!r} failed: {_explain(exc)}") from exc

    def _build(self, tag: str, context: io.BytesIO, on_output: Callable[[str], None]) -> None:
        log.info("building image", extra={"event": "image_build", "image": tag})
        api = self._api()

        def start() -> Iterator[Any]:
            return cast(
                Iterator[Any],
                api.build(
                    fileobj=context,
                    custom_context=True,
                    tag=tag,
                    rm=True,
                    forcerm=True,
                    decode=True,
                    network_mode="none",
                    pull=False,
                    labels={MANAGED_LABEL: "built"},
                    use_config_proxy=False,  # the engine's proxy settings have no business in a job's build
                    # A read timeout ends a build that went silent after we gave up on it.
                    timeout=math.ceil(self._build_timeout_s),
                ),
            )

        stream = within(start, self._build_timeout_s)
        try:
            with contextlib.closing(stream):
                for item in stream:
                    if not isinstance(item, dict):
                        continue
                    # Passed on as it arrives: a line the engine sends in pieces arrives in pieces.
                    text = str(item.get("stream") or item.get("status") or item.get("error") or "")
                    for line in text.splitlines():
                        on_output(line)
                    if item.get("error"):
                        raise BuildFailed(f"building the image failed: {str(item['error']).strip()}")
        except TimeoutError as exc:
            raise BuildFailed(f"building the image timed out after {self._build_timeout_s:g} s") from exc
        except _FOREIGN_ERRORS as exc:
            raise BuildFailed(f"building the image failed: {_explain(exc)}") from exc
        if self._inspect(tag) is None:
            raise BuildFailed("the build ended without producing an image")

    # State.

    @contextlib.contextmanager
    def _single_flight(self, key: str) -> Iterator[None]:
        """Hold a lock of `key`'s own; the entry goes away when nobody holds or waits for it."""
        with self._flights_lock:
            lock, users = self._flights.get(key, (threading.Lock(), 0))
            self._flights[key] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._flights_lock:
                lock, users = self._flights[key]
                if users == 1:
                    del self._flights[key]
                else:
                    self._flights[key] = (lock, users - 1)

    def _record(self, name: str, source: ImageSource, *, keep_existing: bool = False) -> ManagedImage:
        size = int((self._inspect(name) or {}).get("Size") or 0)
        return self._ledger.record(name, source, size, keep_existing=keep_existing)

    def _drop_vanished(self) -> None:
        gone = [entry for entry in self._ledger.entries() if self._inspect(entry.name) is None]
        if gone:
            self._ledger.forget(gone)


def build_tag(dockerfile: str, files: dict[str, bytes], extra_inputs: str = "") -> str:
    """The tag of the image these inputs build: a digest of the Dockerfile, every context file and `extra_inputs`."""
    digest = hashlib.sha256()

    def feed(part: bytes) -> None:
        # Length-prefixed, so no two different input sets can run together into the same bytes.
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)

    feed(_BUILD_RECIPE)
    feed(dockerfile.encode())
    for path in sorted(files):
        feed(path.encode())
        feed(files[path])
    feed(extra_inputs.encode())
    return f"{BUILD_REPOSITORY}:{digest.hexdigest()[:24]}"


def _context_tar(dockerfile: str, files: dict[str, bytes]) -> io.BytesIO:
    """The build context as an in-memory tar: the Dockerfile and every file, in a stable order and metadata."""
    members = {path: content for path, content in files.items() if path != "Dockerfile"}
    for path in members:
        parts = path.split("/")
        if path.startswith("/") or "\\" in path or any(part in ("", ".", "..") for part in parts):
            raise BuildFailed(f"the build context path {path!r} is not a plain relative path")
    members["Dockerfile"] = dockerfile.encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in sorted(members):
            info = tarfile.TarInfo(path)
            info.size = len(members[path])
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(members[path]))
    buffer.seek(0)
    return buffer


def _pull_error(name: str, text: str, status: int | None = None) -> EngineError:
    if status == 404 or any(hint in text.lower() for hint in _NOT_FOUND_HINTS):
        return ImageNotFound(f"image {name!r} does not exist in its registry: {text}")
    return ImagePullFailed(f"pulling image {name!r} failed: {text}")


def _explain(exc: BaseException) -> str:
    explanation = getattr(exc, "explanation", None)
    if isinstance(explanation, bytes):
        explanation = explanation.decode(errors="replace")
    return str(explanation or exc)
