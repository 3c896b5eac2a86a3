"""`hatchway sources`: where a worker's jobs come from (its HTTP API, and the masters it pulls work from), and
how talking to each master goes."""

from __future__ import annotations

import argparse
from typing import Any

from hatchway.cli import output
from hatchway.cli.client import call, remote
from hatchway.cli.exits import Exit


def add_sources_command(commands: Any, remote_options: argparse.ArgumentParser) -> None:
    """Register `sources` on the top-level parser's subcommands."""
    sources_cmd = commands.add_parser(
        "sources",
        parents=[remote_options],
        help="the job sources of a worker: its HTTP API and the masters it pulls from",
    )
    sources_cmd.add_argument("--json", action="store_true", help="print the sources as JSON")
    sources_cmd.set_defaults(handler=list_sources)


def list_sources(args: argparse.Namespace) -> int:
    sources = call("GET", remote(args), "/sources")
    if args.json:
        output.print_json(sources)
        return Exit.OK
    output.print_table(
        ("NAME", "KIND", "URL", "LAST POLL", "CLAIMS", "SENT", "PENDING", "ERRORS", "BACKOFF", "LAST ERROR"),
        (_row(source) for source in sources),
    )
    return Exit.OK


def _row(source: dict[str, Any]) -> tuple[object, ...]:
    first = (source["name"], source["kind"], source["url"])
    claims = str(source["claims"])
    last_error = output.styled(source.get("last_error") or "-", "red" if source.get("last_error") else None)
    if source.get("pushes"):  # the HTTP API: clients bring work and ask for their results; nothing to poll or send
        return (*first, "-", claims, "-", "-", "-", "-", last_error)
    return (
        *first,
        output.when(source.get("last_poll_at")),
        claims,
        str(source["reports_sent"]),
        output.styled(source["reports_pending"], "yellow" if source["reports_pending"] else None),
        output.styled(source["errors"], "red" if source["errors"] else None),
        f"{source['backoff_s']:g} s" if source.get("backoff_s") else "-",
        last_error,
    )
