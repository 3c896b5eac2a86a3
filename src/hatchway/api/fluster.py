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
from hatchway.fluster.connect import ConnectError, NotConnect, Reply
from hatchway.fluster.methods import WORKER_METHODS, WORKER_SERVICE
from hatchway.sources.fluster import FlusterWorker
from hatchway.sources.fluster_bundles import GsFetcher, gs_directory

_CONNECT_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


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
        gs=gs,
    )
    app.state.fluster = worker
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
                body=await request.body(),
                content_encoding=request.headers.get("content-encoding"),
                protocol_version=request.headers.get("connect-protocol-version"),
            )
            answer = await worker.handle(method, message)
        except NotConnect as refusal:
            return _send(connect.refusal_reply(refusal))
        except ConnectError as error:
            return _send(connect.error_reply(error))
        return _send(connect.message_reply(answer, encoding))

    app.include_router(router)


def _send(reply: Reply) -> Response:
    return Response(reply.body, reply.status, headers=dict(reply.headers), media_type=reply.content_type)
