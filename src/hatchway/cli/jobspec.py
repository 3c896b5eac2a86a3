"""The job options `hatchway run` and `hatchway submit` share, and the job request they make."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hatchway.cli.exits import UsageError

if TYPE_CHECKING:
    from hatchway.models import JobRequest

_LIMITS = ("timeout_s", "memory_mb", "cpus", "pids", "output_bytes", "disk_mb")


def add_job_options(parser: argparse.ArgumentParser) -> None:
    """IMAGE, the command after `--`, and everything a job may ask for."""
    parser.add_argument("image")
    parser.add_argument("command", nargs="*", help="the command and its arguments, after --")
    parser.add_argument("--timeout-s", type=float)
    parser.add_argument("--memory-mb", type=int)
    parser.add_argument("--cpus", type=float)
    parser.add_argument("--pids", type=int)
    parser.add_argument("--output-bytes", type=int)
    parser.add_argument("--disk-mb", type=int)
    parser.add_argument("--env", "-e", action="append", metavar="KEY=VALUE")
    parser.add_argument("--file", action="append", metavar="DEST=LOCAL", help="copy a local file into the job")
    parser.add_argument("--network", choices=["none", "host"], default="none")
    parser.add_argument("--runtime", choices=["docker", "gvisor", "auto"], default="auto")
    parser.add_argument("--port", action="append", metavar="NAME", help="allocate a host port (needs --network host)")
    parser.add_argument("--bundle-url")
    parser.add_argument("--bundle-sha256")
    parser.add_argument("--workdir")
    parser.add_argument("--interactive", "-i", action="store_true", help="pass this command's stdin to the job")
    parser.add_argument("--json", action="store_true", help="print the ended job as JSON instead of its output")


def job_request(args: argparse.Namespace) -> JobRequest:
    """The job the command line describes, validated here so that a mistake is named before anything runs."""
    from pydantic import ValidationError

    from hatchway.models import JobRequest

    try:
        return JobRequest.model_validate(job_fields(args))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise UsageError(f"invalid job: {problems}") from exc


def job_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The job the command line describes, as the JSON body of POST /jobs (not validated: the worker does)."""
    if not args.command:
        raise UsageError("give the command after the image, e.g. `-- echo hello`")
    fields: dict[str, Any] = {
        "image": args.image,
        "command": args.command,
        "env": dict(pairs(args.env, "=", "--env")),
        "limits": {name: getattr(args, name) for name in _LIMITS if getattr(args, name) is not None},
        "network": args.network,
        "runtime": args.runtime,
        "ports": args.port or [],
        "bundle_url": args.bundle_url,
        "bundle_sha256": args.bundle_sha256,
        "stdin": sys.stdin.read() if args.interactive else None,
        "files": {dest: _read(src) for dest, src in pairs(args.file, "=", "--file")},
    }
    if args.workdir:
        fields["workdir"] = args.workdir
    if getattr(args, "id", None):
        fields["id"] = args.id
    if getattr(args, "priority", None) is not None:
        fields["priority"] = args.priority
    if getattr(args, "label", None):
        fields["labels"] = dict(pairs(args.label, "=", "--label"))
    if getattr(args, "callback_url", None):
        fields["callback_url"] = args.callback_url
    return fields


def pairs(items: list[str] | None, sep: str, flag: str) -> list[tuple[str, str]]:
    """KEY<sep>VALUE arguments of a repeated option, split."""
    found = []
    for item in items or []:
        key, separated, value = item.partition(sep)
        if not separated:
            raise UsageError(f"{flag} takes KEY{sep}VALUE, not {item!r}")
        found.append((key, value))
    return found


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise UsageError(f"--file: cannot read {path}: {exc.strerror}") from exc
