"""/grade and /profiles: judge a submission against tests, and the language profiles it may be written in."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from hatchway.api.deps import GradesDep, ImagesDep, OnSubmitDep, SettingsDep
from hatchway.api.jobs import WaitFlag, WaitSeconds, wait_bound
from hatchway.grading import grader_pool
from hatchway.grading.service import GradeResult, result_of
from hatchway.judge.profiles import TOOLS, Profile
from hatchway.judge.request import GradeRequest

router = APIRouter(tags=["grading"])


class ProfileInfo(BaseModel):
    """A language profile, and whether its image is on this worker."""

    profile: Profile
    image_present: bool
    tools: list[str]


@router.post(
    "/grade",
    status_code=201,
    response_model=GradeResult,
    responses={200: {"model": GradeResult, "description": "A grading with this `id` existed already."}},
)
async def create_grade(
    body: GradeRequest,
    response: Response,
    grades: GradesDep,
    settings: SettingsDep,
    *,
    on_submit: OnSubmitDep,
    wait: WaitFlag = False,
    wait_s: WaitSeconds = None,
) -> GradeResult:
    """Queue a grading: compile once, run every test, judge each output. It is a job too (see /jobs)."""
    timeout_s = wait_bound(settings, wait_s)
    result, created = await grades.submit(body)
    if created:
        on_submit()
    else:
        response.status_code = 200
    if wait:
        result = await grades.wait_final(result.id, timeout_s)
    return result


@router.get("/grade/{job_id}", response_model=GradeResult)
async def get_grade(job_id: str, grades: GradesDep) -> GradeResult | JSONResponse:
    """A grading's state and, once it has ended, its verdicts; for one submitted in the grader pool's dialect,
    with the pool's fields beside (api/grader_pool.py)."""
    job = await grades.job(job_id)
    if grader_pool.speaks_pool(job):
        return JSONResponse(grader_pool.answer(job))
    return result_of(job)


@router.delete("/grade/{job_id}", response_model=GradeResult)
async def kill_grade(
    job_id: str,
    grades: GradesDep,
    settings: SettingsDep,
    grace_s: Annotated[float | None, Query(ge=0, le=3600)] = None,
) -> GradeResult:
    """Cancel a queued grading or stop a running one; 409 if it had ended."""
    return await grades.kill(job_id, settings.kill_grace_s if grace_s is None else grace_s)


@router.get("/profiles", response_model=list[ProfileInfo])
async def list_profiles(grades: GradesDep, images: ImagesDep) -> list[ProfileInfo]:
    """The language profiles gradings may name, with the build tools that map to each."""
    profiles = list(grades.profiles.values())
    present = await asyncio.gather(*(images.present(profile.image) for profile in profiles))
    return [
        ProfileInfo(
            profile=profile,
            image_present=ok,
            tools=sorted(tool for tool, name in TOOLS.items() if name == profile.name),
        )
        for profile, ok in zip(profiles, present, strict=True)
    ]
