"""Client commands against a running worker's HTTP API."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from hatchway.errors import HatchwayError

DEFAULT_URL = "http://127.0.0.1:8080"
_TIMEOUT = httpx.Timeout(30.0, read=None)


class ClientError(HatchwayError):
    """The worker could not be reached, or refused the request; the message says why."""


@dataclass(frozen=True)
class Remote:
    """A running worker: its address, and the API token to show it (None: send none)."""

    url: str
    token: str | None = None

    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"} if self.token else {}


def remote_options() -> argparse.ArgumentParser:
    """The options every client command takes: `--url` and `--token`, defaulting to their variables."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--url", default=os.environ.get("HATCHWAY_URL", DEFAULT_URL), help="the worker's address")
    options.add_argument(
        "--token",
        default=os.environ.get("HATCHWAY_TOKEN") or None,
        help="the worker's API token (or $HATCHWAY_TOKEN, which other users cannot see in the process list)",
    )
    return options


def remote(args: argparse.Namespace) -> Remote:
    """The worker the command line names."""
    return Remote(url=args.url, token=args.token or None)


def submit(worker: Remote, body: dict[str, Any], *, wait: bool) -> int:
    job = call("POST", worker, "/jobs", json=body, params={"wait": "true"} if wait else None)
    _print(job)
    return 0


def status(worker: Remote, job_id: str) -> int:
    _print(call("GET", worker, f"/jobs/{job_id}"))
    return 0


def kill(worker: Remote, job_id: str, grace_s: float | None) -> int:
    params = None if grace_s is None else {"grace_s": grace_s}
    _print(call("DELETE", worker, f"/jobs/{job_id}", params=params))
    return 0


def list_jobs(worker: Remote, state: str | None, labels: list[str] | None, limit: int) -> int:
    params: dict[str, Any] = {"limit": limit, "label": labels or []}
    if state:
        params["state"] = state
    page = call("GET", worker, "/jobs", params=params)
    for job in page["jobs"]:
        reason = f" ({job['reason']})" if job["reason"] else ""
        print(f"{job['id']}  {job['state']}{reason}  {job['image']}  {job['created_at']}")
    return 0


def logs(worker: Remote, job_id: str, stream: str, tail: int | None, follow: bool) -> int:
    params: dict[str, Any] = {"stream": stream, "follow": str(follow).lower()}
    if tail is not None:
        params["tail"] = tail
    url = f"{worker.url}/jobs/{job_id}/logs"
    try:
        with httpx.stream("GET", url, params=params, headers=worker.headers(), timeout=_TIMEOUT) as response:
            if response.status_code >= 400:
                response.read()
                raise ClientError(_problem(response, worker))
            for text in response.iter_text():
                sys.stdout.write(text)
                sys.stdout.flush()
    except httpx.HTTPError as exc:
        raise ClientError(f"cannot reach the worker at {worker.url}: {exc}") from exc
    return 0


def import_image(worker: Remote, name: str, tarball: Path) -> int:
    if not tarball.is_file():
        raise ClientError(f"{tarball} is not a file")
    with tarball.open("rb") as body:
        _print(call("POST", worker, "/images/import", params={"name": name}, content=body,
                     headers={"content-type": "application/x-tar"}))  # fmt: skip
    return 0


def list_images(worker: Remote) -> int:
    for image in call("GET", worker, "/images"):
        print(f"{image['name']}  {image['source']}  {image['size_bytes'] / 1e6:.1f} MB  in use: {image['in_use']}")
    return 0


def call(method: str, worker: Remote, path: str, *, headers: dict[str, str] | None = None, **kwargs: Any) -> Any:
    """The worker's JSON answer to one request; ClientError, saying why, when there is none."""
    try:
        response = httpx.request(
            method, f"{worker.url}{path}", headers={**(headers or {}), **worker.headers()}, timeout=_TIMEOUT, **kwargs
        )
    except httpx.HTTPError as exc:
        raise ClientError(f"cannot reach the worker at {worker.url}: {exc}") from exc
    if response.status_code >= 400:
        raise ClientError(_problem(response, worker))
    return response.json()


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


def _print(document: Any) -> None:
    print(json.dumps(document, indent=2))
