"""A Fluster job's ids and states as hatchway keeps them (sources/fluster_jobs.py)."""

from __future__ import annotations

from hatchway.fluster.proto import cluster_pb2 as pb
from hatchway.models import JobState
from hatchway.sources.fluster_jobs import external_id, fluster_ids, fluster_state


def test_a_job_and_attempt_make_one_external_id_and_back() -> None:
    assert external_id("root/child#x", 2) == "root/child#x#2"
    assert fluster_ids(external_id("root/child#x", 2)) == ("root/child#x", 2)


def test_every_state_has_the_schema_s_name() -> None:
    names = {state: pb.JobState.Name(fluster_state(state)) for state in JobState}
    assert names == {
        JobState.QUEUED: "JOB_STATE_PENDING",
        JobState.BUILDING: "JOB_STATE_BUILDING",
        JobState.RUNNING: "JOB_STATE_RUNNING",
        JobState.SUCCEEDED: "JOB_STATE_SUCCEEDED",
        JobState.FAILED: "JOB_STATE_FAILED",
        JobState.KILLED: "JOB_STATE_KILLED",
    }
