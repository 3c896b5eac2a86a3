"""The FastAPI application around a worker."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI

from hatchway import __version__
from hatchway.api import events, grades, images, jobs, system
from hatchway.api.agent_protocol import install_agent_protocol
from hatchway.api.auth import install_authentication
from hatchway.api.cors import install_cors
from hatchway.api.deps import ApiServices
from hatchway.api.errors import document_errors, install_error_handlers
from hatchway.api.fluster import install_fluster
from hatchway.api.grader_pool import install_grader_pool
from hatchway.api.hosts import install_host_check
from hatchway.observability.metrics import MetricsMiddleware
from hatchway.web import dashboard


def create_app(services: ApiServices, *, on_submit: Callable[[], None] = lambda: None) -> FastAPI:
    """An app serving a worker's `services`; starting and stopping the worker is the caller's business.
    `on_submit` is called for each job or grading the app creates (not for one resubmitted with its id): the API
    source counts them."""
    app = FastAPI(
        title="hatchway",
        version=__version__,
        description="Runs jobs in isolated containers and reports exactly what happened.",
    )
    app.state.services = services
    app.state.on_submit = on_submit
    install_error_handlers(app)
    app.include_router(system.router)
    app.include_router(jobs.router)
    app.include_router(images.router)
    app.include_router(grades.router)
    app.include_router(dashboard.router)
    app.include_router(events.router)
    install_fluster(app, services)  # only with the fluster settings block
    install_grader_pool(app)  # before the token check, which must see the path asked for
    install_agent_protocol(app, services, on_submit)  # inside the token check: it reads bodies
    install_authentication(app, services.settings.api_tokens)
    install_host_check(app, services.settings)  # outside the token check: a refused Host is refused first
    document_errors(app)
    install_cors(app, services.settings.cors_origins)  # outside the token and Host checks: it answers preflights
    # Outermost, so that refused requests are counted too.
    app.add_middleware(MetricsMiddleware, metrics=services.system.metrics)
    return app
