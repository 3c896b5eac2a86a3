"""Wiring a worker's parts: `parts` builds every part of a worker around whatever engines, images, store and
volumes it is given (worker/bootstrap.py gives it Docker's and the settings' store; the unit tests give it fakes),
and the policies the settings describe."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Mapping
from pathlib import Path

from hatchway import __version__
from hatchway.bundles import BundleCache
from hatchway.egress import AddressPolicy, SourceGrant
from hatchway.engines.base import Engine, ImageService
from hatchway.engines.health import EngineHealth
from hatchway.engines.volume_stock import VolumeStock
from hatchway.engines.volumes import LoopVolumes, Volumes, numeric_owner
from hatchway.grading.admission import GradeAdmission
from hatchway.grading.archive import ProblemArchives
from hatchway.grading.runner import GradeRunner
from hatchway.grading.service import GradeService
from hatchway.jobs.cancels import CancelRequests
from hatchway.jobs.control import RunControl
from hatchway.jobs.dispatch import Dispatcher
from hatchway.jobs.event_feed import EventFeed
from hatchway.jobs.lifecycle import JobLifecycle
from hatchway.jobs.listener import StoreListener
from hatchway.jobs.notify import JobSignals
from hatchway.jobs.placement import worker_fit
from hatchway.jobs.policy import Policy
from hatchway.jobs.ports import PortAllocator
from hatchway.jobs.prepare import BundleLimits, Preparer
from hatchway.jobs.recovery import Recovery
from hatchway.jobs.runner import JobRunner
from hatchway.jobs.scheduler import Scheduler
from hatchway.jobs.service import JobService
from hatchway.judge.profiles import resolve_profiles
from hatchway.observability.metrics import Metrics
from hatchway.observability.stats import JobStats
from hatchway.output.artifacts import ArtifactStore
from hatchway.pools import Pools
from hatchway.sandbox.binary import supervisor_path
from hatchway.settings import AGENT_SOURCE, Settings
from hatchway.sources import build_sources
from hatchway.sources.fluster_bundles import gs_directory
from hatchway.sources.fluster_jobs import ORIGIN as FLUSTER_ORIGIN
from hatchway.store.base import JobStore
from hatchway.store.fleet import WorkerInfo
from hatchway.worker.callbacks import CallbackSender
from hatchway.worker.fluster_reports import fluster_link
from hatchway.worker.lease import Lease
from hatchway.worker.loops import Services
from hatchway.worker.maintenance import Maintenance
from hatchway.worker.parts import Parts
from hatchway.worker.registration import ControllerLink, registration

_MAX_SPARE_VOLUMES = 32


def address_policy(settings: Settings) -> AddressPolicy:
    """What addresses URLs given by clients and masters may reach (public ones, and what the operator allows)."""
    return AddressPolicy.of(settings.allowed_private_networks, settings.allowed_private_origins)


def source_grants(settings: Settings) -> dict[str, SourceGrant]:
    """Each job source's grant: its own items, and only they, reach its master's origin, with its key."""
    return {
        source.name: SourceGrant.of(
            source.name,
            source.url,
            {} if source.api_key is None else {"X-API-Key": source.api_key.get_secret_value()},
        )
        for source in settings.sources
    }


def bundle_patterns(settings: Settings) -> list[str]:
    """The URLs bundles may be fetched from: `bundle_allowed_urls`, and where `fluster.gs_command` copies gs://
    bundles to (only Fluster's RunJob names files there; docs/compatibility.md, "Fluster", says who else could)."""
    fluster = settings.fluster
    if fluster is None or fluster.gs_command is None:
        return list(settings.bundle_allowed_urls)
    return [*settings.bundle_allowed_urls, gs_directory(settings.data_dir).as_uri() + "/*"]


def policy_from_settings(
    settings: Settings, *, allowed_runtimes: Collection[str], available_runtimes: Callable[[], Collection[str]]
) -> Policy:
    """The policy `settings` describe, for a worker with these engines."""
    return Policy(
        allowed_images=settings.allowed_images,
        allow_host_network=settings.allow_host_network,
        default_limits=settings.default_limits,
        max_limits=settings.max_limits,
        max_input_bytes=settings.max_input_bytes,
        default_runtime=settings.default_runtime,
        allowed_runtimes=allowed_runtimes,
        gvisor_fallback=settings.gvisor_fallback,
        bundle_allowed_urls=bundle_patterns(settings),
        callback_allowed_urls=settings.callback_allowed_urls,
        available_runtimes=available_runtimes,
        grants=source_grants(settings),
        labels=settings.labels,
        fleet=settings.store_url is not None,
    )


def parts(
    settings: Settings,
    *,
    store: JobStore,
    engines: Mapping[str, Engine],
    images: ImageService,
    bundles: BundleCache,
    volumes: Volumes | None = None,
    supervisor: Callable[[], Path] = supervisor_path,
) -> Parts:
    """Every part of a worker, wired around these engines, images, bundles, store and volumes (the unit tests give
    fakes); `supervisor` finds the sandbox supervisor's binary (the package's own by default)."""
    worker_id = settings.worker_id
    health = EngineHealth(engines, worker_id=worker_id)
    policy = policy_from_settings(
        settings, allowed_runtimes=list(engines), available_runtimes=health.available_runtimes
    )
    signals = JobSignals()
    metrics = Metrics()
    stats = JobStats()
    signals.end_listeners += [metrics.job_finished, stats.job_finished]
    signals.start_listeners.append(metrics.container_started)
    artifacts = ArtifactStore(
        settings.data_dir / "artifacts",
        max_bytes=settings.artifacts_max_bytes,
        max_files=settings.artifacts_max_files,
        retention_s=settings.artifacts_retention_s,
    )
    fluster = settings.fluster
    # Fluster's jobs take ports from its range, exclusive of the second number as the real worker's is.
    own_ranges = {FLUSTER_ORIGIN: (fluster.port_range[0], fluster.port_range[1] - 1)} if fluster else {}
    ports = PortAllocator(*settings.port_range, ranges=own_ranges)
    profiles = resolve_profiles(settings.profiles)
    volumes = volumes or LoopVolumes(settings.data_dir / "volumes", owner=numeric_owner(settings.run_as_user))
    spares = min(settings.max_concurrent_jobs + sum(pool.size for pool in settings.pools), _MAX_SPARE_VOLUMES)
    volume_stock = VolumeStock(volumes, spares=spares)
    controls: dict[str, RunControl] = {}
    bundle_limits = BundleLimits(
        max_unpacked_bytes=settings.bundle_max_unpacked_bytes,
        max_files=settings.bundle_max_files,
        max_build_context_bytes=settings.build_context_max_bytes,
    )
    preparer = Preparer(
        images=images,
        bundles=bundles,
        ports=ports,
        bundle_limits=bundle_limits,
        worker_id=worker_id,
        controller_url=settings.controller_url,
        run_as_user=settings.run_as_user,
    )
    pools = Pools(
        engines=engines,
        volumes=volume_stock,
        images=images,
        configs=settings.pools,
        warm_total=settings.pool_warm_total,
        warm_size=settings.pool_warm_size,
        warm_idle_s=settings.pool_warm_idle_s,
        run_as_user=settings.run_as_user,
        default_limits=settings.default_limits,
        max_limits=settings.max_limits,
        worker_id=worker_id,
        engine_ok=lambda runtime: health.answering.is_set() and health.ok.get(runtime, False),
        slots=settings.max_concurrent_jobs,
    )
    lifecycle = JobLifecycle(
        store=store, signals=signals, health=health, output_dir=settings.data_dir / "output", worker_id=worker_id
    )
    runner = JobRunner(
        store=store,
        engines=engines,
        preparer=preparer,
        volumes=volume_stock,
        pools=pools,
        artifacts=artifacts,
        signals=signals,
        lifecycle=lifecycle,
        worker_id=worker_id,
        choose_runtime=policy.choose_runtime,
        health=health,
    )
    problems = ProblemArchives(bundles=bundles, limits=bundle_limits)
    grader = GradeRunner(
        store=store,
        engines=engines,
        images=images,
        volumes=volume_stock,
        problems=problems,
        lifecycle=lifecycle,
        signals=signals,
        work_dir=settings.data_dir / "work",
        run_as_user=settings.run_as_user,
        worker_id=worker_id,
        choose_runtime=policy.choose_runtime,
        health=health,
    )
    dispatcher = Dispatcher(runner=runner, runners={"grade": grader}, signals=signals, ports=ports, controls=controls)
    scheduler = Scheduler(
        store=store,
        worker_id=worker_id,
        max_concurrent_jobs=settings.max_concurrent_jobs,
        poll_interval_s=settings.poll_interval_s,
        launch=dispatcher.launch,
        ready=health.answering,
        fit=worker_fit(policy, profiles=profiles),
    )
    jobs = JobService(
        store=store,
        policy=policy,
        signals=signals,
        controls=controls,
        wake_scheduler=scheduler.wake,
        worker_id=worker_id,
        max_concurrent_jobs=lambda: scheduler.max_concurrent_jobs,
        next_free_slot=scheduler.next_free_slot,
        sources=[*(source.name for source in settings.sources), AGENT_SOURCE],
    )
    grades = GradeService(
        jobs=jobs,
        admission=GradeAdmission(
            policy=policy,
            profiles=profiles,
            default_limits=settings.grade_default_limits,
            max_limits=settings.grade_max_limits,
            max_input_bytes=settings.max_input_bytes,
        ),
        problems=problems,
        scratch=settings.data_dir / "tmp",
    )
    recovery = Recovery(
        store=store,
        engines=engines,
        worker_id=worker_id,
        resume=lambda job, found: scheduler.adopt(job.id, dispatcher.resume(job, found)),
        signals=signals,
        stale_dirs=(settings.data_dir / "work", settings.data_dir / "output"),
        sweep_volumes=volumes.sweep,
        sweep_images=images.sweep,
    )
    controller: ControllerLink | None = None
    if settings.controller_url:
        controller = ControllerLink(
            url=settings.controller_url,
            worker_id=worker_id,
            registration=lambda: registration(
                settings, __version__, sorted(health.available_runtimes()), sorted(profiles)
            ),
            counts=store.counts,
            jobs=jobs,
            interval_s=settings.heartbeat_interval_s,
        )
        signals.listeners.append(controller.changed)
    fluster_controller = None if settings.fluster is None else fluster_link(settings, settings.fluster, store)
    if fluster_controller is not None:
        signals.listeners.append(fluster_controller.reporter.changed)
    callbacks = CallbackSender(
        store=store,
        secret=settings.callback_secret,
        retry_s=settings.callback_retry_s,
        timeout_s=settings.callback_timeout_s,
        worker_id=worker_id,
        addresses=address_policy(settings),
    )
    signals.end_listeners.append(callbacks.ended)
    pushed_stop = asyncio.Event()
    services = Services(worker_id=worker_id)
    lease = Lease(
        store=store,
        info=lambda: WorkerInfo(
            id=worker_id,
            address=settings.address,
            version=__version__,
            slots=settings.max_concurrent_jobs,
            runtimes=sorted(health.available_runtimes()),
            profiles=sorted(profiles),
            pools=[pool.image for pool in settings.pools],
            labels=settings.labels,
        ),
        lease_s=settings.worker_lease_s,
        signals=signals,
        scheduler=scheduler,
        controls=controls,
        services=services,
    )
    # Streams of events end with the HTTP API, once the drain is over: their readers see jobs stopped by it.
    event_feed = EventFeed(store, signals, stopping=pushed_stop, recheck_s=settings.poll_interval_s)
    cancels = CancelRequests(
        store=store, controls=controls, worker_id=worker_id, check_interval_s=settings.poll_interval_s
    )
    dispatcher.launch_listeners.append(cancels.launched)
    return Parts(
        settings=settings,
        store=store,
        engines=engines,
        images=images,
        bundles=bundles,
        volumes=volumes,
        volume_stock=volume_stock,
        health=health,
        policy=policy,
        signals=signals,
        metrics=metrics,
        stats=stats,
        artifacts=artifacts,
        pools=pools,
        dispatcher=dispatcher,
        scheduler=scheduler,
        recovery=recovery,
        jobs=jobs,
        grades=grades,
        sources=build_sources(
            settings.sources,
            worker_id=worker_id,
            grades=grades,
            redis_url=settings.redis_url,
            fleet=(store.worker_address, settings.peer_token) if settings.store_url else None,
        ),
        controller=controller,
        fluster=fluster_controller,
        callbacks=callbacks,
        lease=lease,
        maintenance=Maintenance(
            store=store,
            events_keep=settings.events_keep,
            artifacts=artifacts,
            images=images,
            bundles=bundles,
            health=health,
        ),
        services=services,
        event_feed=event_feed,
        cancels=cancels,
        listener=StoreListener(
            store=store,
            signals=signals,
            runs_here=controls,
            wake_scheduler=scheduler.wake,
            pulse_feed=event_feed.pulse,
            cancels=cancels,
        ),
        pushed_stop=pushed_stop,
        supervisor=supervisor,
        problems=[],
    )
