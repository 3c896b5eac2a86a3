"""Which queued jobs this worker claims: in a fleet, only those it can run, so that each waits for a worker that can
(issue 18). Its `Fit` goes to the store's `claim_next`."""

from __future__ import annotations

from collections.abc import Collection

from hatchway.errors import BuildFailed, HatchwayError
from hatchway.jobs.policy import Policy, images_needed
from hatchway.models import JobSpec
from hatchway.store.base import Fit


def worker_fit(policy: Policy, *, profiles: Collection[str]) -> Fit:
    """What this worker claims: the jobs whose placement its labels meet; in a fleet, of those, only the ones it
    can run now (`can_run`). A worker alone with its queue claims whatever else it is given: what it could not run
    was refused at submission, and a job that became so since (a runtime that broke) is claimed and ends saying
    why, rather than waiting for a worker that will never come."""
    if not policy.fleet:
        return Fit(labels=policy.labels)
    known = frozenset(profiles)
    return Fit(labels=policy.labels, runs=lambda spec: can_run(policy, spec, profiles=known))


def can_run(policy: Policy, spec: JobSpec, *, profiles: Collection[str]) -> bool:
    """Whether this worker can run `spec` now: every image it needs allowed, its runtime allowed and working (or
    a fallback), and, for a grading, its language profiles (and its checker's) among this worker's `profiles`."""
    try:
        policy.choose_runtime(spec.runtime)
    except HatchwayError:
        return False
    try:
        images = images_needed(spec.image, spec.build)
    except BuildFailed:
        return True  # a Dockerfile admitted once reads; were it not so, its build here would say why, once
    if spec.grade is not None:
        images.append(spec.grade.profile.image)
        needed = [spec.grade.profile.name]
        if spec.grade.checker_profile is not None:
            images.append(spec.grade.checker_profile.image)
            needed.append(spec.grade.checker_profile.name)
        if any(name not in profiles for name in needed):
            return False
    return all(policy.image_allowed(image) for image in images)
