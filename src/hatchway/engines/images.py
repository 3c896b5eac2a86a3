"""The image side of the Docker engine: pull, build and import images, and keep what hatchway made in a bounded cache.

Every method blocks; the engine calls them from its thread pool. Images hatchway pulled or built are recorded in a
ledger (`image_ledger`) so that a size budget can be enforced across restarts, least recently used first; images
it did not make itself (and imported root filesystems) are never removed. Pulls are streamed from a helper thread,
so a caller gets its answer at the deadline even when the engine has gone quiet. Builds are hatchway's own
(`builder`): each step runs as the job would, with its runtime and limits, never with the engine's builder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import docker
import docker.errors
import requests.exceptions
import urllib3.exceptions
from docker.utils import parse_repository_tag

from hatchway.engines.base import (
    JOB_LABEL,
    ROLE_LABEL,
    WORKER_LABEL,
    BuildSandbox,
    ImageSource,
    ManagedImage,
    Role,
    image_name,
)
from hatchway.engines.build_copy import check_context
from hatchway.engines.build_steps import BuildSteps, remove_image
from hatchway.engines.builder import Builder, BuildHost
from hatchway.engines.docker_streams import within
from hatchway.engines.dockerfile import parse
from hatchway.engines.image_ledger import ImageLedger
from hatchway.errors import BuildFailed, EngineError, ImageNotFound, ImagePullFailed, NotAllowed

log = logging.getLogger(__name__)

MANAGED_LABEL = "hatchway.managed"
BUILD_REPOSITORY = "hatchway-build"
# Bump when the way images are built changes, so that old cached tags are not taken for new builds.
_BUILD_RECIPE = b"hatchway-build/2"  # 2: hatchway's own builder, steps under the job's runtime
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
        builds: BuildHost,
    ) -> None:
        self._api = api
        self._host = builds
        self._ledger = ImageLedger(state_path)
        self._pull_timeout_s = pull_timeout_s
        self._build_timeout_s = build_timeout_s
        self._cache_budget_bytes = cache_budget_bytes
        self._image_allowed = image_allowed
        self._flights_lock = threading.Lock()
        self._flights: dict[str, tuple[threading.Lock, int]] = {}
        self._building: dict[str, int] = {}  # owner -> builds under way
        self._checked_runtimes: set[str] = set()

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
        self,
        dockerfile: str,
        files: dict[str, bytes],
        on_output: Callable[[str], None],
        extra_inputs: str,
        sandbox: BuildSandbox,
        *,
        stop: threading.Event | None = None,
    ) -> tuple[str, bool]:
        """Build an image from `dockerfile` and the context `files`, each step under `sandbox` (`builder`);
        return its tag and whether it was cached. Setting `stop` ends the build (BuildFailed) within a moment.

        The tag is a digest of every input, so equal inputs share one image and concurrent builds of it build once.
        Every base image must be allowed by policy (checked even when cached, as the policy may have changed).
        """
        plan = parse(dockerfile)
        check_context(files)
        for base in plan.bases:
            if not self._image_allowed(base):
                raise NotAllowed(f"the Dockerfile's base image {base!r} is not in the worker's allowed images")
        runtime = self._runtime(sandbox.runtime)
        tag = self.build_name(dockerfile, files, extra_inputs, sandbox.runtime)
        with self._single_flight(tag):
            if self._inspect(tag) is not None:
                self._record(tag, "built", keep_existing=True)
                return tag, True
            limit_s = min(sandbox.timeout_s, self._build_timeout_s)
            log.info("building image", extra={"event": "image_build", "image": tag, "job_id": sandbox.owner})
            steps = BuildSteps(
                self._api(),
                sandbox=sandbox,
                runtime=runtime,
                worker_id=self._host.worker_id,
                capabilities=self._host.capabilities,
                offline_etc=self._host.offline_etc,
                volumes=self._host.volumes,
                disk_unlimited=self._host.disk_unlimited,
                deadline=time.monotonic() + limit_s,
                limit_s=limit_s,
                on_output=on_output,
                stop=stop,
            )
            with self._flights_lock:
                self._building[sandbox.owner] = self._building.get(sandbox.owner, 0) + 1
            try:
                # The Dockerfile is part of its context, as with Docker.
                context = {**files, "Dockerfile": dockerfile.encode()}
                builder = Builder(
                    steps, files=context, ensure=self.ensure, image_allowed=self._image_allowed, on_output=on_output
                )
                builder.run(plan, tag, {MANAGED_LABEL: "built"})
            finally:
                steps.close()
                with self._flights_lock:
                    self._building[sandbox.owner] -= 1
                    if not self._building[sandbox.owner]:
                        del self._building[sandbox.owner]
            self._record(tag, "built")
            return tag, False

    def build_name(self, dockerfile: str, files: dict[str, bytes], extra_inputs: str, runtime: str) -> str:
        """The tag `build` gives these inputs on `runtime`: the runtime and the capabilities its steps get are
        inputs too, as what a step sees (its kernel, what it may do) can change what it writes."""
        engine_runtime = self._host.runtimes.get(runtime) or "runc"
        capabilities = ",".join(sorted(self._host.capabilities))
        return build_tag(dockerfile, files, extra_inputs, f"{runtime}:{engine_runtime};capabilities={capabilities}")

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
        """Remove unused built and pulled images, least recently used first, until they fit the budget; and the
        intermediate images of builds this worker no longer runs (left by a crash)."""
        self.sweep()
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

    def sweep(self) -> list[str]:
        """Remove the intermediate images of builds this worker no longer runs (a crash left them); their ids."""
        try:
            found = self._api().images(
                all=True, filters={"label": [f"{WORKER_LABEL}={self._host.worker_id}", f"{ROLE_LABEL}={Role.BUILD}"]}
            )
        except _FOREIGN_ERRORS as exc:
            raise EngineError(f"listing images failed: {_explain(exc)}") from exc
        with self._flights_lock:
            building = set(self._building)
        removed = []
        for image in found:
            if (image.get("Labels") or {}).get(JOB_LABEL) not in building:
                remove_image(self._api(), str(image["Id"]))
                removed.append(str(image["Id"]))
        return removed

    def _runtime(self, engine: str) -> str | None:
        """The engine's runtime for jobs on engine `engine`, checked once to keep what its steps write."""
        if engine not in self._host.runtimes:
            raise BuildFailed(f"this worker has no runtime {engine!r} to build on")
        runtime = self._host.runtimes[engine]
        if runtime is not None and runtime not in self._checked_runtimes:
            try:
                registered = (self._api().info().get("Runtimes") or {}).get(runtime) or {}
            except _FOREIGN_ERRORS as exc:
                raise BuildFailed(f"asking the engine about runtime {runtime!r} failed: {_explain(exc)}") from exc
            overlay = [arg for arg in registered.get("runtimeArgs") or [] if _keeps_writes_inside(arg)]
            if overlay:
                raise BuildFailed(
                    f"the engine's runtime {runtime!r} runs with {' '.join(overlay)}, which keeps what a build step"
                    " writes inside its sandbox, out of the image; register it with --overlay2=none to build on it"
                )
            self._checked_runtimes.add(runtime)
        return runtime

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


def build_tag(dockerfile: str, files: dict[str, bytes], extra_inputs: str = "", runtime: str = "") -> str:
    """The tag of the image these inputs build: a digest of the Dockerfile, every context file, `extra_inputs` and
    what the steps run on (`runtime`)."""
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
    feed(runtime.encode())
    return f"{BUILD_REPOSITORY}:{digest.hexdigest()[:24]}"


def _keeps_writes_inside(arg: str) -> bool:
    """Whether a runsc argument gives its sandboxes a root file system overlay of their own (in memory or in a
    file), whose writes never reach the engine's layer, so a commit would miss them."""
    name, _, value = arg.lstrip("-").partition("=")
    return (name == "overlay" and value.lower() not in ("false", "0")) or (name == "overlay2" and value != "none")


def _pull_error(name: str, text: str, status: int | None = None) -> EngineError:
    if status == 404 or any(hint in text.lower() for hint in _NOT_FOUND_HINTS):
        return ImageNotFound(f"image {name!r} does not exist in its registry: {text}")
    return ImagePullFailed(f"pulling image {name!r} failed: {text}")


def _explain(exc: BaseException) -> str:
    explanation = getattr(exc, "explanation", None)
    if isinstance(explanation, bytes):
        explanation = explanation.decode(errors="replace")
    return str(explanation or exc)
