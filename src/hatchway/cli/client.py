"""Talking to a running worker's HTTP API: its address and token, one JSON request, a followed log stream.

httpx is imported when a request is made, not before: `hatchway run` and `--help` never pay for it.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hatchway.cli.exits import CommandError, Exit

if TYPE_CHECKING:
    import httpx

DEFAULT_URL = "http://127.0.0.1:8080"


class ClientError(CommandError):
    """The worker refused the request, or could not be reached (code `Exit.UNREACHABLE`); the message says why."""


@dataclass(frozen=True)
class Remote:
    """A running worker: its address, and the API token to show it (None: send none)."""

    url: str
    token: str | None = None

    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"} if self.token else {}


def remote_options(*, inherited: bool = False) -> argparse.ArgumentParser:
    """The options every client command takes: `--url` and `--token`, defaulting to their variables.

    `inherited`: for an action under a command that takes them already (`images --url U list`): no defaults of
    its own, which would override what was given before the action's name.
    """
    options = argparse.ArgumentParser(add_help=False)
    url_default = os.environ.get("HATCHWAY_URL", DEFAULT_URL)
    token_default = os.environ.get("HATCHWAY_TOKEN") or None
    if inherited:
        url_default = token_default = argparse.SUPPRESS
    options.add_argument("--url", default=url_default, help="the worker's address")
    options.add_argument(
        "--token",
        default=token_default,
        help="the worker's API token (or $HATCHWAY_TOKEN, which other users cannot see in the process list)",
    )
    return options


def remote(args: argparse.Namespace) -> Remote:
    """The worker the command line names."""
    return Remote(url=args.url.rstrip("/"), token=args.token or None)


def call(method: str, worker: Remote, path: str, *, headers: dict[str, str] | None = None, **kwargs: Any) -> Any:
    """The worker's JSON answer to one request; ClientError, saying why, when there is none."""
    import httpx

    try:
        response = httpx.request(
            method, f"{worker.url}{path}", headers={**(headers or {}), **worker.headers()}, timeout=_timeout(), **kwargs
        )
    except httpx.HTTPError as exc:
        raise _unreachable(worker, exc) from exc
    if response.status_code >= 400:
        raise ClientError(_problem(response, worker))
    return response.json()


def follow(worker: Remote, job_id: str, stream: str, *, tail: int | None = None, live: bool = True) -> Iterator[str]:
    """The job's output on `stream` (stdout, stderr, both, build) as text, as the worker sends it; with `live`,
    until the job has ended."""
    import httpx

    params: dict[str, Any] = {"stream": stream, "follow": str(live).lower()}
    if tail is not None:
        params["tail"] = tail
    url = f"{worker.url}/jobs/{job_id}/logs"
    try:
        with httpx.stream("GET", url, params=params, headers=worker.headers(), timeout=_timeout()) as response:
            if response.status_code >= 400:
                response.read()
                raise ClientError(_problem(response, worker))
            yield from response.iter_text()
    except httpx.HTTPError as exc:
        raise _unreachable(worker, exc) from exc


def _timeout() -> httpx.Timeout:
    import httpx

    return httpx.Timeout(30.0, read=None)  # a waiting or following request may stay silent for long


def _unreachable(worker: Remote, exc: Exception) -> ClientError:
    return ClientError(f"cannot reach the worker at {worker.url}: {exc}", Exit.UNREACHABLE)


def _problem(response: httpx.Response, worker: Remote) -> str:
    try:
        error = response.json()["error"]
        code, message = error["code"], error["message"]
    except (ValueError, KeyError, TypeError):
        return f"{response.status_code}: {response.text[:500]}"
    if code == "unauthenticated":
        if worker.token is None:
            return "the server needs a token: pass --token or set HATCHWAY_TOKEN"
        return "the server does not accept this token (401): check --token or HATCHWAY_TOKEN"
    if code == "insufficient_role":
        return f"the token's role may not do this (403): {message}"
    return f"{response.status_code} {code}: {message}"
