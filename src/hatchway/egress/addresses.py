"""Which addresses the worker may reach on someone else's behalf: public ones, and what the operator allows.

Refused unless allowed: loopback, private (RFC 1918, unique local), link-local (where cloud metadata services
answer), shared address space (CGNAT, 100.64/10), multicast, unspecified, reserved, and the ranges set aside for
documentation and benchmarks; in IPv6 also site-local. An IPv6 address that is another spelling of an IPv4 one
(IPv4-mapped, NAT64) is judged as that IPv4 address, and one tunnelling to an IPv4 address (6to4, Teredo) is
refused unless both are public.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from hatchway.egress.urls import origin_of

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_SHARED = ipaddress.ip_network("100.64.0.0/10")
"""Carrier-grade NAT: not global, yet not `is_private` in every Python."""
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
"""The well-known NAT64 prefix: its last 32 bits are the IPv4 address reached."""


def is_public(address: IPAddress) -> bool:
    """Whether `address` is an ordinary public unicast address (see the module's docstring)."""
    if isinstance(address, ipaddress.IPv6Address):
        same = _same_ipv4(address)
        if same is not None:
            return is_public(same)
        # 6to4 and Teredo tunnel to the IPv4 address they carry: both it and the IPv6 address must be public.
        carried = [address.sixtofour, *(address.teredo or ())]
        if any(inner is not None and not is_public(inner) for inner in carried) or address.is_site_local:
            return False
    elif address in _SHARED:
        return False
    return address.is_global and not (
        address.is_multicast
        or address.is_private
        or address.is_reserved
        or address.is_loopback
        or address.is_link_local
        or address.is_unspecified
    )


def _same_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one is only another spelling of (IPv4-mapped, NAT64's well-known prefix)."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


@dataclass(frozen=True)
class AddressPolicy:
    """Public addresses, plus the `networks` and exact `origins` the operator allows (`allowed_private_networks`,
    `allowed_private_origins`). With neither, only public addresses."""

    networks: tuple[IPNetwork, ...] = ()
    origins: frozenset[str] = frozenset()

    @classmethod
    def of(cls, networks: Iterable[str] = (), origins: Iterable[str] = ()) -> AddressPolicy:
        """From the settings' strings: CIDRs (`127.0.0.0/8`, `fd00::/8`) and origins (`http://host:port`)."""
        return cls(tuple(ipaddress.ip_network(net) for net in networks), frozenset(map(origin_of, origins)))

    def allows_origin(self, url: str) -> bool:
        """Whether `url`'s origin is one the operator allows whatever address it resolves to."""
        return origin_of(url) in self.origins

    def allows(self, address: IPAddress) -> bool:
        """Whether `address` may be connected to: a public one, or one in an allowed network."""
        if is_public(address):
            return True
        forms: list[IPAddress] = [address]
        if isinstance(address, ipaddress.IPv6Address) and (same := _same_ipv4(address)) is not None:
            forms.append(same)
        return any(form in network for form in forms for network in self.networks if form.version == network.version)

    def describe(self) -> str:
        """What is allowed besides public addresses, for logs."""
        allowed = [str(network) for network in self.networks] + sorted(self.origins)
        return ", ".join(allowed) or "nothing"
