"""Building a worker from settings: the embedded defaults are SQLite under the data directory and the local
Docker engine, with runc as `docker` and gVisor's runsc as `gvisor` where policy allows them."""

from __future__ import annotations

import functools

from hatchway.bundles import BundleCache
from hatchway.engines.base import Engine
from hatchway.engines.docker import DockerEngine
from hatchway.engines.docker_host import DockerHost
from hatchway.engines.docker_images import DockerImages
from hatchway.engines.images import ImageManager
from hatchway.engines.offline_etc import OfflineEtcFiles
from hatchway.jobs.policy import image_matches, url_matches
from hatchway.sandbox.binary import installed_supervisor
from hatchway.settings import Settings
from hatchway.store.base import JobStore
from hatchway.store.sqlite import SqliteStore
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
        ),
    )
    bundles = BundleCache(
        settings.data_dir / "bundles",
        max_download_bytes=settings.bundle_max_bytes,
        download_timeout_s=settings.bundle_timeout_s,
        budget_bytes=settings.bundle_cache_bytes,
        # A master's archives come from the master: they get its key, as its API does.
        credentials={
            source.url: {"X-API-Key": source.api_key.get_secret_value()}
            for source in settings.sources
            if source.api_key is not None
        },
        url_allowed=functools.partial(url_matches, settings.bundle_allowed_urls),
    )
    return Worker(
        settings=settings,
        store=store or SqliteStore(settings.data_dir / "hatchway.db"),
        engines=engines,
        images=images,
        bundles=bundles,
        on_close=host.close,
    )
