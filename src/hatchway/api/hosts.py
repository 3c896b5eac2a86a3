"""Which `Host` an open API answers: the defence against DNS rebinding.

A page on another site can make a browser on this machine send requests to 127.0.0.1: its name is made to resolve
to 127.0.0.1 after the page has loaded (DNS rebinding), and the browser, seeing the same origin, lets the page read
the answers. Such requests carry the other site's name in `Host`. An API without tokens has nothing else to tell
them from the user's own, so it answers only requests whose `Host` is a loopback name (`localhost`, 127.0.0.0/8,
`::1`), the address it listens on, the host of `advertise_url`, or one of `api_allowed_hosts`; others get 421.

With `api_tokens` the check is off unless `api_allowed_hosts` is given: a rebinding page has no token (the
dashboard keeps its token in the worker's own origin, which the page is not), so it reaches only the open
endpoints, which hold no data; and a worker with tokens is usually reached by names this list would have to
repeat. `api_allowed_hosts: ["*"]` turns the check off.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from urllib.parse import urlsplit

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from hatchway.api.errors import error_response
from hatchway.settings import Settings, is_loopback

log = logging.getLogger(__name__)

_WILDCARD_ADDRESSES = ("", "0.0.0.0", "::", "[::]")


def host_name(header: str) -> str:
    """The name in a `Host` header, without its port, lower case, without a final dot: `[::1]:8080` -> `::1`."""
    value = header.strip().lower()
    if value.startswith("["):
        name = value[1 : value.find("]")] if "]" in value else value[1:]
    elif value.count(":") == 1:
        name = value.partition(":")[0]
    else:
        name = value  # a bare IPv6 address (not valid in Host, but unambiguous) or a name without a port
    return name.rstrip(".")


class HostCheck:
    """ASGI middleware: a request whose `Host` is not allowed gets 421 `host_not_allowed`, before anything else."""

    def __init__(self, app: ASGIApp, *, allowed: Iterable[str]) -> None:
        self._app = app
        self._allowed = frozenset(host_name(name) for name in allowed)

    def allows(self, header: str) -> bool:
        name = host_name(header)
        return name in self._allowed or is_loopback(name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self._app(scope, receive, send)
            return
        header = next((bytes(value).decode("latin-1") for key, value in scope["headers"] if key == b"host"), None)
        if header is None or self.allows(header):  # no Host at all: no browser sent it (HTTP/1.1 browsers always do)
            await self._app(scope, receive, send)
            return
        log.info(
            "API request refused for its Host",
            extra={"event": "host_refused", "host": header[:200], "path": scope["path"]},
        )
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": "host_not_allowed"})
            return
        message = (
            f"this worker does not answer requests for the host {header[:200]!r}: without api_tokens it answers "
            "only localhost, 127.0.0.0/8, ::1, the address it listens on and api_allowed_hosts (a page on another "
            "site may be reaching it through DNS rebinding); if that name is this worker's, add it to "
            "api_allowed_hosts"
        )
        await error_response(421, "host_not_allowed", message)(scope, receive, send)


def allowed_hosts(settings: Settings) -> list[str] | None:
    """The names an API with these settings answers besides loopback ones; None: every name (no check)."""
    if "*" in settings.api_allowed_hosts or (settings.api_tokens and not settings.api_allowed_hosts):
        return None
    names = list(settings.api_allowed_hosts)
    if settings.host not in _WILDCARD_ADDRESSES and not is_loopback(settings.host):
        names.append(settings.host.strip("[]"))
    if settings.advertise_url:
        advertised = urlsplit(settings.advertise_url).hostname
        if advertised:
            names.append(advertised)
    return names


def install_host_check(app: FastAPI, settings: Settings) -> None:
    """Answer only the `Host`s `allowed_hosts` says, where it says any are to be checked."""
    allowed = allowed_hosts(settings)
    if allowed is not None:
        app.add_middleware(HostCheck, allowed=allowed)
