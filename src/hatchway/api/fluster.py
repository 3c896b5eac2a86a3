"""Fluster's `WorkerService` over Connect RPC on the worker's own port (issue 19): `POST
/fluster.cluster.WorkerService/<Method>`, binary or JSON, answered by `sources.fluster.FlusterWorker`. Mounted
only when the `fluster` settings block is set; its paths cannot clash with hatchway's own.

Who may call it: these routes sit behind the same token check as every other (`api/auth.py`), and no entry of its
policy names them, so with `api_tokens` configured they need an `admin` token. Fluster's controller sends no
token, so a worker it dispatches to runs without tokens, and RunJob then runs whatever code anyone who reaches the
port posts: `settings.check_exposure` refuses to serve that beyond loopback unless `allow_unauthenticated` says it
is meant (docs/compatibility.md, "Fluster", says how to fence it).
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request, Response

from hatchway.api.deps import ApiServices
from hatchway.fluster import connect
from hatchway.fluster.connect import Code, ConnectError, NotConnect, Reply
from hatchway.fluster.methods import WORKER_METHODS, WORKER_SERVICE
from hatchway.jobs.prepare import BundleLimits
from hatchway.sources.fluster import FlusterWorker
from hatchway.sources.fluster_bundles import GsFetcher, gs_directory

_CONNECT_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
_MIN_BODY_BYTES = 1024 * 1024


def install_fluster(app: FastAPI, services: ApiServices) -> None:
    """Serve WorkerService on `app` if the settings turn Fluster on."""
    config = services.settings.fluster
    if config is None:
        return
    settings = services.settings
    gs = (
        None
        if config.gs_command is None
        else GsFetcher(config.gs_command, gs_directory(settings.data_dir), settings.bundle_timeout_s)
    )
    worker = FlusterWorker(
        jobs=services.jobs,
        artifacts=services.artifacts,
        config=config,
        worker_id=services.system.worker_id,
        host_network=settings.allow_host_network,
        bundles=services.bundles,
        bundle_limits=BundleLimits(
            max_unpacked_bytes=settings.bundle_max_unpacked_bytes, max_files=settings.bundle_max_files
        ),
        gs=gs,
    )
    app.state.fluster = worker
    # A RunJob's entrypoint becomes a file of its job (base64: a third more), which max_input_bytes caps anyway.
    max_bytes = max(settings.max_input_bytes * 2, _MIN_BODY_BYTES)
    router = APIRouter(include_in_schema=False)

    @router.api_route(f"/{WORKER_SERVICE}/{{name}}", methods=_CONNECT_METHODS)
    async def worker_service(name: str, request: Request) -> Response:
        method = WORKER_METHODS.get(f"/{WORKER_SERVICE}/{name}")
        if method is None:
            return _send(connect.refusal_reply(NotConnect(404, f"no method {name!r} in {WORKER_SERVICE}")))
        try:
            message, encoding = connect.read_request(
                method,
                http_method=request.method,
                content_type=request.headers.get("content-type"),
                body=await _body(request, max_bytes) if request.method == "POST" else b"",
                content_encoding=request.headers.get("content-encoding"),
                protocol_version=request.headers.get("connect-protocol-version"),
                max_bytes=max_bytes,
            )
            answer = await worker.handle(method, message)
        except NotConnect as refusal:
            return _send(connect.refusal_reply(refusal))
        except ConnectError as error:
            return _send(connect.error_reply(error))
        return _send(connect.message_reply(answer, encoding))

    app.include_router(router)


async def _body(request: Request, max_bytes: int) -> bytes:
    """The request's body, read no further than `max_bytes` (`resource_exhausted` past it)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise ConnectError(Code.RESOURCE_EXHAUSTED, f"the request is larger than {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _send(reply: Reply) -> Response:
    return Response(reply.body, reply.status, headers=dict(reply.headers), media_type=reply.content_type)
