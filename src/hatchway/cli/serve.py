"""`hatchway serve`: the worker with its HTTP API as a job source, until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal

from hatchway.api.deps import ApiServices
from hatchway.api.server import ApiSource
from hatchway.settings import Settings, check_exposure, is_loopback
from hatchway.worker.bootstrap import build_worker
from hatchway.worker.worker import Worker

log = logging.getLogger(__name__)

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


async def serve(settings: Settings) -> bool:
    """Run the worker and its API until told to stop; every job's final state is recorded on the way out. Returns
    whether a second signal cut the drain short (jobs' containers are left to the next start's recovery then).

    The first SIGTERM or SIGINT (or a background service that dies) drains the worker, the API answering until
    the drain is over; a second signal stops at once. Raises ConfigError, before anything starts, for an open API
    on an address that is not loopback, and after the drain if the API could not listen.
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
    api = ApiSource(ApiServices.of(worker.parts), host=settings.host, port=settings.port)
    worker.add_source(api)
    stopping = _Stopping(worker)
    loop = asyncio.get_running_loop()
    for signum in _SIGNALS:
        loop.add_signal_handler(signum, stopping.signalled)
    try:
        await worker.start(on_fatal=stopping.drain)
        await stopping.done.wait()
    finally:
        for signum in _SIGNALS:
            loop.remove_signal_handler(signum)
        stopping.cancel()
        await worker.close()
    if api.failure is not None:
        raise api.failure
    return stopping.forced


class _Stopping:
    """The first signal drains the worker, then `done` is set; a second one sets `done` at once."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker
        self._draining: asyncio.Task[None] | None = None
        self.done = asyncio.Event()
        self.forced = False
        """Whether a second signal cut the drain short."""

    def signalled(self) -> None:
        if self._draining is None:
            self.drain()
        elif not self.done.is_set():
            log.warning("stopping now, without waiting for jobs", extra={"event": "worker_stop_now"})
            self.forced = True
            self.done.set()

    def drain(self) -> None:
        if self._draining is None:
            self._draining = asyncio.get_running_loop().create_task(self._drain(), name="drain")

    def cancel(self) -> None:
        """Cut short a drain under way (after a second signal)."""
        if self._draining is not None:
            self._draining.cancel()

    async def _drain(self) -> None:
        try:
            await self._worker.drain()
        finally:
            self.done.set()
