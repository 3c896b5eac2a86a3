"""Requests the worker makes on someone else's behalf: bundles and problem archives it fetches, callbacks it posts.

Whoever names such a URL (a client, a master) must not reach through the worker what they cannot reach themselves:
the worker's own loopback, the cloud's metadata service, the private networks it sits on. So ``urls`` gives each
URL the one form it is both checked in and fetched by, ``addresses`` says which addresses may be reached (public
ones, and what the operator allows), and ``transport`` holds every request to that, on the address it checked.
"""

from __future__ import annotations

from hatchway.egress.addresses import AddressPolicy, is_public
from hatchway.egress.transport import GuardedTransport, Refused
from hatchway.egress.urls import SourceGrant, local_path, normalise, origin_of, shown

__all__ = [
    "AddressPolicy",
    "GuardedTransport",
    "Refused",
    "SourceGrant",
    "is_public",
    "local_path",
    "normalise",
    "origin_of",
    "shown",
]
