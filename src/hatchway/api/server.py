"""The HTTP API as a job source: clients push jobs and gradings to it, and it serves them (uvicorn) from the
worker's start until its drain is over, so that they see their jobs end."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import uvicorn

from hatchway.api import create_app
from hatchway.api.deps import ApiServices
from hatchway.errors import ConfigError
from hatchway.jobs.service import JobService
from hatchway.settings import API_SOURCE
from hatchway.sources.base import SourceStatus

_GRACEFUL_S = 5  # how long open connections (a followed log, an event stream) may take to end at the close


class ApiSource:
    """The worker's HTTP API (`hatchway.api`) on `host`:`port`, serving the worker's `services`."""

    kind = "http"
    pushes = True

    def __init__(self, services: ApiServices, *, host: str, port: int) -> None:
        self.name = API_SOURCE
        self.url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        self._claims = 0
        self._services = services
        self._last_error: str | None = None
        self.failure: ConfigError | None = None
        """Why it could not serve, if it could not (the worker drains then, as for any background service that
        dies)."""
        self._config = uvicorn.Config(
            create_app(services, on_submit=self._submitted),
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=_GRACEFUL_S,
        )

    def _submitted(self) -> None:
        self._claims += 1

    async def run(self, jobs: JobService, stop: asyncio.Event) -> None:
        """Serve until `stop`, then close: no new connections, open ones get a few seconds to end."""
        server = _Server(self._config)
        closing = asyncio.create_task(_exit_on(stop, server), name=f"source-{self.name}-stop")
        try:
            await server.serve()
        except SystemExit as exc:  # uvicorn's way to say it cannot listen; it has logged why
            self._last_error = f"cannot listen on {self.url}"
            self.failure = ConfigError(f"host, port: {self._last_error} (see the error logged before this)")
            raise self.failure from exc
        finally:
            closing.cancel()
            await self._services.peers.close()

    def status(self) -> SourceStatus:
        return SourceStatus(
            name=self.name,
            kind=self.kind,
            url=self.url,
            pushes=self.pushes,
            last_poll_at=None,
            claims=self._claims,
            reports_sent=0,
            reports_pending=0,
            errors=0,
            backoff_s=0.0,
            last_error=self._last_error,
        )


class _Server(uvicorn.Server):
    """uvicorn, leaving SIGTERM and SIGINT alone: whoever runs the worker handles them (`hatchway serve`: the
    first drains the worker, and only then does the API close)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _exit_on(stop: asyncio.Event, server: uvicorn.Server) -> None:
    await stop.wait()
    server.should_exit = True
