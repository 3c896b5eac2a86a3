"""An httpx transport that connects only where the address policy allows, to the very address it checked.

Checking a host name and then letting the client resolve it again can be told apart (DNS rebinding: public the
first time, 127.0.0.1 the second). So each request's host is resolved here, once; every address it resolves to
must be allowed; and the connection goes to that address, with the request's `Host` header and TLS server name
(SNI, and the certificate check) still the host name the URL gave. Redirects are the caller's to follow, each hop
a request of its own through here.

Clients using it must be made with `trust_env=False`: a proxy from the environment would connect for them, where
the check never looks.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl

import httpx

from hatchway.egress.addresses import AddressPolicy, IPAddress
from hatchway.egress.urls import origin_of

_DEFAULT_PORTS = {"http": 80, "https": 443}


class Refused(Exception):
    """A request the address policy does not let out: its host resolves to an address that is not public and not
    allowed. The message says which, for the worker's log; whoever asked is told less."""


class GuardedTransport(httpx.AsyncBaseTransport):
    """Sends each request to a checked address of its host (see the module's docstring).

    Origins in `trusted` (a job source's own master, for that source's requests) and those the policy allows by
    name go out unchecked, resolved as usual: the operator named them. `verify` is how TLS certificates are checked
    (httpx's default: the system's trusted authorities)."""

    def __init__(
        self, policy: AddressPolicy, *, trusted: frozenset[str] = frozenset(), verify: ssl.SSLContext | bool = True
    ) -> None:
        self._policy = policy
        self._trusted = trusted
        # No connection is kept for another request: the pool knows a pinned connection by its address only, and
        # two host names on one address must not share one whose TLS session was checked for the other. These
        # requests are few (a download and its redirects, one callback), so nothing is lost.
        self._inner = httpx.AsyncHTTPTransport(verify=verify, limits=httpx.Limits(max_keepalive_connections=0))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if origin_of(str(request.url)) in self._trusted or self._policy.allows_origin(str(request.url)):
            return await self._inner.handle_async_request(request)
        addresses = await _resolve(request.url)
        refused = [address for address in addresses if not self._policy.allows(address)]
        if refused:
            raise Refused(
                f"{request.url.host} is {refused[0]}, not a public address, and allowed_private_networks and "
                f"allowed_private_origins do not allow it (they allow: {self._policy.describe()})"
            )
        failed: httpx.ConnectError | None = None
        for address in addresses:  # in the resolver's order, as a client would try them
            try:
                return await self._inner.handle_async_request(_pinned(request, address))
            except httpx.ConnectError as exc:
                failed = exc
        assert failed is not None, "a host resolves to at least one address"
        raise failed

    async def aclose(self) -> None:
        await self._inner.aclose()


async def _resolve(url: httpx.URL) -> list[IPAddress]:
    """The addresses `url`'s host resolves to, each once, in the resolver's order."""
    port = url.port or _DEFAULT_PORTS.get(url.scheme, 80)
    try:
        found = await asyncio.get_running_loop().getaddrinfo(url.host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise httpx.ConnectError(f"cannot resolve {url.host}: {exc}") from exc
    addresses: list[IPAddress] = []
    for *_, sockaddr in found:
        address = ipaddress.ip_address(str(sockaddr[0]).partition("%")[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise httpx.ConnectError(f"{url.host} resolves to no address")
    return addresses


def _pinned(request: httpx.Request, address: IPAddress) -> httpx.Request:
    """`request` sent to `address`: the URL names the address, the Host header (already set from the URL) and the
    TLS server name stay the host's."""
    extensions = dict(request.extensions)
    host = request.url.host
    if request.url.scheme == "https" and not _is_address(host):
        extensions["sni_hostname"] = host
    return httpx.Request(
        request.method,
        request.url.copy_with(host=str(address)),
        headers=request.headers,
        stream=request.stream,
        extensions=extensions,
    )


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
