"""Registration with Fluster's controller (issue 19; docs/fluster-plan.md): `RegisterWorker` until an answer says
accepted, again every `register_retry_s` after a failure or refusal, then every `heartbeat_s` as the heartbeat
(Fluster has no other); and what this link to the controller shares with the state reporter (fluster_reports.py):
the client's settings, the count of errors logged once per outage, and the status `/health` shows."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ConfigDict

from hatchway.fluster import methods
from hatchway.fluster.connect import ConnectError, Method, Req, Res, call_async
from hatchway.fluster.proto import cluster_pb2 as pb
from hatchway.models import utcnow
from hatchway.observability.host import host_facts, host_metrics
from hatchway.settings import Settings
from hatchway.settings.fluster import FlusterConfig
from hatchway.sources.base import pause

log = logging.getLogger(__name__)

GIB = 1024**3


class FlusterStatus(BaseModel):
    """The link to Fluster's controller as `/health` shows it."""

    model_config = ConfigDict(frozen=True)

    url: str
    worker_id: str
    address: str
    registered: bool
    """Whether the last RegisterWorker was accepted."""
    last_registered_at: datetime | None
    errors: int
    """Calls to the controller that failed or were refused, registrations and reports alike."""
    last_error: str | None
    reports_sent: int
    reported_event: int
    """The last lifecycle event the state reporter has dealt with (its cursor in the store)."""


class ControllerClient:
    """Calls the controller's methods and keeps count of how they fail: the first failure of an outage is logged as
    a warning, the return as info, and everything in between only counted."""

    def __init__(self, config: FlusterConfig) -> None:
        self.url = config.controller_url.rstrip("/")
        self.timeout_s = config.rpc_timeout_s
        self._headers = {} if config.token is None else {"Authorization": f"Bearer {config.token.get_secret_value()}"}
        self.errors = 0
        self.last_error: str | None = None
        self._down = False

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(headers=self._headers)

    async def call(self, http: httpx.AsyncClient, method: Method[Req, Res], request: Req) -> Res | None:
        """The answer, or None after counting (and logging, once an outage) the failure."""
        try:
            answer = await call_async(http, self.url, method, request, timeout_s=self.timeout_s)
        except ConnectError as exc:
            self.failed(f"{method.name}: {exc.code.value}: {exc.message}")
            return None
        self.answered()
        return answer

    def failed(self, error: str) -> None:
        self.errors += 1
        self.last_error = error
        if not self._down:
            self._down = True
            log.warning(
                "the Fluster controller at %s fails: %s; trying again until it answers",
                self.url,
                error,
                extra={"event": "fluster_controller_down", "url": self.url},
            )

    def answered(self) -> None:
        if self._down:
            self._down = False
            log.info(
                "the Fluster controller at %s answers again",
                self.url,
                extra={"event": "fluster_controller_back", "url": self.url},
            )


class FlusterRegistration:
    """Keeps the controller told of this worker: the named loop `run`."""

    def __init__(
        self,
        *,
        client: ControllerClient,
        request: Callable[[], pb.Controller.RegisterWorkerRequest],
        retry_s: float,
        heartbeat_s: float,
    ) -> None:
        self._client = client
        self._request = request
        self._retry_s = retry_s
        self._heartbeat_s = heartbeat_s
        self.registered = False
        self.last_registered_at: datetime | None = None
        self.attempts = 0

    async def run(self, stop: asyncio.Event) -> None:
        async with self._client.http() as http:
            while not stop.is_set():
                await pause(stop, self._heartbeat_s if await self.register(http) else self._retry_s)

    async def register(self, http: httpx.AsyncClient) -> bool:
        """One RegisterWorker; whether it was accepted."""
        self.attempts += 1
        request = self._request()
        answer = await self._client.call(http, methods.REGISTER_WORKER, request)
        if answer is not None and not answer.accepted:
            self._client.failed("RegisterWorker: not accepted")
        accepted = answer is not None and answer.accepted
        if accepted and not self.registered:
            log.info(
                "registered with the Fluster controller as %s at %s",
                request.worker_id,
                request.address,
                extra={"event": "fluster_registered", "worker_id": request.worker_id, "url": self._client.url},
            )
        self.registered = accepted
        if accepted:
            self.last_registered_at = utcnow()
        return accepted


@dataclass(frozen=True)
class Identity:
    """Who this worker is to the controller."""

    worker_id: str
    address: str
    """host:port of its WorkerService."""


def identity(settings: Settings, config: FlusterConfig) -> Identity:
    """The id (the block's, else the worker's) and address (the block's, else the API's host and port)."""
    address = config.advertise_address or urlsplit(settings.address).netloc
    return Identity(config.worker_id or settings.worker_id, address)


def register_request(who: Identity, controller_url: str) -> pb.Controller.RegisterWorkerRequest:
    """RegisterWorker as the real worker fills it: its CPUs and memory (whole GiB, `<n>g`) as resources, and the
    host's name, address, CPUs and memory as metadata; read now, so a heartbeat carries the current figures."""
    host = host_metrics()
    return pb.Controller.RegisterWorkerRequest(
        worker_id=who.worker_id,
        address=who.address,
        resources=pb.ResourceSpec(cpu=host.cpu_count, memory=f"{max(host.memory_total_bytes // GIB, 1)}g"),
        metadata=pb.WorkerMetadata(
            hostname=host_facts().hostname,
            ip_address=ip_towards(controller_url),
            cpu_count=host.cpu_count,
            memory_bytes=host.memory_total_bytes,
        ),
    )


def ip_towards(url: str) -> str:
    """The address of the interface this host reaches `url`'s host by (a UDP socket "connected" there sends
    nothing); the real worker asks the same of 8.8.8.8, which a host without a route to the internet cannot
    answer."""
    parts = urlsplit(url)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((parts.hostname or "127.0.0.1", parts.port or 80))
            address: str = probe.getsockname()[0]
            return address
    except OSError:
        return "127.0.0.1"
