"""Who may call what: bearer tokens with a role, checked before any endpoint runs or any body is read.

`POLICY` below is the whole policy. The check wraps the entire app and goes by the request's method and path
alone, so it covers every route (the OpenAPI document and its browser, and paths no route knows, included) and an
endpoint added later is never open by accident: one `POLICY` does not name needs `read` for GET and HEAD and
`admin` for any other method, until it is given its role here. Roles are ordered, read < submit < admin (see
`Role`).

With no tokens configured every request passes; the worker then listens on a loopback address only, unless
`allow_unauthenticated` is set (`settings.check_exposure`).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI
from starlette.routing import compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from hatchway.api.errors import error_response
from hatchway.errors import InsufficientRole, RequestError, Unauthenticated
from hatchway.settings import ApiToken, Role

log = logging.getLogger(__name__)

POLICY: Mapping[tuple[str, str], Role | None] = {
    ("GET", "/health"): None,  # open: anyone may call it, with or without a token
    # The dashboard's static shell (web/dashboard.py): the same files for everyone, no data. Its page fetches
    # everything it shows from the API with the user's token.
    ("GET", "/"): None,
    ("GET", "/ui/{name}"): None,
    ("GET", "/events"): Role.READ,
    ("GET", "/workers"): Role.READ,  # the fleet, with each worker's address: read, as every status is
    ("POST", "/jobs"): Role.SUBMIT,
    ("POST", "/grade"): Role.SUBMIT,
    ("POST", "/submit"): Role.SUBMIT,  # the grader pool's spelling of POST /grade (api/grader_pool.py)
    ("POST", "/grade/batch"): Role.SUBMIT,
    ("POST", "/grader-pool/grade"): Role.SUBMIT,
    ("DELETE", "/jobs/{job_id}"): Role.ADMIN,
    ("DELETE", "/grade/{job_id}"): Role.ADMIN,
    ("POST", "/images/import"): Role.ADMIN,
}
"""(method, route path) -> the least role that may call it (None: open to anyone). Every other GET needs `read`,
every other method `admin`. Only methods that need `admin` anyway may have a parameter in their path: a path that
matches such a template but is served by another route then needs more, never less. The one exception is the
dashboard's `/ui/{name}`: one path segment under a prefix no other route uses (tests/unit/test_dashboard.py checks
every route of the app)."""

STATE_KEY = "token_name"
"""Where a request's state holds the name of the token it came with (never the token)."""

_REALM = 'Bearer realm="hatchway"'
_TEMPLATES = [(method, compile_path(path)[0], role) for (method, path), role in POLICY.items()]


def required_role(method: str, path: str) -> Role | None:
    """The least role a request for `path` (or a route template) needs; None: it needs no token."""
    method = "GET" if method.upper() == "HEAD" else method.upper()
    for listed, template, role in _TEMPLATES:
        if listed == method and template.match(path):
            return role
    return Role.READ if method == "GET" else Role.ADMIN


class Tokens:
    """The configured tokens; finds the one a request presents in constant time."""

    def __init__(self, tokens: Sequence[ApiToken]) -> None:
        # Digests, so every comparison is of 32 bytes and its time says nothing about a token's length.
        self._known = [(_digest(token.token.get_secret_value().encode()), token) for token in tokens]

    def __bool__(self) -> bool:
        return bool(self._known)

    def identify(self, presented: bytes) -> ApiToken | None:
        """The token `presented` is, or None. Compares against every token, never stopping at a match."""
        digest = _digest(presented)
        matches = [token for known, token in self._known if hmac.compare_digest(digest, known)]
        return matches[0] if matches else None


def _digest(secret: bytes) -> bytes:
    return hashlib.sha256(secret).digest()


class BearerAuth:
    """ASGI middleware: a request must carry `Authorization: Bearer <token>` with a role its endpoint allows.

    401 (with `WWW-Authenticate: Bearer`) without a token or with an unknown one, 403 when the token's role is
    too weak; both answer `{"error": {...}}` like every other client error. An accepted request's token name is
    in `request.state.token_name`.
    """

    def __init__(self, app: ASGIApp, *, tokens: Sequence[ApiToken]) -> None:
        self._app = app
        self._tokens = Tokens(tokens)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self._app(scope, receive, send)
            return
        method = scope.get("method", "GET")
        needed = required_role(method, scope["path"])
        if needed is None:
            await self._app(scope, receive, send)
            return
        refusal, token = self._check(scope, method, needed)
        if refusal is not None:
            log.info(
                "API request refused",
                extra={
                    "event": "auth_refused",
                    "method": method,
                    "path": scope["path"],
                    "status": refusal.status,
                    "client": (scope.get("client") or ("?",))[0],
                    "token_name": token.label if token else None,
                },
            )
            await self._refuse(scope, receive, send, refusal, needed)
            return
        assert token is not None
        scope.setdefault("state", {})[STATE_KEY] = token.label
        if needed is Role.ADMIN:
            log.info(
                "admin API call",
                extra={"event": "admin_call", "method": method, "path": scope["path"], "token_name": token.label},
            )
        await self._app(scope, receive, send)

    def _check(self, scope: Scope, method: str, needed: Role) -> tuple[RequestError | None, ApiToken | None]:
        presented = _bearer(scope)
        if presented is None:
            missing = "this worker needs an API token: send the header `Authorization: Bearer <token>`"
            return Unauthenticated(missing), None
        token = self._tokens.identify(presented)
        if token is None:
            return Unauthenticated("the API token is not valid on this worker"), None
        if not token.role.allows(needed):
            return InsufficientRole(method, scope["path"], needed=needed, role=token.role), token
        return None, token

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, refusal: RequestError, needed: Role) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": refusal.code})
            return
        details = {"required_role": str(needed)}
        if isinstance(refusal, InsufficientRole):
            details["role"] = str(refusal.role)
        response = error_response(refusal.status, refusal.code, str(refusal), details)
        if isinstance(refusal, Unauthenticated):
            invalid = ', error="invalid_token"' if _bearer(scope) is not None else ""
            response.headers["WWW-Authenticate"] = _REALM + invalid
        await response(scope, receive, send)


def _bearer(scope: Scope) -> bytes | None:
    """The token of the request's `Authorization: Bearer` header, or None."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = bytes(value).strip().partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                return token.strip()
            return None
    return None


def install_authentication(app: FastAPI, tokens: Sequence[ApiToken]) -> None:
    """With `tokens`, make every request but the open ones need a bearer token, and say so in the OpenAPI
    document (a bearer scheme, and each operation's `x-required-role`). Without, change nothing."""
    if not tokens:
        return
    app.add_middleware(BearerAuth, tokens=tokens)
    build = app.openapi

    def openapi() -> dict[str, Any]:
        document = build()  # FastAPI builds it once and caches it; marking it again changes nothing
        document.setdefault("components", {}).setdefault("securitySchemes", {})["bearer"] = {
            "type": "http",
            "scheme": "bearer",
        }
        for path, operations in document.get("paths", {}).items():
            for method, operation in operations.items():
                role = required_role(method, path)
                operation["security"] = [] if role is None else [{"bearer": []}]
                operation["x-required-role"] = None if role is None else str(role)
        return document

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to amend the document
