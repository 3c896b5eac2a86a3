"""`hatchway images`: the images a worker manages (built, pulled, imported), and importing a root filesystem."""

from __future__ import annotations

import argparse
import time
from argparse import SUPPRESS
from pathlib import Path
from typing import Any

from hatchway.cli import output
from hatchway.cli.client import call, remote, remote_options
from hatchway.cli.exits import Exit, UsageError


def add_image_commands(commands: Any, options: argparse.ArgumentParser) -> None:
    """Register `images [list]` and `images import` on the top-level parser's subcommands."""
    images_cmd = commands.add_parser(
        "images", parents=[options], help="images the worker manages (`images` alone lists them)"
    )
    images_cmd.add_argument("--json", action="store_true", help="print as JSON")
    images_cmd.set_defaults(handler=list_images)
    actions = images_cmd.add_subparsers(metavar="ACTION")
    # An action's options have no defaults of their own: they would undo what came before its name.
    inherited = remote_options(inherited=True)
    import_cmd = actions.add_parser("import", parents=[inherited], help="make an image from a root filesystem tar")
    import_cmd.add_argument("name")
    import_cmd.add_argument("rootfs", type=Path)
    import_cmd.add_argument("--json", action="store_true", default=SUPPRESS, help="print the image as JSON")
    import_cmd.set_defaults(handler=import_image)
    list_cmd = actions.add_parser("list", parents=[inherited], help="list managed images")
    list_cmd.add_argument("--json", action="store_true", default=SUPPRESS, help="print the images as JSON")
    list_cmd.set_defaults(handler=list_images)


def list_images(args: argparse.Namespace) -> int:
    images = call("GET", remote(args), "/images")
    if args.json:
        output.print_json(images)
        return Exit.OK
    output.print_table(
        ("NAME", "SOURCE", "SIZE", "LAST USED", "IN USE"),
        (
            (
                image["name"],
                image["source"],
                output.megabytes(image["size_bytes"]),
                _ago(image.get("last_used")),
                str(image["in_use"]),
            )
            for image in images
        ),
    )
    return Exit.OK


def import_image(args: argparse.Namespace) -> int:
    tarball: Path = args.rootfs
    if not tarball.is_file():
        raise UsageError(f"{tarball} is not a file")
    with output.StatusLine(f"importing {tarball} as {args.name}"), tarball.open("rb") as body:
        image = call("POST", remote(args), "/images/import", params={"name": args.name}, content=body,
                     headers={"content-type": "application/x-tar"})  # fmt: skip
    if args.json:
        output.print_json(image)
    else:
        print(image["name"])
    return Exit.OK


def _ago(timestamp: float | None) -> str:
    """How long ago a Unix time was, as docker says it."""
    if not timestamp:
        return "-"
    elapsed = max(time.time() - timestamp, 0)
    for unit_s, unit in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if elapsed >= unit_s:
            count = int(elapsed // unit_s)
            return f"{count} {unit}{'s' if count > 1 else ''} ago"
    return "just now"
