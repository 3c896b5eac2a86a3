"""The job commands against a running worker: submit, status, list, logs, kill.

`submit --wait` behaves like `docker run`: the job's stdout and stderr stream to ours as they are written, and
the command exits with the job's code (see exits.py for the endings that are not the job's own).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import IO, Any

from hatchway.cli import output
from hatchway.cli.client import ClientError, Remote, call, follow, remote
from hatchway.cli.exits import Exit, job_ending, short_id
from hatchway.cli.jobspec import add_job_options, job_request

_FINAL = ("succeeded", "failed", "killed")
_WAITING = ("queued", "building")
_POLL_S = (0.05, 1.0)  # first and longest pause between polls, doubling in between
_RED = ("\x1b[31m", "\x1b[0m")


def add_job_commands(commands: Any, remote_options: argparse.ArgumentParser) -> None:
    """Register submit, status, list, logs and kill on the top-level parser's subcommands."""
    submit_cmd = commands.add_parser(
        "submit",
        parents=[remote_options],
        help="queue a job on a running worker; with --wait, run it like docker run",
        description="Prints the job's id; with --wait, streams its output and exits with its exit code.",
    )
    add_job_options(submit_cmd)
    submit_cmd.add_argument("--id")
    submit_cmd.add_argument("--priority", type=int)
    submit_cmd.add_argument("--label", action="append", metavar="KEY=VALUE")
    submit_cmd.add_argument("--callback-url", help="where the worker POSTs the job once it has ended")
    submit_cmd.add_argument("--wait", action="store_true", help="stream the output; exit with the job's code")
    submit_cmd.set_defaults(handler=submit)

    status_cmd = commands.add_parser("status", parents=[remote_options], help="show one job")
    status_cmd.add_argument("job_id")
    status_cmd.add_argument("--json", action="store_true", help="print the job as JSON")
    status_cmd.set_defaults(handler=status)

    list_cmd = commands.add_parser("list", parents=[remote_options], help="list jobs, newest first")
    list_cmd.add_argument("--state")
    list_cmd.add_argument("--label", action="append", metavar="KEY:VALUE")
    list_cmd.add_argument("--limit", type=int, default=20)
    list_cmd.add_argument("--json", action="store_true", help="print the page of jobs as JSON")
    list_cmd.set_defaults(handler=list_jobs)

    logs_cmd = commands.add_parser(
        "logs",
        parents=[remote_options],
        help="print a job's output",
        description="The job's stdout goes to stdout and its stderr to stderr (red on a terminal), as docker logs.",
    )
    logs_cmd.add_argument("job_id")
    logs_cmd.add_argument("--follow", "-f", action="store_true", help="keep printing until the job ends")
    logs_cmd.add_argument("--stream", choices=["stdout", "stderr", "both", "build"], default="both")
    logs_cmd.add_argument("--tail", type=int, help="only the last N lines of each stream")
    logs_cmd.set_defaults(handler=logs)

    kill_cmd = commands.add_parser("kill", parents=[remote_options], help="cancel or stop a job")
    kill_cmd.add_argument("job_id")
    kill_cmd.add_argument("--grace-s", type=float, help="SIGTERM, then SIGKILL after this long")
    kill_cmd.add_argument("--json", action="store_true", help="print the ended job as JSON")
    kill_cmd.set_defaults(handler=kill)


def submit(args: argparse.Namespace) -> int:
    worker = remote(args)
    body = job_request(args).model_dump(exclude_none=True)
    if not args.wait:
        job = call("POST", worker, "/jobs", json=body)
        output.print_json(job) if args.json else print(job["id"])
        return Exit.OK
    try:
        job = call("POST", worker, "/jobs", json=body, params={"wait": "true"} if args.json else None)
    except ClientError as exc:
        if exc.code == Exit.FAILED:  # refused: the job cannot run, as docker run's 125 says
            raise ClientError(str(exc), Exit.NOT_RUN) from exc
        raise
    if args.json:
        job = until_final(worker, job)
        output.print_json(job)
        return job_ending(job).code
    return watch(worker, job)


def watch(worker: Remote, job: dict[str, Any]) -> int:
    """Stream the job's stdout and stderr to ours until it ends (with a status line on a terminal while it waits
    or builds), then say how it ended and return the exit code for it."""
    status = output.StatusLine(f"job {short_id(job['id'])} {job['state']}", show=job["state"] in _WAITING)
    copies = [
        _Copy(follow(worker, job["id"], "stdout"), sys.stdout, status.stop),
        _Copy(follow(worker, job["id"], "stderr"), sys.stderr, status.stop),
    ]
    try:
        if job["state"] in _WAITING:
            _show_progress(worker, job["id"], status, copies)
        for copy in copies:
            copy.join()
        status.stop()
        final = until_final(worker, job)
    except KeyboardInterrupt:
        status.stop()
        output.say(f"job {job['id']} keeps running; `hatchway kill {job['id']}` stops it")
        raise
    ending = job_ending(final)
    if ending.message:
        output.say(ending.message)
    return ending.code


def until_final(worker: Remote, job: dict[str, Any]) -> dict[str, Any]:
    """The job once it has ended. Its output streams end only once it has, so this is at most a poll or two."""
    pause_s, longest_s = _POLL_S
    while job["state"] not in _FINAL:
        time.sleep(pause_s)  # a client has no event to wait on
        pause_s = min(pause_s * 2, longest_s)
        job = call("GET", worker, f"/jobs/{job['id']}")
    return job


def status(args: argparse.Namespace) -> int:
    job = call("GET", remote(args), f"/jobs/{args.job_id}")
    if args.json:
        output.print_json(job)
        return Exit.OK
    output.print_fields(job_fields(job))
    return Exit.OK


def job_fields(job: dict[str, Any]) -> list[tuple[str, Any]]:
    """What `status` shows of a job, in the order one reads it."""
    spec, run, resources = job.get("spec") or {}, job.get("run") or {}, job.get("resources") or {}
    limits = spec.get("limits") or {}
    peak = resources.get("peak_memory_bytes")
    fields: list[tuple[str, Any]] = [
        ("id", job["id"]),
        ("state", output.state_text(job["state"], job.get("reason"))),
        ("exit code", None if job.get("exit_code") is None else str(job["exit_code"])),
        ("message", job.get("message")),
        ("kind", job.get("kind")),
        ("image", job.get("image")),
        ("command", _command(spec.get("command"))),
        ("engine", job.get("engine")),
        ("created", output.when(job.get("created_at"))),
        ("started", output.when(job.get("started_at"))),
        ("finished", output.when(job.get("finished_at"))),
        ("duration", output.seconds(job.get("duration_s"))),
        ("cpu", output.seconds(resources.get("cpu_s"))),
        ("peak memory", None if peak is None else output.megabytes(peak)),
        ("limits", ", ".join(f"{key} {value}" for key, value in limits.items() if value is not None) or None),
        ("labels", ", ".join(f"{key}={value}" for key, value in (job.get("labels") or {}).items()) or None),
        ("ports", ", ".join(f"{name}={port}" for name, port in (job.get("ports") or {}).items()) or None),
        ("worker", job.get("worker_id")),
        ("output", f"{len(job.get('stdout', ''))} bytes stdout, {len(job.get('stderr', ''))} bytes stderr"),
    ]
    warnings = run.get("warnings") or []
    if warnings:
        fields.append(("warnings", "; ".join(warnings)))
    return fields


def list_jobs(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"limit": args.limit, "label": args.label or []}
    if args.state:
        params["state"] = args.state
    page = call("GET", remote(args), "/jobs", params=params)
    if args.json:
        output.print_json(page)
        return Exit.OK
    output.print_table(
        ("ID", "STATE", "EXIT", "IMAGE", "COMMAND", "CREATED", "DURATION"),
        (
            (
                job["id"],
                output.state_text(job["state"], job.get("reason")),
                "" if job.get("exit_code") is None else str(job["exit_code"]),
                job.get("image") or f"({job.get('kind')})",
                _command((job.get("spec") or {}).get("command"), width=40),
                output.when(job.get("created_at")),
                output.seconds(job.get("duration_s")),
            )
            for job in page["jobs"]
        ),
    )
    return Exit.OK


def logs(args: argparse.Namespace) -> int:
    worker, live = remote(args), args.follow
    if args.stream != "both":
        out = sys.stderr if args.stream == "stderr" else sys.stdout
        _Copy(follow(worker, args.job_id, args.stream, tail=args.tail, live=live), out).join()
        return Exit.OK
    # Two streams, as docker logs: the job's stdout to ours, its stderr to ours (coloured on a terminal).
    copies = [
        _Copy(follow(worker, args.job_id, name, tail=args.tail, live=live), out)
        for name, out in (("stdout", sys.stdout), ("stderr", sys.stderr))
    ]
    for copy in copies:
        copy.join()
    return Exit.OK


def kill(args: argparse.Namespace) -> int:
    params = None if args.grace_s is None else {"grace_s": args.grace_s}
    job = call("DELETE", remote(args), f"/jobs/{args.job_id}", params=params)
    output.print_json(job) if args.json else print(job["id"])
    return Exit.OK


class _Copy:
    """Copies one followed stream (a generator: it connects when first read) to one of our streams, in a thread
    of its own, so that stdout and stderr both flow as they are written. `first` runs before the first write (to
    clear a status line); stderr is red on a terminal. `join` re-raises what went wrong in the thread."""

    def __init__(self, chunks: Iterator[str], out: IO[str], first: Callable[[], None] = lambda: None) -> None:
        self._chunks = chunks
        self._out = out
        self._first = first
        self._colour = out is sys.stderr and output.is_terminal(out) and "NO_COLOR" not in os.environ
        self._error: BaseException | None = None
        self.wrote = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for text in self._chunks:
                if not self.wrote.is_set():
                    self._first()
                    self.wrote.set()
                self._out.write(f"{_RED[0]}{text}{_RED[1]}" if self._colour else text)
                self._out.flush()
        except BaseException as exc:  # handed to the main thread by join()
            self._error = exc

    def join(self) -> None:
        while self._thread.is_alive():
            self._thread.join(0.5)  # with a timeout, so Ctrl-C reaches the main thread
        if self._error is not None:
            raise self._error


def _show_progress(worker: Remote, job_id: str, status: output.StatusLine, copies: list[_Copy]) -> None:
    """While the job waits or builds (pulls or builds its image, downloads its bundle), say so on the status line;
    only when that line is shown at all (stderr is a terminal)."""
    if not output.is_terminal(sys.stderr):
        return
    pause_s, longest_s = _POLL_S
    while not any(copy.wrote.is_set() for copy in copies):
        job = call("GET", worker, f"/jobs/{job_id}")
        if job["state"] not in _WAITING:
            break
        doing = "preparing its image, bundle and workspace" if job["state"] == "building" else "waiting for a slot"
        status.update(f"job {short_id(job_id)} {job['state']}: {job.get('message') or doing}")
        time.sleep(pause_s)
        pause_s = min(pause_s * 2, longest_s)
    status.stop()


def _command(command: Any, width: int | None = None) -> str | None:
    if not command:
        return None
    import shlex

    text = shlex.join(command) if isinstance(command, list) else str(command)
    return text if width is None or len(text) <= width else f"{text[: width - 1]}…"
