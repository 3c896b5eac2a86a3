"""The pool manager's decisions, on the in-memory engine: what a pool serves, filling, reuse, replacement, warming."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hatchway.engines.base import image_name
from hatchway.engines.fake import FakeEngine, run_result
from hatchway.engines.fake_images import FakeImages
from hatchway.engines.volume_stock import VolumeStock
from hatchway.engines.volumes import DirectoryVolumes
from hatchway.models import Job, JobRequest, JobState, ResolvedLimits, utcnow
from hatchway.pools import Pools
from hatchway.sandbox.protocol import RunResult, RunStatus
from hatchway.settings import PoolConfig, Settings
from hatchway.worker.wiring import policy_from_settings
from tests.conftest import until

LIMITS = ResolvedLimits(timeout_s=10, memory_mb=64, cpus=1, pids=16, output_bytes=1024, disk_mb=64)


def make_job(**fields: Any) -> Job:
    settings = Settings(allow_host_network=True, default_limits=LIMITS.model_dump())
    policy = policy_from_settings(settings, allowed_runtimes=["docker"], available_runtimes=lambda: {"docker"})
    spec = policy.admit(JobRequest(image=fields.pop("image", "img"), command=["true"], **fields)).spec
    return Job(
        id="job-1", state=JobState.BUILDING, created_at=utcnow(), spec=spec, image=spec.image, labels={}, priority=0
    )


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def images() -> FakeImages:
    return FakeImages()


def make_pools(tmp_path: Path, engine: FakeEngine, images: FakeImages, **settings: Any) -> Pools:
    values: dict[str, Any] = {"configs": [], "warm_total": 0, "warm_size": 1, "warm_idle_s": 60}
    values.update(settings)
    return Pools(
        engines={"docker": engine},
        volumes=VolumeStock(DirectoryVolumes(tmp_path / "volumes", owner=None), spares=4),
        images=images,
        run_as_user="65534:65534",
        default_limits=LIMITS,
        max_limits=LIMITS,
        worker_id="unit",
        engine_ok=lambda runtime: True,
        **values,
    )


@pytest.fixture
async def running(tmp_path: Path, engine: FakeEngine, images: FakeImages) -> AsyncIterator[Pools]:
    pools = make_pools(tmp_path, engine, images, configs=[PoolConfig(image="img", size=2, reuse_jobs=1)])
    stop = asyncio.Event()
    task = asyncio.create_task(pools.run(stop))
    yield pools
    stop.set()
    await task
    await pools.close()
    assert engine.sandboxes == {}, "closing the pools removes every container"


async def filled(pools: Pools, idle: int) -> None:
    async with asyncio.timeout(5):
        while True:
            changed = pools.next_change()
            if pools.status()[0].idle >= idle:
                return
            await changed.wait()


def test_image_names_are_normalised() -> None:
    assert image_name("busybox") == "busybox:latest"
    assert image_name("registry:5000/team/app") == "registry:5000/team/app:latest"
    assert image_name("app:1.2") == "app:1.2"
    assert image_name("app@sha256:abc") == "app@sha256:abc"


@pytest.mark.parametrize(
    "fields",
    [
        {"network": "host"},
        {"workdir": "/srv"},
        {"limits": {"cpus": 0.5}},
        {"image": None, "build": {"dockerfile": "FROM img"}, "bundle_url": "https://example.com/b.zip"},
    ],
    ids=["host-network", "workdir", "cpus", "build-with-bundle"],
)
def test_jobs_a_pool_cannot_serve_as_a_fresh_container_would_take_the_cold_path(
    tmp_path: Path, engine: FakeEngine, images: FakeImages, fields: dict[str, Any]
) -> None:
    pools = make_pools(tmp_path, engine, images)
    assert pools.key_for(make_job(**fields), "docker") is None
    assert pools.key_for(make_job(), "docker") is not None


def test_a_job_run_as_its_image_runs_it_takes_the_cold_path(
    tmp_path: Path, engine: FakeEngine, images: FakeImages
) -> None:
    """A pooled container's supervisor runs argv as given, in the pool's working directory: not the image's own
    command nor its WORKDIR, which a job with `image_defaults` (the worker-agent protocol's) runs as."""
    pools = make_pools(tmp_path, engine, images)
    job = make_job()
    as_its_image = job.model_copy(update={"spec": job.spec.model_copy(update={"image_defaults": True})})
    assert pools.key_for(as_its_image, "docker") is None


async def test_a_pool_fills_to_its_size_and_holds_its_image(running: Pools, images: FakeImages) -> None:
    await filled(running, 2)
    status = running.status()[0]
    assert (status.image, status.idle, status.busy, status.origin) == ("img:latest", 2, 0, "config")
    assert images.held == {"img:latest": 1}


async def test_a_container_serves_reuse_jobs_plus_one_then_is_replaced(running: Pools, engine: FakeEngine) -> None:
    await filled(running, 2)
    first = await running.claim(make_job(), "docker")
    assert first is not None and running.status()[0].busy == 1
    first.result = _ok()
    await running.release(first)
    assert first in _idle(running), "reused once (reuse_jobs: 1)"
    again = await running.claim(make_job(), "docker")
    while again is not first:  # the other idle one may come first
        assert again is not None
        again.result = _ok()
        await running.release(again)
        again = await running.claim(make_job(), "docker")
    first.result = _ok()
    await running.release(first)
    assert first not in _idle(running), "its second job was its last"
    await filled(running, 2)
    assert running.status()[0].jobs_served >= 2


async def test_a_container_a_job_was_stopped_in_is_never_reused(running: Pools) -> None:
    await filled(running, 2)
    slot = await running.claim(make_job(), "docker")
    assert slot is not None
    slot.result, slot.stopped = _ok(), True
    await running.release(slot)
    assert slot not in _idle(running)


async def test_a_job_asking_for_more_disk_than_the_pool_has_is_not_served(running: Pools) -> None:
    await filled(running, 2)
    assert await running.claim(make_job(limits={"disk_mb": 65}), "docker") is None


async def test_an_idle_container_that_died_is_not_handed_out(running: Pools, engine: FakeEngine) -> None:
    await filled(running, 2)
    for slot in _idle(running):
        slot.checked_at -= 60  # idle long enough to be pinged first
        await engine.remove(slot.handle)  # it died
    assert await running.claim(make_job(), "docker") is None
    await filled(running, 2)
    fresh = await running.claim(make_job(), "docker")
    assert fresh is not None
    await running.release(fresh)


async def test_an_engine_restart_replaces_every_container(running: Pools) -> None:
    await filled(running, 2)
    before = set(_idle(running))
    running.engine_restarted()
    await filled(running, 2)
    assert not before & set(_idle(running))


async def test_an_image_that_ran_recently_gets_a_warm_pool_within_the_total(
    tmp_path: Path, engine: FakeEngine, images: FakeImages
) -> None:
    pools = make_pools(tmp_path, engine, images, warm_total=1, warm_size=1)
    assert await pools.claim(make_job(image="a"), "docker") is None
    assert await pools.claim(make_job(image="b"), "docker") is None
    assert [(status.image, status.origin, status.size) for status in pools.status()] == [("a:latest", "warm", 1)]


async def test_a_job_finding_none_idle_waits_for_a_start_no_other_job_waits_for(
    tmp_path: Path, engine: FakeEngine, images: FakeImages
) -> None:
    """Under load a one-use pool is empty: a job takes the container being started for it, not a cold one of its
    own (which would only slow both); a second job, with no start left for it, goes cold at once."""
    pools = make_pools(tmp_path, engine, images, configs=[PoolConfig(image="img", size=1)])
    stop = asyncio.Event()
    task = asyncio.create_task(pools.run(stop))
    try:
        engine.opening = asyncio.Event()
        await _starting(pools)
        first = asyncio.create_task(pools.claim(make_job(), "docker"))
        await until(lambda: _waiting(pools) == 1, "the job never waited for the start under way")
        assert not first.done(), "it waits for the start under way"
        assert await pools.claim(make_job(), "docker") is None, "no start is left for a second job"
        engine.opening.set()
        slot = await asyncio.wait_for(first, 5)
        assert slot is not None and pools.status()[0].busy == 1
        await pools.release(slot)
    finally:
        stop.set()
        await task
        await pools.close()


async def test_a_job_waiting_for_a_start_goes_cold_when_the_pools_stop(
    tmp_path: Path, engine: FakeEngine, images: FakeImages
) -> None:
    pools = make_pools(tmp_path, engine, images, configs=[PoolConfig(image="img", size=1)])
    stop = asyncio.Event()
    task = asyncio.create_task(pools.run(stop))
    engine.opening = asyncio.Event()
    await _starting(pools)
    waiting = asyncio.create_task(pools.claim(make_job(), "docker"))
    await until(lambda: _waiting(pools) == 1, "the job never waited for the start under way")
    stop.set()  # while it waits: it must give up and go cold
    await task
    assert await asyncio.wait_for(waiting, 5) is None
    engine.opening.set()
    await pools.close()
    assert engine.sandboxes == {}


async def _starting(pools: Pools) -> None:
    """Until the fill loop has a start under way."""
    async with asyncio.timeout(5):
        while True:
            changed = pools.next_change()
            if pools.status()[0].starting:
                return
            await changed.wait()


def _waiting(pools: Pools) -> int:
    """How many claims wait for a container being started."""
    return sum(pool.waiting for pool in pools._pools.values())


def _idle(pools: Pools) -> list[Any]:
    return [slot for pool in pools._pools.values() for slot in pool.idle]


def _ok() -> RunResult:
    return run_result("job-1", RunStatus.EXITED, 0)


def test_a_dockerfile_job_is_keyed_by_the_name_its_image_gets(
    tmp_path: Path, engine: FakeEngine, images: FakeImages
) -> None:
    pools = make_pools(tmp_path, engine, images)
    key = pools.key_for(make_job(image=None, build={"dockerfile": "FROM img"}), "docker")
    assert key is not None and key.image == images.build_name("FROM img", {}, "", "docker")


async def test_a_start_that_raises_anything_fails_clearly_and_the_pool_fills_again(
    tmp_path: Path, engine: FakeEngine, images: FakeImages
) -> None:
    """An error no one translated (tarfile's KeyError for an image whose /etc/passwd was a symlink) left the pool's
    start counted for ever: the pool never filled again and said nothing."""
    engine.fail_next = KeyError("linkname '/nonexistent/passwd' not found")
    pools = make_pools(tmp_path, engine, images, configs=[PoolConfig(image="img", size=1)])
    stop = asyncio.Event()
    task = asyncio.create_task(pools.run(stop))
    try:
        await until(lambda: pools.status()[0].last_error is not None, "the failed start was never reported")
        status = pools.status()[0]
        assert status.starting == 0 and "unexpectedly: KeyError" in (status.last_error or "")
        left = [path.name for path in (tmp_path / "volumes").iterdir()]
        assert all(name.startswith("spare-") for name in left), f"the failed start's disk was kept: {left}"
        await filled(pools, 1)  # after the first back-off (1 s)
        assert pools.status()[0].starting == 0 and pools.status()[0].last_error is None
    finally:
        stop.set()
        await task
        await pools.close()
