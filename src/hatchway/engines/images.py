"""The image side of the Docker engine: pull, build and import images, and keep what hatchway made in a bounded cache.

Every method blocks; the engine calls them from its thread pool. Images hatchway pulled or built are recorded in a
small JSON file so that a size budget can be enforced across restarts, least recently used first; images it did not
make itself (and imported root filesystems) are never removed. Pulls and builds are streamed from a helper thread,
so a caller gets its answer at the deadline even when the engine has gone quiet; giving up on a build closes its
connection, which makes the engine cancel it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import queue
import tarfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Generator, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

import docker
import docker.errors
import requests.exceptions
import urllib3.exceptions
from docker.utils import parse_repository_tag

from hatchway.engines.dockerfile import dockerfile_bases
from hatchway.errors import BuildFailed, EngineError, ImageNotFound, ImagePullFailed, NotAllowed
from hatchway.files import write_atomically

log = logging.getLogger(__name__)

Source = Literal["built", "pulled", "imported"]
MANAGED_LABEL = "hatchway.managed"
BUILD_REPOSITORY = "hatchway-build"
# Bump when the way images are built changes, so that old cached tags are not taken for new builds.
_BUILD_RECIPE = b"hatchway-build/1"
_STATE_VERSION = 1
# What registries say when the image does not exist (or, for Docker Hub, may exist but is not ours to see).
_NOT_FOUND_HINTS = ("manifest unknown", "not found", "repository does not exist", "pull access denied")
# A streamed response that times out raises urllib3's error, not requests'.
_FOREIGN_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException, urllib3.exceptions.HTTPError)
# How the engine's Dockerfile parser splits words (not Python's wider idea of whitespace).
_T = TypeVar("_T")


@dataclass(frozen=True)
class ManagedImage:
    """An image hatchway pulled, built or imported, as `GET /images` lists it."""

    name: str
    source: Source
    size_bytes: int
    last_used: float
    in_use: int


@dataclass(frozen=True)
class _Entry:
    """What the state file keeps for one managed image (use counts live only in this process)."""

    name: str
    source: Source
    size_bytes: int
    last_used: float


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
        self._state_path = state_path
        self._pull_timeout_s = pull_timeout_s
        self._build_timeout_s = build_timeout_s
        self._cache_budget_bytes = cache_budget_bytes
        self._image_allowed = image_allowed
        self._lock = threading.Lock()  # guards _entries, _in_use and the state file
        self._entries = self._load()
        self._in_use: Counter[str] = Counter()
        self._flights_lock = threading.Lock()
        self._flights: dict[str, tuple[threading.Lock, int]] = {}

    def present(self, image: str) -> bool:
        """Whether `image` is on the engine now (nothing is pulled)."""
        return self._inspect(normalize(image)) is not None

    def ensure(self, image: str) -> bool:
        """Make `image` present; True if it already was, False if it had to be pulled (recorded as managed)."""
        name = normalize(image)
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
        name = normalize(name)
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
        entry = self._record(name, "imported")
        return self._as_managed(entry)

    def acquire(self, image: str) -> None:
        """Mark `image` as used by a job (it will not be evicted) and as just used."""
        name = normalize(image)
        with self._lock:
            self._in_use[name] += 1
            entry = self._entries.get(name)
            if entry is not None:
                self._entries[name] = replace(entry, last_used=time.time())
                self._save()

    def release(self, image: str) -> None:
        """Undo one `acquire`."""
        name = normalize(image)
        with self._lock:
            if self._in_use[name] <= 1:
                del self._in_use[name]
            else:
                self._in_use[name] -= 1

    def evict(self) -> list[str]:
        """Remove unused built and pulled images, least recently used first, until they fit the budget."""
        self._drop_vanished()
        removed: list[str] = []
        skipped: set[str] = set()
        while True:
            # Choose and remove under the lock, so no acquire() can take the victim in between.
            with self._lock:
                cached = [e for e in self._entries.values() if e.source != "imported"]
                if sum(e.size_bytes for e in cached) <= self._cache_budget_bytes:
                    return removed
                candidates = [e for e in cached if not self._in_use[e.name] and e.name not in skipped]
                if not candidates:
                    return removed
                victim = min(candidates, key=lambda e: e.last_used)
                try:
                    self._api().remove_image(victim.name)
                except docker.errors.NotFound:
                    pass  # gone already: it no longer counts either way
                except docker.errors.APIError as exc:
                    if exc.status_code != 409:
                        raise EngineError(f"removing image {victim.name!r} failed: {_explain(exc)}") from exc
                    # A container (maybe a stopped one) still uses it: leave it for a later round.
                    skipped.add(victim.name)
                    continue
                except _FOREIGN_ERRORS as exc:
                    raise EngineError(f"removing image {victim.name!r} failed: {_explain(exc)}") from exc
                else:
                    removed.append(victim.name)
                    log.info("image evicted", extra={"event": "image_evict", "image": victim.name})
                del self._entries[victim.name]
                self._save()

    def managed(self) -> list[ManagedImage]:
        """Every image hatchway manages that is still on the engine, least recently used first."""
        self._drop_vanished()
        with self._lock:
            entries = sorted(self._entries.values(), key=lambda e: e.last_used)
            return [self._as_managed(entry) for entry in entries]

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
        stream = _within(lambda: api.pull(repository, tag=tag, stream=True, decode=True), self._pull_timeout_s)
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

        stream = _within(start, self._build_timeout_s)
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

    def _record(self, name: str, source: Source, *, keep_existing: bool = False) -> _Entry:
        size = int((self._inspect(name) or {}).get("Size") or 0)
        with self._lock:
            entry = self._entries.get(name)
            if entry is None or not keep_existing:
                entry = _Entry(name=name, source=source, size_bytes=size, last_used=time.time())
                self._entries[name] = entry
                self._save()
            return entry

    def _drop_vanished(self) -> None:
        with self._lock:
            seen = list(self._entries.values())
        gone = [entry for entry in seen if self._inspect(entry.name) is None]
        if gone:
            with self._lock:
                for entry in gone:
                    # Only if nothing re-recorded it while we were asking the engine.
                    if self._entries.get(entry.name) == entry:
                        del self._entries[entry.name]
                self._save()

    def _as_managed(self, entry: _Entry) -> ManagedImage:
        return ManagedImage(in_use=self._in_use.get(entry.name, 0), **asdict(entry))

    def _load(self) -> dict[str, _Entry]:
        try:
            data = json.loads(self._state_path.read_text())
            return {item["name"]: _Entry(**item) for item in data["images"]}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # Forgetting is the safe direction: an image nobody remembers is never evicted.
            log.warning(
                "image state unreadable; starting empty",
                extra={"event": "image_state_unreadable", "path": str(self._state_path), "error": str(exc)},
            )
            return {}

    def _save(self) -> None:
        """Write the state atomically: a reader (or a crash) sees the old file or the new one, never half of one."""
        data = {"version": _STATE_VERSION, "images": [asdict(entry) for entry in self._entries.values()]}
        write_atomically(self._state_path, json.dumps(data).encode(), durable=True)


def normalize(image: str) -> str:
    """The name the engine stores for `image`: with `:latest` when it names neither a tag nor a digest."""
    repository, tag = parse_repository_tag(image)
    if tag is None:
        return f"{repository}:latest"
    return image


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


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_END = object()


def _within(start: Callable[[], Iterator[_T]], timeout_s: float) -> Generator[_T, None, None]:
    """Iterate a blocking stream from a helper thread, raising TimeoutError once `timeout_s` has passed.

    When the caller stops (deadline, error or just done), the helper closes the stream at its next item, which
    closes the connection; a stream that stays silent is left to its own read timeout.
    """
    items: queue.Queue[object] = queue.Queue()
    stop = threading.Event()

    def pump() -> None:
        try:
            stream = start()
            try:
                for item in stream:
                    if stop.is_set():
                        break
                    items.put(item)
            finally:
                close = getattr(stream, "close", None)
                if close is not None:
                    close()
            items.put(_END)
        except BaseException as exc:
            items.put(_Failed(exc))

    threading.Thread(target=pump, name="images-stream", daemon=True).start()
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                item = items.get(timeout=max(deadline - time.monotonic(), 0))
            except queue.Empty:
                raise TimeoutError from None
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.exc
            yield cast(_T, item)
    finally:
        stop.set()


def _pull_error(name: str, text: str, status: int | None = None) -> EngineError:
    if status == 404 or any(hint in text.lower() for hint in _NOT_FOUND_HINTS):
        return ImageNotFound(f"image {name!r} does not exist in its registry: {text}")
    return ImagePullFailed(f"pulling image {name!r} failed: {text}")


def _explain(exc: BaseException) -> str:
    explanation = getattr(exc, "explanation", None)
    if isinstance(explanation, bytes):
        explanation = explanation.decode(errors="replace")
    return str(explanation or exc)
