"""`hatchway serve`: the worker behind its HTTP API, until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
from types import FrameType

import uvicorn

from hatchway.api import create_app
from hatchway.bootstrap import build_worker
from hatchway.settings import Settings, check_exposure, is_loopback
from hatchway.worker import Worker

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """uvicorn, but the first SIGTERM/SIGINT drains the worker before the HTTP side closes."""

    def __init__(self, config: uvicorn.Config, worker: Worker) -> None:
        super().__init__(config)
        self._worker = worker
        self._draining: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._draining is None:
            self.begin_drain()
        else:  # a second signal: stop now
            self.force_exit = True
            self.should_exit = True

    def begin_drain(self) -> None:
        async def drain() -> None:
            await self._worker.drain()
            self.should_exit = True

        self._draining = asyncio.get_running_loop().create_task(drain(), name="drain")


async def serve(settings: Settings) -> None:
    """Run the worker and its API until told to stop; every job's final state is recorded on the way out.

    Raises ConfigError, before anything starts, for an open API on an address that is not loopback.
    """
    check_exposure(settings)
    if settings.api_tokens:
        holders = [f"{token.label} ({token.role})" for token in settings.api_tokens]
        log.info("the API needs a bearer token", extra={"event": "api_tokens", "tokens": holders})
    elif not is_loopback(settings.host):
        log.warning(
            "serving an open API on %s: allow_unauthenticated is set and no api_tokens are configured",
            settings.host,
            extra={"event": "api_unauthenticated"},
        )
    worker = build_worker(settings)
    config = uvicorn.Config(
        create_app(worker),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=5,
    )
    server = _Server(config, worker)
    await worker.start(on_fatal=server.begin_drain)
    try:
        await server.serve()
    finally:
        await worker.drain()
        await worker.close()
