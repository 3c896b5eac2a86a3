"""A Fluster job's ids and states as hatchway keeps them (sources/fluster_jobs.py)."""

from __future__ import annotations

from hatchway.fluster.proto import cluster_pb2 as pb
from hatchway.models import JobState, Reason
from hatchway.sources.fluster_jobs import external_id, fluster_error, fluster_exit_code, fluster_ids, fluster_state
from tests.unit.test_pools import make_job


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


def test_an_end_is_said_in_the_real_worker_s_words_to_the_controller_and_its_clients_alike() -> None:
    ended = make_job().model_copy(update={"state": JobState.FAILED})
    timed_out = ended.model_copy(update={"reason": Reason.TIMEOUT, "exit_code": 137, "message": "ran past 5 s"})
    exited = ended.model_copy(update={"reason": Reason.EXIT_CODE, "exit_code": 3})
    lost = ended.model_copy(update={"reason": Reason.WORKER_LOST, "message": "its worker was lost"})
    assert (fluster_error(timed_out), fluster_exit_code(timed_out)) == ("Timeout exceeded", -1)
    assert (fluster_error(exited), fluster_exit_code(exited)) == ("Exit code: 3", 3)
    assert (fluster_error(lost), fluster_exit_code(lost)) == ("its worker was lost", None)
