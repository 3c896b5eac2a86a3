"""A grade job's life on the in-memory engine: how it ends when the judge itself cannot do its work."""

from __future__ import annotations

from pathlib import Path

from hatchway.engines.fake import FakeEngine, FakeProgram
from hatchway.engines.fake_images import FakeImages
from hatchway.errors import EngineError, EngineUnavailable
from hatchway.grading.service import GradeResult
from hatchway.judge.request import GradeRequest
from hatchway.judge.verdicts import Verdict
from hatchway.models import Job, JobState, Reason
from tests.unit.test_runner import fake_worker

REQUEST = {"language": "python", "code": "print(3)", "tests": [{"input": "", "expected_output": "3\n"}]}


async def grade(tmp_path: Path, engine: FakeEngine, images: FakeImages | None = None) -> tuple[GradeResult, Job]:
    worker = fake_worker(tmp_path, engine, images, run_as_user="65534:65534")
    await worker.start()
    try:
        submitted, _ = await worker.parts.grades.submit(GradeRequest.model_validate(REQUEST))
        result = await worker.parts.grades.wait_final(submitted.id, 10)
        job = await worker.jobs.get(submitted.id)
    finally:
        await worker.shutdown()
    return result, job


async def test_a_grading_runs_to_its_verdict(tmp_path: Path) -> None:
    engine = FakeEngine()
    engine.programs["python3"] = FakeProgram(stdout=b"3\n")  # the syntax check and the run alike
    result, job = await grade(tmp_path, engine)
    assert (result.state, result.verdict, result.passed) == (JobState.SUCCEEDED, Verdict.AC, 1)
    assert job.stdout.startswith("test 1: AC")
    assert engine.sandboxes == {}, "every sandbox is removed"


async def test_a_missing_profile_image_fails_the_grading_with_an_internal_error(tmp_path: Path) -> None:
    engine = FakeEngine()
    result, job = await grade(tmp_path, engine, FakeImages(present=set()))
    assert (result.state, result.verdict) == (JobState.FAILED, Verdict.IE)
    assert job.reason is Reason.IMAGE_NOT_FOUND
    assert "hatchway-profile/python" in (result.message or "")
    assert engine.events == [], "nothing ran"


async def test_an_engine_failure_fails_the_grading_as_the_judges_fault(tmp_path: Path) -> None:
    engine = FakeEngine()
    engine.fail_next = EngineError("the daemon fell over")
    result, job = await grade(tmp_path, engine)
    assert (result.state, result.verdict, result.message) == (
        JobState.FAILED,
        Verdict.IE,
        "the daemon fell over",
    )
    assert job.reason is Reason.ENGINE_ERROR
    assert engine.sandboxes == {}


async def test_a_grading_that_meets_an_outage_is_graded_again_once_the_engine_answers(tmp_path: Path) -> None:
    engine = FakeEngine()
    engine.programs["python3"] = FakeProgram(stdout=b"3\n")
    engine.fail_next = EngineUnavailable("the Docker engine stopped answering (connection refused)")
    result, job = await grade(tmp_path, engine)
    assert (result.state, result.verdict, job.reason) == (JobState.SUCCEEDED, Verdict.AC, None)
    assert engine.sandboxes == {}
