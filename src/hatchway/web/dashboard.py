"""The dashboard's shell: its page at `/`, its scripts and styles at `/ui/{name}`, from this package's `static/`.

The shell is the same for everyone and holds no data, so it loads without a token (auth.py lists exactly these
two paths as open): everything the page shows it fetches from the JSON API with the token its user gave, which
the API checks as for any client. The files are read once, at import: a request's path is only ever a key in
that table, never a path on disk, and an installed wheel serves what it shipped (package data).

Every answer carries a strict Content-Security-Policy: scripts, styles and connections from this origin only,
no inline script or style, no frames, no form posts elsewhere. The page writes untrusted text (output, labels,
messages) with `textContent` only; the policy is the second wall if that ever slips.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from typing import Final

from fastapi import APIRouter, HTTPException, Request, Response

__all__ = ["CONTENT_SECURITY_POLICY", "STATIC_FILES", "router"]

CONTENT_SECURITY_POLICY: Final = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # Revalidate every time (an ETag makes that a 304), so a worker upgraded in place never serves stale scripts.
    "Cache-Control": "no-cache",
}
_MEDIA_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}
_INDEX: Final = "index.html"


@dataclass(frozen=True)
class StaticFile:
    """One file of the shell, in memory."""

    content: bytes
    media_type: str
    etag: str


def _load() -> dict[str, StaticFile]:
    files: dict[str, StaticFile] = {}
    for entry in (resources.files(__package__ or "hatchway.web") / "static").iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if not entry.is_file() or suffix not in _MEDIA_TYPES:
            continue
        content = entry.read_bytes()
        etag = '"' + hashlib.sha256(content).hexdigest()[:32] + '"'
        files[entry.name] = StaticFile(content, _MEDIA_TYPES[suffix], etag)
    if _INDEX not in files:
        raise RuntimeError(f"the dashboard's {_INDEX} is missing from the package: it was installed without it")
    return files


STATIC_FILES: Final = _load()
"""File name -> file: the whole shell (flat: `/ui/{name}` is one path segment, which auth.py relies on)."""

router = APIRouter(include_in_schema=False)


@router.get("/")
async def index(request: Request) -> Response:
    """The page app; its views (`#/`, `#/jobs/{id}`, `#/grade/{id}`, `#/system`) are routed in the browser."""
    return _serve(request, STATIC_FILES[_INDEX])


@router.get("/ui/{name}")
async def static_file(name: str, request: Request) -> Response:
    """A script, style sheet or icon of the dashboard."""
    found = STATIC_FILES.get(name)
    if found is None or name == _INDEX:
        raise HTTPException(404, f"the dashboard has no file {name!r}")
    return _serve(request, found)


def _serve(request: Request, file: StaticFile) -> Response:
    headers = {**_HEADERS, "ETag": file.etag}
    if request.headers.get("if-none-match") == file.etag:
        return Response(status_code=304, headers=headers)
    return Response(file.content, media_type=file.media_type, headers=headers)
