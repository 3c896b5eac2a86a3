"""URLs in the one form they are both checked and fetched in, their origins, and how messages show them.

A policy that matches one spelling of a URL and a client that opens another can be told apart:
``file:///srv/bundles/%2e%2e/%2e%2e/etc/shadow`` matches ``file:///srv/bundles/*`` as written and opens
``/etc/shadow``. So every URL is normalised first (escaped unreserved characters decoded, dot segments removed),
matched in that form, and fetched in that form.
"""

from __future__ import annotations

import posixpath
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalise(url: str) -> str:
    """`url` as it is matched against policy and then fetched, so that the two cannot differ.

    http and https: `scheme://host[:port]/path[?query]`, the host lower case (IDNA for other scripts), the port only
    when not the scheme's default, escaped unreserved characters in the path decoded (RFC 3986 6.2.2.2) and dot
    segments removed after that; no credentials and no fragment (neither is a place to fetch). file:
    `file:///absolute/path`, percent-decoded, dot segments and repeated slashes removed, and escaped again as
    `Path.as_uri` does. Raises ValueError, saying why, for anything else: a malformed URL, another scheme, an http
    URL without a host, a file URL naming a host or a relative path, or holding a NUL, a query or a fragment.
    """
    scheme = url.partition(":")[0].lower()
    if scheme == "file":
        return _file_url(url)
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(f"scheme {scheme!r} is not supported; use http, https or file")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError) as exc:
        raise ValueError(f"{shown(url)} is malformed: {exc}") from exc
    if not parsed.host:
        raise ValueError(f"{shown(url)} has no host")
    raw_path, _, query = parsed.raw_path.decode("ascii").partition("?")
    path = _remove_dot_segments(_ESCAPE.sub(_decode_unreserved, raw_path or "/"))
    host = f"[{parsed.host}]" if ":" in parsed.host else parsed.host
    port = "" if parsed.port in (None, _DEFAULT_PORTS[scheme]) else f":{parsed.port}"
    return f"{scheme}://{host}{port}{path}" + (f"?{query}" if query else "")


def local_path(url: str) -> Path:
    """The path a normalised file URL names."""
    return Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path))


def origin_of(url: str) -> str:
    """`scheme://host:port` of a URL, the port always given: what credentials and trust are kept by ("" for a URL
    too malformed to have one)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return ""
    try:
        port = parts.port
    except ValueError:
        port = None
    default = _DEFAULT_PORTS.get(parts.scheme, 0)
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{port or default}"


def shown(url: str) -> str:
    """The URL for messages and logs, without credentials or query (signed URLs carry tokens there)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<malformed URL>"
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


@dataclass(frozen=True)
class SourceGrant:
    """What a job source's own items may do that nobody else's may: reach its master's origin (whatever address
    it is on) with the source's credentials. The operator configured that origin; a client or a master naming it
    in a URL of their own gets neither."""

    source: str
    origin: str
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, source: str, url: str, headers: Mapping[str, str]) -> SourceGrant:
        """The grant of `source`, whose master is at `url`."""
        return cls(source, origin_of(url), dict(headers))

    def covers(self, url: str) -> bool:
        """Whether `url` is on the master's origin."""
        return origin_of(url) == self.origin


def _file_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise ValueError(f"a file URL must name a local path (file:///abs/path), not host {parts.netloc!r}")
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise ValueError("a file URL takes no query or fragment")
    try:
        path = urllib.parse.unquote(parts.path, errors="strict")
    except UnicodeDecodeError as exc:
        raise ValueError(f"file URL path {parts.path!r} is not UTF-8 once decoded") from exc
    if "\0" in path:
        raise ValueError("a file URL's path holds a NUL")
    if not path.startswith("/"):
        raise ValueError(f"a file URL must name an absolute path, not {parts.path!r}")
    # normpath keeps a leading "//" (POSIX lets it mean something else): one slash is what open() reads.
    normal = "/" + posixpath.normpath(path).lstrip("/")
    return "file://" + urllib.parse.quote(normal)


def _decode_unreserved(match: re.Match[str]) -> str:
    char = chr(int(match.group(1), 16))
    return char if char in _UNRESERVED else match.group(0).upper()


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 5.2.4 on an absolute path: `/a/b/../c` is `/a/c`, and nothing climbs above `/`."""
    segments = path.split("/")[1:]
    kept: list[str] = []
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment in (".", ".."):
            if segment == ".." and kept:
                kept.pop()
            if last:
                kept.append("")
        else:
            kept.append(segment)
    return "/" + "/".join(kept)
