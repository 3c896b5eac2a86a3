"""The worker's policy: turn a client's request into a spec it may run, or say why not."""

from __future__ import annotations

import fnmatch

from hatchway.errors import InputTooLarge, LimitTooHigh, NotAllowed
from hatchway.models import JobRequest, JobSpec, ResolvedLimits


class Policy:
    """What jobs may ask for on this worker: images, host networking, limits, input size."""

    def __init__(
        self,
        *,
        allowed_images: list[str],
        allow_host_network: bool,
        default_limits: ResolvedLimits,
        max_limits: ResolvedLimits,
        max_input_bytes: int,
    ) -> None:
        self.allowed_images = allowed_images
        self.allow_host_network = allow_host_network
        self.default_limits = default_limits
        self.max_limits = max_limits
        self.max_input_bytes = max_input_bytes

    def image_allowed(self, image: str) -> bool:
        return any(fnmatch.fnmatchcase(image, pattern) for pattern in self.allowed_images)

    def admit(self, request: JobRequest) -> JobSpec:
        """The normalised spec for `request`. Raises NotAllowed, LimitTooHigh or InputTooLarge."""
        if not self.image_allowed(request.image):
            raise NotAllowed(
                f"image {request.image!r} is not allowed on this worker; "
                f"allowed patterns: {', '.join(self.allowed_images) or '(none)'}"
            )
        if request.network == "host" and not self.allow_host_network:
            raise NotAllowed('network "host" is not allowed on this worker; use "none"')
        requested = request.limits.model_dump(exclude_none=True)
        too_high = [
            f"limits.{name} = {value} is above the maximum {getattr(self.max_limits, name)}"
            for name, value in requested.items()
            if value > getattr(self.max_limits, name)
        ]
        if too_high:
            raise LimitTooHigh("; ".join(too_high))
        input_bytes = len((request.stdin or "").encode()) + sum(len(t.encode()) for t in request.files.values())
        if input_bytes > self.max_input_bytes:
            raise InputTooLarge(
                f"stdin and files add up to {input_bytes} bytes; this worker takes at most {self.max_input_bytes}"
            )
        command = request.command if isinstance(request.command, list) else ["/bin/sh", "-c", request.command]
        return JobSpec(
            image=request.image,
            command=command,
            env=request.env,
            stdin=request.stdin,
            files=request.files,
            workdir=request.workdir,
            limits=ResolvedLimits(**{**self.default_limits.model_dump(), **requested}),
            network=request.network,
            priority=request.priority,
            labels=request.labels,
        )
