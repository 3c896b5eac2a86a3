"""Client commands against a running worker's HTTP API."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import httpx

from hatchway.errors import HatchwayError

_TIMEOUT = httpx.Timeout(30.0, read=None)


class ClientError(HatchwayError):
    """The worker could not be reached, or refused the request; the message says why."""


def submit(url: str, body: dict[str, Any], *, wait: bool) -> int:
    job = call("POST", url, "/jobs", json=body, params={"wait": "true"} if wait else None)
    _print(job)
    return 0


def status(url: str, job_id: str) -> int:
    _print(call("GET", url, f"/jobs/{job_id}"))
    return 0


def kill(url: str, job_id: str, grace_s: float | None) -> int:
    params = None if grace_s is None else {"grace_s": grace_s}
    _print(call("DELETE", url, f"/jobs/{job_id}", params=params))
    return 0


def list_jobs(url: str, state: str | None, labels: list[str] | None, limit: int) -> int:
    params: dict[str, Any] = {"limit": limit, "label": labels or []}
    if state:
        params["state"] = state
    page = call("GET", url, "/jobs", params=params)
    for job in page["jobs"]:
        reason = f" ({job['reason']})" if job["reason"] else ""
        print(f"{job['id']}  {job['state']}{reason}  {job['image']}  {job['created_at']}")
    return 0


def logs(url: str, job_id: str, stream: str, tail: int | None, follow: bool) -> int:
    params: dict[str, Any] = {"stream": stream, "follow": str(follow).lower()}
    if tail is not None:
        params["tail"] = tail
    try:
        with httpx.stream("GET", f"{url}/jobs/{job_id}/logs", params=params, timeout=_TIMEOUT) as response:
            if response.status_code >= 400:
                response.read()
                raise ClientError(_problem(response))
            for text in response.iter_text():
                sys.stdout.write(text)
                sys.stdout.flush()
    except httpx.HTTPError as exc:
        raise ClientError(f"cannot reach the worker at {url}: {exc}") from exc
    return 0


def import_image(url: str, name: str, tarball: Path) -> int:
    if not tarball.is_file():
        raise ClientError(f"{tarball} is not a file")
    with tarball.open("rb") as body:
        _print(call("POST", url, "/images/import", params={"name": name}, content=body,
                     headers={"content-type": "application/x-tar"}))  # fmt: skip
    return 0


def list_images(url: str) -> int:
    for image in call("GET", url, "/images"):
        print(f"{image['name']}  {image['source']}  {image['size_bytes'] / 1e6:.1f} MB  in use: {image['in_use']}")
    return 0


def call(method: str, url: str, path: str, **kwargs: Any) -> Any:
    try:
        response = httpx.request(method, f"{url}{path}", timeout=_TIMEOUT, **kwargs)
    except httpx.HTTPError as exc:
        raise ClientError(f"cannot reach the worker at {url}: {exc}") from exc
    if response.status_code >= 400:
        raise ClientError(_problem(response))
    return response.json()


def _problem(response: httpx.Response) -> str:
    try:
        error = response.json()["error"]
        return f"{response.status_code} {error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        return f"{response.status_code}: {response.text[:500]}"


def _print(document: Any) -> None:
    print(json.dumps(document, indent=2))
