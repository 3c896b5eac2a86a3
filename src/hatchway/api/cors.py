"""Cross-origin calls from browsers: which other web origins' pages may call the API (`cors_origins`).

A page served from another origin (the worker-agent system's dashboard, on its own port) may read the API's
answers, and send what needs a preflight (JSON bodies, a token), only where this worker names its origin. None is
named by default. The middleware sits outside the token and Host checks: a preflight carries no token and is
answered here, and a refusal (401, 403, 421) carries the CORS headers, so that the page can read why.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

_METHODS = ["GET", "POST", "DELETE"]
_HEADERS = ["Authorization", "Content-Type"]
_PREFLIGHT_CACHE_S = 600


def install_cors(app: FastAPI, origins: Sequence[str]) -> None:
    """Answer CORS for `origins` (`*`: any); without any, add nothing: browsers then keep other origins out."""
    if not origins:
        return
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(origins),
        allow_methods=_METHODS,
        allow_headers=_HEADERS,
        max_age=_PREFLIGHT_CACHE_S,
    )
