"""The hatchway exception tree.

::

    HatchwayError
    ├── ConfigError            bad configuration; start-up stops
    ├── RequestError           a client's request cannot be accepted (carries an HTTP status)
    │   ├── Unauthenticated    401: the API needs a bearer token and got none, or one it does not know
    │   ├── InsufficientRole   403: the token's role may not do what the request asks
    │   ├── InvalidRequest     422: a value is malformed (a query parameter, an image name, a Dockerfile)
    │   ├── JobNotFound        404: no job has that id
    │   ├── ArtifactNotFound   404: the job kept no file at that path
    │   ├── NotAllowed         403: policy forbids what the job asks for
    │   ├── LimitTooHigh       422: a limit is above the configured maximum
    │   ├── RuntimeUnavailable 422: the runtime the job asks for does not work here now
    │   ├── InputTooLarge      413: stdin and files are larger than the worker takes
    │   ├── JobConflict        409: the id is taken by a different job
    │   └── JobAlreadyFinished 409: the job has ended; it cannot be killed
    ├── ShuttingDown           the worker is stopping and takes no new jobs
    ├── BadBundle              a job's bundle is unusable (download, checksum, hostile or broken archive)
    │   ├── FetchFailed        it could not be fetched (refused or failed); the client is told no more
    │   │   └── DownloadUnavailable  ... for a reason that may pass (unreachable, 5xx)
    │   └── ProblemError       a grading's problem archive is not in the judge's in/ out/ layout
    └── EngineError            the container engine failed
        ├── EngineUnavailable  the engine does not answer at all
        ├── ImageNotFound      the registry says the image does not exist
        ├── ImagePullFailed    the image is missing and pulling it failed (network, timeout, auth)
        ├── PortsExhausted     no free host port is left in the configured range
        ├── BuildFailed        building the job's image from its Dockerfile failed
        ├── SandboxUnavailable the sandbox supervisor binary is missing or cannot be built
        └── DiskUnavailable    a job's size-limited disk could not be made (needs root and loop devices)

Grading adds two request errors where they are used: `UnknownProfile` (an InvalidRequest, in
judge/profiles.py) and `GradeLimitTooHigh` (a LimitTooHigh, in judge/). The worker-agent protocol adds `Rejected`
(400, with the protocol's own code, in api/agent_jobs.py).
"""

from __future__ import annotations


class HatchwayError(Exception):
    """Root of every error hatchway raises on purpose."""


class ConfigError(HatchwayError):
    """The configuration is invalid; the message names the offending key."""


class StoreUnavailable(ConfigError):
    """The job store (store_url) did not answer when the worker started."""


class RequestError(HatchwayError):
    """A client's request cannot be accepted; `status` is the HTTP status that says why."""

    status: int = 400
    code: str = "bad_request"


class Unauthenticated(RequestError):
    """The API has tokens configured and the request carried none, or one that is not among them."""

    status = 401
    code = "unauthenticated"


class InsufficientRole(RequestError):
    """The request's token is valid, but its role may not do what the request asks; the message names the role
    that may."""

    status = 403
    code = "insufficient_role"

    def __init__(self, method: str, path: str, *, needed: str, role: str) -> None:
        super().__init__(f"{method} {path} needs a token with role {needed} (or above); this token's role is {role}")
        self.needed = needed
        self.role = role


class InvalidRequest(RequestError):
    """A value the client sent is malformed: a query parameter, an image name, a Dockerfile."""

    status = 422
    code = "invalid_request"


class ArtifactNotFound(RequestError):
    """The job kept no artifact at that path."""

    status = 404
    code = "artifact_not_found"


class RuntimeUnavailable(RequestError):
    """The runtime the job asks for does not work on this worker right now."""

    status = 422
    code = "runtime_unavailable"


class JobNotFound(RequestError):
    """No job has the requested id."""

    status = 404
    code = "job_not_found"


class NotAllowed(RequestError):
    """The worker's policy forbids what the job asks for (an image, host networking, ...)."""

    status = 403
    code = "not_allowed"


class LimitTooHigh(RequestError):
    """A requested limit is above the configured maximum."""

    status = 422
    code = "limit_too_high"


class InputTooLarge(RequestError):
    """The job's stdin and files together are larger than the configured maximum."""

    status = 413
    code = "input_too_large"


class JobConflict(RequestError):
    """A job with the same client-chosen id but a different spec already exists."""

    status = 409
    code = "job_conflict"


class WorkerUnreachable(RequestError):
    """In a fleet, what was asked for is held by another worker (a running job's live output, a job's artifacts),
    and that worker did not answer."""

    status = 502
    code = "worker_unreachable"


class JobAlreadyFinished(RequestError):
    """The job has already ended, so it cannot be killed."""

    status = 409
    code = "job_finished"


class ShuttingDown(HatchwayError):
    """The worker is shutting down and accepts no new jobs."""


class EngineError(HatchwayError):
    """The container engine failed while preparing, running or cleaning up a job."""


class EngineUnavailable(EngineError):
    """The container engine does not answer."""


class RunNeverStarted(EngineError):
    """A supervised sandbox ended without running the request it was sent: the worker died between recording the
    job as running and the request reaching the supervisor, which then found its channel closed and stopped. The
    command never ran, so the job can safely run again."""


class ImageNotFound(EngineError):
    """The image is not present locally and the registry says it does not exist."""


class ImagePullFailed(EngineError):
    """The image is not present locally and pulling it failed: unreachable registry, timeout, refused access."""


class BuildFailed(EngineError):
    """Building the job's image failed; the build output says why."""


class BadBundle(HatchwayError):
    """A job's bundle cannot be used: download failed or too large, checksum mismatch, or a hostile archive."""


def may_pass(status: int) -> bool:
    """Whether an HTTP failure is one another try may not meet: the server's own trouble (5xx), or being told to
    come back later (408, 429). Any other 4xx is final."""
    return status >= 500 or status in (408, 429)


class FetchFailed(BadBundle):
    """An archive could not be fetched: its URL, or an address or redirect it led to, is one policy refuses, or the
    download failed (unreachable, an HTTP error, too large, too slow). Whoever asked is told only that, in the same
    words whatever happened, so that the worker cannot be used to probe what its networks hold (is that port open,
    does that file exist); `detail` says what happened, for the worker's log."""

    MESSAGE = "the archive could not be fetched (refused or failed; the worker's log says why)"

    def __init__(self, detail: str) -> None:
        super().__init__(self.MESSAGE)
        self.detail = detail


class DownloadUnavailable(FetchFailed):
    """A download failed in a way that may pass: the server could not be reached, timed out, or answered 5xx,
    408 or 429. Worth trying again later; other BadBundles are not."""


def download_may_pass(error: BaseException) -> bool:
    """Whether `error`, or what caused it, is a download failure another try may not meet (`DownloadUnavailable`)."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, DownloadUnavailable):
            return True
        seen = seen.__cause__
    return False


DOWNLOAD_RETRY_S = (1.0, 2.0, 4.0, 8.0)
"""Waits before the next tries of a download that failed for a reason that may pass (a claim's, a grading's)."""


class PortsExhausted(EngineError):
    """No free host port is left in the configured range."""


class ProblemError(BadBundle):
    """A problem archive is not in the judge's layout: no in/ and out/ folders, an input without its expected
    output or the other way round, a stray file, or no tests at all. The message names the files."""


class SandboxUnavailable(EngineError):
    """The sandbox supervisor binary is missing or cannot be built, so programs cannot run in a prepared sandbox
    here; the message says how to build it."""


class DiskUnavailable(EngineError):
    """A job's disk, the size-limited filesystem for its working directory and /tmp, could not be made or removed:
    making one needs root, `mkfs.ext4` and loop devices."""
