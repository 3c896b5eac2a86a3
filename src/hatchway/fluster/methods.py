"""The methods of Fluster's two services that a worker answers or calls, with their paths and messages.

The names and message types are the schema's (proto/cluster.proto); tests/unit/test_fluster_connect.py checks each
against the generated descriptors, so a change to the .proto that these do not follow fails there.
"""

from __future__ import annotations

from typing import Any

from hatchway.fluster.connect import Method
from hatchway.fluster.proto import cluster_pb2 as pb

WORKER_SERVICE = "fluster.cluster.WorkerService"
CONTROLLER_SERVICE = "fluster.cluster.ControllerService"

RUN_JOB = Method(WORKER_SERVICE, "RunJob", pb.Worker.RunJobRequest, pb.Worker.RunJobResponse)
GET_JOB_STATUS = Method(WORKER_SERVICE, "GetJobStatus", pb.Worker.GetJobStatusRequest, pb.JobStatus)
LIST_JOBS = Method(WORKER_SERVICE, "ListJobs", pb.Worker.ListJobsRequest, pb.Worker.ListJobsResponse)
FETCH_LOGS = Method(WORKER_SERVICE, "FetchLogs", pb.Worker.FetchLogsRequest, pb.Worker.FetchLogsResponse)
KILL_JOB = Method(WORKER_SERVICE, "KillJob", pb.Worker.KillJobRequest, pb.Empty)
HEALTH_CHECK = Method(WORKER_SERVICE, "HealthCheck", pb.Empty, pb.Worker.HealthResponse)

REGISTER_WORKER = Method(
    CONTROLLER_SERVICE,
    "RegisterWorker",
    pb.Controller.RegisterWorkerRequest,
    pb.Controller.RegisterWorkerResponse,
)
REPORT_JOB_STATE = Method(
    CONTROLLER_SERVICE,
    "ReportJobState",
    pb.Controller.ReportJobStateRequest,
    pb.Controller.ReportJobStateResponse,
)

WORKER_METHODS: dict[str, Method[Any, Any]] = {
    method.path: method for method in (RUN_JOB, GET_JOB_STATUS, LIST_JOBS, FETCH_LOGS, KILL_JOB, HEALTH_CHECK)
}
"""WorkerService's methods by path."""
CONTROLLER_METHODS: dict[str, Method[Any, Any]] = {
    method.path: method for method in (REGISTER_WORKER, REPORT_JOB_STATE)
}
"""The ControllerService methods a worker calls, by path."""
