"""Placement (issue 18): what a job's `placement` asks of a worker, who refuses it and who takes it in, and what a
worker claims from a queue it shares: only what it can run."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from hatchway.engines.fake import FakeEngine, FakeProgram
from hatchway.errors import NotAllowed
from hatchway.grading.admission import GradeAdmission
from hatchway.jobs.placement import can_run, worker_fit
from hatchway.jobs.policy import Policy
from hatchway.judge.limits import GradeLimits
from hatchway.judge.profiles import DEFAULT_PROFILES
from hatchway.judge.request import GradeRequest
from hatchway.models import JobRequest, JobSpec, JobState
from hatchway.store.memory import MemoryStore
from hatchway.worker.worker import Worker
from tests.unit.test_runner import fake_worker

MakePolicy = Callable[..., Policy]
MakeRequest = Callable[..., JobRequest]
GPU = {"gpu": "a100"}
GRADING = {"language": "c", "code": "int main(){}", "tests": [{"input": "", "expected_output": ""}]}


def test_placement_keys_and_values_are_checked_as_labels_are(make_request: MakeRequest) -> None:
    assert make_request(placement={"zone": "eu-1", "app.io/tier": "x" * 256}).placement["zone"] == "eu-1"
    for bad in ({"-zone": "a"}, {"zone": "x" * 257}, {f"k{i}": "v" for i in range(33)}):
        with pytest.raises(ValidationError, match="placement"):
            make_request(placement=bad)


def test_a_worker_alone_refuses_a_placement_its_labels_do_not_meet(
    make_policy: MakePolicy, make_request: MakeRequest
) -> None:
    alone = make_policy(labels={"gpu": "t4", "zone": "a"})
    with pytest.raises(NotAllowed, match=r"placement gpu=a100 is not met by this worker's labels \(gpu=t4, zone=a\)"):
        alone.admit(make_request(placement=GPU))
    assert alone.admit(make_request(placement={"zone": "a"})).spec.placement == {"zone": "a"}
    assert alone.admit(make_request()).spec.placement == {}


def test_a_worker_of_a_fleet_takes_in_a_job_placed_elsewhere_and_says_what_it_waits_for(
    make_policy: MakePolicy, make_request: MakeRequest
) -> None:
    member = make_policy(labels={"zone": "a"}, fleet=True)
    assert member.admit(make_request(placement=GPU)).spec.placement == GPU
    assert member.placement_wait(GPU) == "waits for a worker whose labels include gpu=a100"
    assert member.placement_wait({"zone": "a"}) is None and member.placement_wait({}) is None
    with pytest.raises(NotAllowed, match="image"):  # any other reason to refuse still holds
        make_policy(allowed_images=["alpine:*"], fleet=True).admit(make_request(image="ubuntu:24.04", placement=GPU))


def test_a_grading_s_placement_is_admitted_and_refused_as_a_job_s(make_policy: MakePolicy) -> None:
    def admission(**policy: Any) -> GradeAdmission:
        return GradeAdmission(
            policy=make_policy(**policy),
            profiles=DEFAULT_PROFILES,
            default_limits=GradeLimits(),
            max_limits=GradeLimits(),
            max_input_bytes=10_000,
        )

    request = GradeRequest.model_validate({**GRADING, "placement": GPU})
    spec, _ = admission(labels=GPU).admit(request)
    assert spec.placement == GPU
    with pytest.raises(NotAllowed, match="placement gpu=a100"):
        admission().admit(request)
    assert admission(fleet=True).admit(request)[0].placement == GPU


def spec_of(policy: Policy, **request: Any) -> JobSpec:
    return policy.admit(JobRequest(command=["true"], **{"image": "img", **request})).spec


def test_a_worker_can_run_a_job_only_with_its_images_runtime_and_profiles(make_policy: MakePolicy) -> None:
    anything = make_policy(allowed_images=["*"], available_runtimes=lambda: ("docker", "gvisor"))
    narrow = make_policy(allowed_images=["img"], available_runtimes=lambda: ("docker",))
    assert can_run(narrow, spec_of(anything), profiles=())
    assert not can_run(narrow, spec_of(anything, image="other"), profiles=()), "an image it does not allow"
    assert not can_run(narrow, spec_of(anything, runtime="gvisor"), profiles=()), "a runtime it does not have now"
    dockerfile = "FROM other\nRUN true\n"
    assert not can_run(narrow, spec_of(anything, image=None, build={"dockerfile": dockerfile}), profiles=())
    fallback = make_policy(allowed_images=["*"], available_runtimes=lambda: ("docker",), gvisor_fallback=True)
    assert can_run(fallback, spec_of(anything, runtime="gvisor"), profiles=()), "it falls back to docker"

    grading = GradeAdmission(
        policy=anything,
        profiles=DEFAULT_PROFILES,
        default_limits=GradeLimits(),
        max_limits=GradeLimits(),
        max_input_bytes=10_000,
    )
    spec, _ = grading.admit(GradeRequest.model_validate(GRADING))
    assert can_run(anything, spec, profiles=DEFAULT_PROFILES)
    assert not can_run(anything, spec, profiles={"python": DEFAULT_PROFILES["python"]}), "no profile c"
    assert not can_run(narrow, spec, profiles=DEFAULT_PROFILES), "its profile's image is not allowed"


def test_a_worker_alone_asks_only_placement_of_what_it_claims(make_policy: MakePolicy) -> None:
    assert worker_fit(make_policy(labels=GPU), profiles=()).runs is None
    member = worker_fit(make_policy(labels=GPU, allowed_images=["img"], fleet=True), profiles=())
    assert member.labels == GPU and member.runs is not None
    assert member.admits(spec_of(make_policy(fleet=True), placement=GPU))
    assert not member.admits(spec_of(make_policy(fleet=True), image="other", placement=GPU))
    assert not member.admits(spec_of(make_policy(fleet=True), placement={"gpu": "t4"}))


# Two workers on one store, each claiming what it can run


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[tuple[Worker, Worker]]:
    """Workers `a` (labels zone=a, image img only) and `b` (zone=b, any image) on one store, as with store_url."""
    store = MemoryStore()
    workers: list[Worker] = []
    for name, images in (("a", "img"), ("b", "*")):
        (tmp_path / name).mkdir()
        engine = FakeEngine()
        engine.programs["ok"] = FakeProgram(stdout=name.encode())
        worker = fake_worker(
            tmp_path / name,
            engine,
            store=store,
            worker_id=f"worker-{name}",
            labels={"zone": name},
            allowed_images=images,
            store_url="postgresql://the-fleet-s-database/hatchway",  # a fleet: the store itself is given
        )
        await worker.start()
        workers.append(worker)
    yield workers[0], workers[1]
    for worker in workers:
        await worker.shutdown()


async def test_jobs_run_only_on_a_worker_they_fit_and_one_no_worker_fits_waits(fleet: tuple[Worker, Worker]) -> None:
    a, b = fleet
    nowhere, _ = await a.jobs.submit(JobRequest(image="img", command=["ok"], placement={"zone": "c"}, priority=9))
    for_b, _ = await a.jobs.submit(JobRequest(image="img", command=["ok"], placement={"zone": "b"}))
    for_a, _ = await a.jobs.submit(JobRequest(image="img", command=["ok"], placement={"zone": "a"}))
    other, _ = await b.jobs.submit(JobRequest(image="img2", command=["ok"]))  # an image a does not allow
    assert (nowhere.message, for_b.message) == (
        "waits for a worker whose labels include zone=c",
        "waits for a worker whose labels include zone=b",
    )
    assert for_a.message is None
    ran = {
        "for-b": await b.jobs.wait_final(for_b.id, 10),
        "for-a": await a.jobs.wait_final(for_a.id, 10),
        "other": await b.jobs.wait_final(other.id, 10),
    }
    assert {name: (job.state, job.worker_id, job.stdout) for name, job in ran.items()} == {
        "for-b": (JobState.SUCCEEDED, "worker-b", "b"),
        "for-a": (JobState.SUCCEEDED, "worker-a", "a"),
        "other": (JobState.SUCCEEDED, "worker-b", "b"),
    }
    assert ran["for-b"].message is None, "the wait's message goes once it is claimed"
    # The best job in the queue, which no worker fits, was passed over by both, not in their way; it waits.
    waiting = await a.jobs.get(nowhere.id)
    assert (waiting.state, waiting.worker_id, waiting.message) == (JobState.QUEUED, None, nowhere.message)
    assert (await a.jobs.kill(nowhere.id, 1)).state == JobState.KILLED
