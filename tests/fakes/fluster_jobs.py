"""The Fluster controller's view of jobs and workers, and job entrypoints as its client makes them: the state
machine of the real controller (marin lib/fluster/src/fluster/cluster/controller/job.py and state.py at commit
867e702553371959fa5357301e929dd2b96937ae), for the controller's test double (fluster_controller.py).

- A job is PENDING until dispatched; it is marked RUNNING on this worker *before* the RunJob call, and put back
  (PENDING, requeued) if the call fails, the worker then being marked unhealthy until its next RegisterWorker.
- A reported FAILED (or WORKER_FAILED) counts a failure (or a preemption); with retries left (0 failures, 100
  preemptions by default) the attempt goes into `attempts`, `current_attempt_id` goes up and the job is PENDING
  again; otherwise it stays in that state. SUCCEEDED keeps the exit code, KILLED the error; BUILDING and RUNNING
  just set the state.
- The serialized entrypoint is cloudpickle of `fluster.cluster.types.Entrypoint(callable, args, kwargs)`, a
  dataclass pickled by reference: the stream names `fluster.cluster.types` and `Entrypoint`, and whoever loads it
  needs that class (or a stand-in for it).
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cloudpickle

from hatchway.fluster.proto import cluster_pb2 as pb

FINISHED = (
    pb.JOB_STATE_SUCCEEDED,
    pb.JOB_STATE_FAILED,
    pb.JOB_STATE_KILLED,
    pb.JOB_STATE_WORKER_FAILED,
    pb.JOB_STATE_UNSCHEDULABLE,
)
ENTRYPOINT_MODULE = "fluster.cluster.types"


@dataclass
class Entrypoint:
    """The shape of fluster's Entrypoint; pickled as `fluster.cluster.types.Entrypoint` (see serialized_entrypoint)."""

    callable: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


def serialized_entrypoint(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> bytes:
    """`fn(*args, **kwargs)` as the real client sends it: cloudpickle of an Entrypoint whose class is referenced as
    `fluster.cluster.types.Entrypoint`. A stand-in module of that name is in sys.modules only while pickling, so the
    pickle refers to the class (as the real one, importable on the client, is) instead of carrying it."""
    stand_in = types.ModuleType(ENTRYPOINT_MODULE)
    stand_in.Entrypoint = Entrypoint  # type: ignore[attr-defined]
    saved = {name: sys.modules.get(name) for name in ("fluster", "fluster.cluster", ENTRYPOINT_MODULE)}
    original = (Entrypoint.__module__, Entrypoint.__qualname__)
    sys.modules.update({"fluster": types.ModuleType("fluster"), "fluster.cluster": types.ModuleType("fluster.cluster")})
    sys.modules[ENTRYPOINT_MODULE] = stand_in
    Entrypoint.__module__, Entrypoint.__qualname__ = ENTRYPOINT_MODULE, "Entrypoint"
    try:
        return bytes(cloudpickle.dumps(Entrypoint(fn, args, dict(kwargs))))
    finally:
        Entrypoint.__module__, Entrypoint.__qualname__ = original
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


@dataclass
class ControllerWorker:
    """A registered worker, as the controller holds it."""

    worker_id: str
    address: str
    """host:port, from its first RegisterWorker (a later registration does not change it: the real one's quirk)."""
    resources: pb.ResourceSpec
    metadata: pb.WorkerMetadata
    last_heartbeat_ms: int
    healthy: bool = True
    running_jobs: set[str] = field(default_factory=set)


@dataclass
class Attempt:
    attempt_id: int
    worker_id: str | None
    state: int
    started_at_ms: int | None
    finished_at_ms: int | None
    exit_code: int | None
    error: str | None
    is_worker_failure: bool


@dataclass
class ControllerJob:
    """A launched job: what it was launched with, and its state as the controller knows it."""

    job_id: str
    serialized_entrypoint: bytes
    bundle_gcs_path: str
    environment: pb.EnvironmentConfig
    resources: pb.ResourceSpec
    ports: list[str]
    state: int = pb.JOB_STATE_PENDING
    worker_id: str | None = None
    current_attempt_id: int = 0
    attempts: list[Attempt] = field(default_factory=list)
    failure_count: int = 0
    preemption_count: int = 0
    max_retries_failure: int = 0
    max_retries_preemption: int = 100
    started_at_ms: int | None = None
    finished_at_ms: int | None = None
    exit_code: int | None = None
    error: str | None = None
    history: list[int] = field(default_factory=list)
    """Every state it was put in, in order (for the tests; the real controller keeps only the current one)."""

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    def _set(self, state: int) -> None:
        self.state = state
        self.history.append(state)

    def mark_dispatched(self, worker_id: str, now_ms: int) -> None:
        self._set(pb.JOB_STATE_RUNNING)
        self.worker_id = worker_id
        self.started_at_ms = now_ms

    def revert_dispatch(self) -> None:
        self._set(pb.JOB_STATE_PENDING)
        self.worker_id = None
        self.started_at_ms = None

    def transition(
        self,
        state: int,
        now_ms: int,
        *,
        is_worker_failure: bool = False,
        error: str | None = None,
        exit_code: int | None = None,
    ) -> bool:
        """Apply a state as the real Job.transition does; True if the job is to be retried (requeued)."""
        if state in (pb.JOB_STATE_FAILED, pb.JOB_STATE_WORKER_FAILED):
            if is_worker_failure:
                self.preemption_count += 1
                retry = self.preemption_count <= self.max_retries_preemption
            else:
                self.failure_count += 1
                retry = self.failure_count <= self.max_retries_failure
            if retry:
                if self.started_at_ms is not None:
                    self.attempts.append(
                        Attempt(
                            self.current_attempt_id,
                            self.worker_id,
                            self.state,
                            self.started_at_ms,
                            self.finished_at_ms,
                            self.exit_code,
                            self.error,
                            is_worker_failure,
                        )
                    )
                self.current_attempt_id += 1
                self._set(pb.JOB_STATE_PENDING)
                self.worker_id = self.started_at_ms = self.finished_at_ms = self.error = self.exit_code = None
                return True
            self._set(pb.JOB_STATE_WORKER_FAILED if is_worker_failure else pb.JOB_STATE_FAILED)
            self.finished_at_ms, self.error, self.exit_code = now_ms, error, exit_code
            return False
        self._set(state)
        if state == pb.JOB_STATE_SUCCEEDED:
            self.finished_at_ms, self.exit_code = now_ms, exit_code or 0
        elif state == pb.JOB_STATE_KILLED:
            self.finished_at_ms, self.error = now_ms, error
        return False

    def run_job_request(self) -> pb.Worker.RunJobRequest:
        """The RunJob the real controller sends for this job: the environment cut down to its workspace and
        variables, the resources to cpu and memory, and no timeout (pip_packages, extras, disk, device and
        timeout_seconds never reach the worker from it)."""
        return pb.Worker.RunJobRequest(
            job_id=self.job_id,
            attempt_id=self.current_attempt_id,
            serialized_entrypoint=self.serialized_entrypoint,
            # the oneof's workspace is always set, to "" when the launch had none, as the real one sets it
            environment=pb.EnvironmentConfig(
                workspace=self.environment.workspace, env_vars=dict(self.environment.env_vars)
            ),
            bundle_gcs_path=self.bundle_gcs_path,
            resources=pb.ResourceSpec(cpu=self.resources.cpu, memory=self.resources.memory),
            ports=list(self.ports),
        )
