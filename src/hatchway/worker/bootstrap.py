"""Building a worker from settings, in one place: the embedded defaults are SQLite under the data directory and the
local Docker engine, with runc as `docker` and gVisor's runsc as `gvisor` where policy allows them.

`build_worker` makes the Docker engines, image service and bundle cache and the store `store_url` names; `parts`
(worker/wiring.py) wires every other part around them, and a `Worker` runs them."""

from __future__ import annotations

import functools

from hatchway.bundles import BundleCache
from hatchway.engines.base import Engine
from hatchway.engines.builder import BuildHost
from hatchway.engines.docker import DockerEngine
from hatchway.engines.docker_host import DockerHost
from hatchway.engines.docker_images import DockerImages
from hatchway.engines.images import ImageManager
from hatchway.engines.offline_etc import OfflineEtcFiles
from hatchway.engines.volumes import LoopVolumes
from hatchway.jobs.policy import image_matches, url_matches
from hatchway.sandbox.binary import installed_supervisor
from hatchway.settings import Settings
from hatchway.store.base import JobStore
from hatchway.store.sqlite import SqliteStore
from hatchway.worker.wiring import address_policy, bundle_patterns, parts, source_grants
from hatchway.worker.worker import Worker


def build_worker(settings: Settings, store: JobStore | None = None) -> Worker:
    """A worker on `settings`; `store` replaces the SQLite store (e.g. an in-memory one for `hatchway run`)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    host = DockerHost(docker_url=settings.docker_url, max_concurrent_jobs=settings.max_concurrent_jobs)
    runtimes = {"docker": None, "gvisor": settings.gvisor_runtime}
    # Read and hashed once: every sandbox mounts the same copy.
    supervisor = functools.cache(functools.partial(installed_supervisor, settings.data_dir / "bin"))
    offline_etc = OfflineEtcFiles(settings.data_dir / "etc")
    engines: dict[str, Engine] = {
        name: DockerEngine(
            host,
            name=name,
            worker_id=settings.worker_id,
            runtime=runtimes[name],
            supervisor=supervisor,
            offline_etc=offline_etc,
        )
        for name in settings.allowed_runtimes
    }
    images = DockerImages(
        host,
        ImageManager(
            host.api,
            state_path=settings.data_dir / "images.json",
            pull_timeout_s=settings.image_pull_timeout_s,
            build_timeout_s=settings.build_timeout_s,
            cache_budget_bytes=settings.image_cache_bytes,
            image_allowed=functools.partial(image_matches, settings.allowed_images),
            builds=BuildHost(
                worker_id=settings.worker_id,
                # The same place as jobs' disks: a build's disk a crash left is swept with theirs at the next start.
                volumes=LoopVolumes(settings.data_dir / "volumes", owner=None),
                runtimes={name: runtimes[name] for name in settings.allowed_runtimes},
                capabilities=tuple(settings.build_capabilities),
                disk_unlimited=settings.build_disk_unlimited,
                offline_etc=offline_etc,
            ),
        ),
    )
    bundles = BundleCache(
        settings.data_dir / "bundles",
        max_download_bytes=settings.bundle_max_bytes,
        download_timeout_s=settings.bundle_timeout_s,
        budget_bytes=settings.bundle_cache_bytes,
        url_allowed=functools.partial(url_matches, bundle_patterns(settings)),
        addresses=address_policy(settings),
        grants=source_grants(settings),
    )
    built = parts(
        settings,
        store=store or store_from_settings(settings),
        engines=engines,
        images=images,
        bundles=bundles,
        supervisor=supervisor,
    )
    return Worker(built, on_close=host.close)


def store_from_settings(settings: Settings) -> JobStore:
    """The store `store_url` names (PostgreSQL, shared by a fleet), else SQLite under the data directory."""
    if settings.store_url is not None:
        from hatchway.store.postgres import PostgresStore  # the driver loads only where it is used

        return PostgresStore(settings.store_url)
    return SqliteStore(settings.data_dir / "hatchway.db")
