"""The worker's policy: turn a client's request into a spec it may run, or say why not."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

import httpx

from hatchway.egress import SourceGrant, normalise
from hatchway.engines.dockerfile import dockerfile_bases
from hatchway.errors import (
    BuildFailed,
    InputTooLarge,
    InvalidRequest,
    LimitTooHigh,
    NotAllowed,
    RuntimeUnavailable,
)
from hatchway.models import BuildSpec, JobRequest, JobSpec, ResolvedLimits
from hatchway.store.base import placement_met


@dataclass(frozen=True)
class Admitted:
    """A request the worker accepted: its spec, and anything the client should know about it."""

    spec: JobSpec
    warnings: list[str]


class Policy:
    """What jobs may ask for on this worker: images, runtimes, host networking, limits, input size, placement.

    `labels` are the worker's own, which a job's placement must be among. A worker alone with its queue (not
    `fleet`) refuses a job it does not meet the placement of, as nobody else could run it; one of a fleet takes it
    in for a worker that meets it."""

    def __init__(
        self,
        *,
        allowed_images: list[str],
        allow_host_network: bool,
        default_limits: ResolvedLimits,
        max_limits: ResolvedLimits,
        max_input_bytes: int,
        default_runtime: str = "docker",
        allowed_runtimes: Collection[str] = ("docker", "gvisor"),
        gvisor_fallback: bool = False,
        bundle_allowed_urls: Collection[str] = ("https://*", "http://*"),
        callback_allowed_urls: Collection[str] = ("https://*", "http://*"),
        available_runtimes: Callable[[], Collection[str]] = lambda: ("docker", "gvisor"),
        grants: Mapping[str, SourceGrant] | None = None,
        labels: Mapping[str, str] | None = None,
        fleet: bool = False,
    ) -> None:
        self.allowed_images = allowed_images
        self.allow_host_network = allow_host_network
        self.default_limits = default_limits
        self.max_limits = max_limits
        self.max_input_bytes = max_input_bytes
        self.default_runtime = default_runtime
        self.allowed_runtimes = allowed_runtimes
        self.gvisor_fallback = gvisor_fallback
        self.bundle_allowed_urls = bundle_allowed_urls
        self.callback_allowed_urls = callback_allowed_urls
        self._available = available_runtimes
        self._grants = dict(grants or {})
        self.labels = dict(labels or {})
        self.fleet = fleet

    def image_allowed(self, image: str) -> bool:
        return image_matches(self.allowed_images, image)

    def require_image(self, image: str) -> None:
        """Raises NotAllowed unless `image` matches the allowed patterns."""
        if not self.image_allowed(image):
            raise NotAllowed(
                f"image {image!r} is not allowed on this worker; "
                f"allowed patterns: {', '.join(self.allowed_images) or '(none)'}"
            )

    def require_placement(self, placement: Mapping[str, str]) -> None:
        """Raises NotAllowed if this worker, alone with its queue, does not meet `placement`."""
        if not self.fleet and not placement_met(placement, self.labels):
            raise NotAllowed(
                f"placement {_shown(placement)} is not met by this worker's labels ({_shown(self.labels)}), and no "
                "other worker shares its queue: set labels, or leave the placement out"
            )

    def placement_wait(self, placement: Mapping[str, str]) -> str | None:
        """What a job with `placement` that this worker took in waits for, if this worker does not meet it (its
        message while it is queued; None if this worker may run it)."""
        if placement_met(placement, self.labels):
            return None
        return f"waits for a worker whose labels include {_shown(placement)}"

    def require_url(self, url: str, field: str, *, source: str | None = None) -> None:
        """Raises NotAllowed unless `url` (a bundle or problem archive) matches the allowed patterns, or is on the
        master's origin of job source `source`, for an item of that source."""
        grant = self._grants.get(source or "")
        if grant is not None and grant.covers(url):
            return
        if not url_matches(self.bundle_allowed_urls, url):
            raise NotAllowed(
                f"{field} is not allowed on this worker (no credentials in it, and it must match one of: "
                + (", ".join(self.bundle_allowed_urls) or "(none)")
                + ")"
            )

    def require_callback_url(self, url: str) -> None:
        """Raises InvalidRequest unless `url` may receive callbacks: an http or https URL without credentials that
        matches `callback_allowed_urls`. A 422 rather than bundle_url's 403: a callback URL is the client's own
        address, which it can correct, not something it asks this worker to fetch."""
        try:
            scheme = httpx.URL(url).scheme
        except (httpx.InvalidURL, ValueError) as exc:
            raise InvalidRequest(f"callback_url is not a valid URL: {exc}") from exc
        if scheme not in ("http", "https") or not url_matches(self.callback_allowed_urls, url):
            raise InvalidRequest(
                "callback_url is not allowed on this worker (http or https, no credentials in it, and it must match "
                "one of: " + (", ".join(self.callback_allowed_urls) or "(none)") + ")"
            )

    def admit(self, request: JobRequest, *, source: str | None = None) -> Admitted:
        """The normalised spec for `request` (an item of job source `source`, or a client's). Raises NotAllowed,
        LimitTooHigh, InputTooLarge, RuntimeUnavailable."""
        try:
            images = images_needed(request.image, request.build)
        except BuildFailed as exc:
            raise InvalidRequest(f"build.dockerfile: {exc}") from exc
        for image in images:
            self.require_image(image)
        self.require_placement(request.placement)
        if request.bundle_url is not None:
            self.require_url(request.bundle_url, "bundle_url", source=source)
        if request.callback_url is not None:
            self.require_callback_url(request.callback_url)
        if request.network == "host" and not self.allow_host_network:
            raise NotAllowed('network "host" is not allowed on this worker; use "none"')
        runtime, warnings = self.choose_runtime(request.runtime)
        if runtime == "gvisor" and request.network == "host":
            raise RuntimeUnavailable('gvisor jobs run without a network here; use runtime "docker" for network "host"')
        requested = request.limits.model_dump(exclude_none=True)
        too_high = [
            f"limits.{name} = {value} is above the maximum {getattr(self.max_limits, name)}"
            for name, value in requested.items()
            if value > getattr(self.max_limits, name)
        ]
        if too_high:
            raise LimitTooHigh("; ".join(too_high))
        input_bytes = len((request.stdin or "").encode()) + sum(len(t.encode()) for t in request.files.values())
        if request.build is not None:
            input_bytes += sum(len(t.encode()) for t in request.build.files.values())
        if input_bytes > self.max_input_bytes:
            raise InputTooLarge(
                f"stdin and files add up to {input_bytes} bytes; this worker takes at most {self.max_input_bytes}"
            )
        command = request.command if isinstance(request.command, list) else ["/bin/sh", "-c", request.command]
        spec = JobSpec(
            image=request.image,
            build=request.build,
            command=command,
            env=request.env,
            stdin=request.stdin,
            files=request.files,
            bundle_url=request.bundle_url,
            bundle_sha256=request.bundle_sha256,
            workdir=request.workdir,
            limits=ResolvedLimits(**{**self.default_limits.model_dump(), **requested}),
            network=request.network,
            runtime=runtime,
            ports=request.ports,
            priority=request.priority,
            labels=request.labels,
            placement=request.placement,
            callback_url=request.callback_url,
        )
        return Admitted(spec=spec, warnings=warnings)

    def choose_runtime(self, requested: str) -> tuple[str, list[str]]:
        """The runtime a job asking for `requested` runs on now, and warnings about the choice.

        A job that asked for gvisor (or got it as the default) never silently runs on weaker isolation:
        unless `gvisor_fallback` is on, it is refused while gvisor is unavailable.
        """
        if requested != "auto" and requested not in self.allowed_runtimes:
            raise NotAllowed(
                f"runtime {requested!r} is not allowed on this worker; allowed: {', '.join(self.allowed_runtimes)}"
            )
        runtime = self.default_runtime if requested == "auto" else requested
        if runtime in self._available():
            return runtime, []
        if runtime == "gvisor" and self.gvisor_fallback and "docker" in self._available():
            return "docker", ["gvisor is unavailable on this worker; the job runs on docker (runc) instead"]
        raise RuntimeUnavailable(f"runtime {runtime!r} is not available on this worker right now")


def images_needed(image: str | None, build: BuildSpec | None) -> list[str]:
    """The images a job runs in or builds on; raises BuildFailed for a Dockerfile that cannot be read."""
    return ([image] if image is not None else []) + (dockerfile_bases(build.dockerfile) if build is not None else [])


def _shown(labels: Mapping[str, str]) -> str:
    return ", ".join(f"{key}={value}" for key, value in sorted(labels.items())) or "none"


def image_matches(patterns: Collection[str], image: str) -> bool:
    """Whether `image` matches one of the glob `patterns`."""
    return any(fnmatch.fnmatchcase(image, pattern) for pattern in patterns)


def url_matches(patterns: Collection[str], url: str) -> bool:
    """Whether `url` matches one of the glob `patterns`, judged on where it really leads.

    The URL is matched normalised, in the form it is fetched in (`hatchway.egress.normalise`: `scheme://host:port`,
    escapes of unreserved characters decoded and dot segments removed, a file URL's path too), so neither
    `http://allowed@elsewhere/` nor `file:///allowed/%2e%2e/etc/passwd` can pass for what they are not; a URL with
    credentials never matches.
    """
    try:
        if httpx.URL(url).userinfo:
            return False
        canonical = normalise(url)
    except (httpx.InvalidURL, ValueError):
        return False
    return any(fnmatch.fnmatchcase(canonical, pattern) for pattern in patterns)
