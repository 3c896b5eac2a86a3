"""A Fluster `RunJobRequest` as a hatchway `JobRequest` (issue 19; docs/fluster-plan.md, "The worker").

The job runs the shipped runner (`hatchway.fluster.runner`) with the container's Python in the environment's image;
the entrypoint's bytes travel as a file of the job's working directory, so they are unpickled only in the job's
container. What hatchway cannot give a job says so in a `Refusal`, which fails the job with that message (the
controller is told FAILED, as for any job that cannot start), rather than failing the RPC (which would make the
controller dispatch it again and again).
"""

from __future__ import annotations

import base64
import math
import re
from importlib import resources

from pydantic import ValidationError

from hatchway.fluster import runner
from hatchway.fluster.proto import cluster_pb2 as pb
from hatchway.models import JobRequest, Limits
from hatchway.settings.fluster import FlusterConfig
from hatchway.sources.fluster_environment import environment, environment_build
from hatchway.sources.fluster_jobs import ATTEMPT_LABEL, JOB_LABEL, Refusal

__all__ = ["Refusal", "job_request", "memory_mb", "needs_build_network", "runner_source"]

WORKDIR = "/workdir"
"""Where the job's directory is mounted, its working directory: the bundle unpacked, the entrypoint, the result."""
RUNNER_FILE = ".fluster/runner.py"
_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
_MIB_PER_UNIT = {"k": 1 / 1024, "": 1, "m": 1, "g": 1024, "t": 1024 * 1024}


def memory_mb(text: str) -> int | None:
    """A ResourceSpec's memory (`8g`, `128m`, `512k`; no unit is MiB, as Fluster's parser reads it) in MiB, rounded
    up; None for an empty one. Raises Refusal for what is not a size."""
    if not text.strip():
        return None
    found = _MEMORY.match(text)
    if found is None:
        raise Refusal(f"resources.memory {text!r} is not a size such as 8g, 512m or 1024")
    return max(1, math.ceil(float(found.group(1)) * _MIB_PER_UNIT[found.group(2).lower()]))


def runner_source() -> str:
    """The runner's text, as shipped into every job."""
    return resources.files(runner.__package__ or "hatchway.fluster").joinpath("runner.py").read_text()


def needs_build_network(request: JobRequest) -> bool:
    """Whether the job's image build installs packages (and so needs the network `fluster.build_network` gives)."""
    return request.build is not None


def job_request(
    run: pb.Worker.RunJobRequest,
    *,
    config: FlusterConfig,
    worker_id: str,
    host_network: bool,
    bundle_url: str | None,
    bundle_sha256: str | None = None,
    pyproject: bytes | None = None,
) -> JobRequest:
    """The hatchway job for `run` (`bundle_url`: its bundle as hatchway fetches it, a gs:// path already made
    local; `bundle_sha256`: the bundle whose `pyproject` (the bytes of its pyproject.toml, None without one) was
    read, so that the job runs that one). Raises Refusal for a request hatchway cannot run here."""
    asked = environment(pyproject, run.environment.extras, run.environment.pip_packages)
    packages = asked.requirements
    if packages and not config.build_network:
        raise Refusal(
            f"the environment needs packages ({asked.described()}), which this worker cannot install: its image "
            "builds have no network (fluster.build_network). Put them in fluster.base_image"
        )
    ports = list(run.ports)
    if ports and not host_network:
        raise Refusal(f"ports {', '.join(ports)} need the host network, which this worker does not allow")
    env = dict(run.environment.env_vars)
    env.update(
        {
            "FLUSTER_JOB_ID": run.job_id,
            "FLUSTER_ATTEMPT_ID": str(run.attempt_id),
            "FLUSTER_WORKER_ID": worker_id,
            # On the host network the job shares the host's loopback, so the controller's URL works as it is;
            # on none it reaches nothing, and no rewriting would help.
            "FLUSTER_CONTROLLER_ADDRESS": config.controller_url,
            "FLUSTER_BIND_HOST": "0.0.0.0" if host_network else "127.0.0.1",
            "PYTHONPATH": ":".join(filter(None, [WORKDIR, env.get("PYTHONPATH", "")])),
        }
    )
    if run.bundle_gcs_path:
        env["FLUSTER_BUNDLE_GCS_PATH"] = run.bundle_gcs_path
    resources_ = run.resources
    limits = Limits(
        cpus=float(resources_.cpu) if resources_.cpu > 0 else None,
        memory_mb=memory_mb(resources_.memory),
        timeout_s=float(run.timeout_seconds) if run.timeout_seconds > 0 else None,
    )
    try:
        return JobRequest(
            image=None if packages else config.base_image,
            build=environment_build(config.base_image, packages) if packages else None,
            command=["python3", f"{WORKDIR}/{RUNNER_FILE}"],
            env=env,
            files={
                RUNNER_FILE: runner_source(),
                runner.ENTRYPOINT_FILE: base64.b64encode(run.serialized_entrypoint).decode(),
            },
            bundle_url=bundle_url,
            bundle_sha256=bundle_sha256 if bundle_url is not None else None,
            workdir=WORKDIR,
            limits=limits,
            network="host" if host_network else "none",
            ports=ports,
            labels={JOB_LABEL: run.job_id[:256], ATTEMPT_LABEL: str(run.attempt_id)},
        )
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise Refusal(f"the job cannot run on this worker: {problems}") from exc
