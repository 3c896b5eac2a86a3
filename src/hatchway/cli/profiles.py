"""`hatchway profiles list|build`: the worker's language profiles and their local images."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hatchway.cli import output

if TYPE_CHECKING:
    from hatchway.judge.profiles import Profile


def add_profile_commands(commands: Any) -> None:
    """Register `profiles [list]` and `profiles build` on the top-level parser's subcommands."""
    profiles_cmd = commands.add_parser(
        "profiles", help="language profiles and their local images (`profiles` alone lists them)"
    )
    _list_options(profiles_cmd)
    actions = profiles_cmd.add_subparsers(metavar="ACTION")
    listing = actions.add_parser("list", help="list profiles and whether their images are on this engine")
    _list_options(listing, default=argparse.SUPPRESS)  # what `profiles --config F list` gave stays
    build_cmd = actions.add_parser("build", help="build profiles' images from Debian packages")
    build_cmd.add_argument("names", nargs="*", metavar="NAME", help="profiles to build (all when none)")
    build_cmd.add_argument("--force", action="store_true", help="rebuild images that are present")
    build_cmd.add_argument("--config", type=Path, help="YAML settings file (or $HATCHWAY_CONFIG)")
    build_cmd.set_defaults(handler=lambda a: build_profiles(a.config, a.names, a.force))


def _list_options(parser: argparse.ArgumentParser, default: Any = None) -> None:
    parser.add_argument("--config", type=Path, default=default, help="YAML settings file (or $HATCHWAY_CONFIG)")
    parser.add_argument(
        "--json", action="store_true", default=False if default is None else default, help="print the profiles as JSON"
    )
    parser.set_defaults(handler=lambda a: list_profiles(a.config, as_json=a.json))


def list_profiles(config: Path | None, *, as_json: bool = False) -> int:
    """Print every profile: its image, whether that image is on this engine, and its size."""
    from hatchway.errors import HatchwayError
    from hatchway.grading.profile_images import image_status
    from hatchway.judge.profiles import resolve_profiles
    from hatchway.settings import load_settings

    settings = load_settings(config)
    profiles = resolve_profiles(settings.profiles)
    rows: list[dict[str, Any]] = []
    try:
        for profile in profiles.values():
            status = image_status(profile, docker_url=settings.docker_url)
            present = "yes" if status.present else "no"
            if status.current is False:
                present = "stale"  # built from other packages: `profiles build --force` remakes it
            rows.append({"name": profile.name, "image": profile.image, "present": present,
                         "size_bytes": status.size_bytes, "compile": profile.compile})  # fmt: skip
    except HatchwayError as exc:
        print(f"hatchway: {exc}", file=sys.stderr)
        return 1
    if as_json:
        output.print_json(rows)
        return 0
    output.print_table(
        ("NAME", "IMAGE", "PRESENT", "SIZE", "COMPILE"),
        (
            (
                row["name"],
                row["image"],
                output.styled(row["present"], _PRESENT_STYLES[row["present"]]),
                "-" if row["size_bytes"] is None else _megabytes(row["size_bytes"]),
                " ".join(row["compile"] or ("-",)),
            )
            for row in rows
        ),
    )
    return 0


_PRESENT_STYLES = {"yes": "green", "no": "red", "stale": "yellow"}


def build_profiles(config: Path | None, names: Sequence[str], force: bool) -> int:
    """Build the named profiles' images (every profile with packages when none is named), one after another.

    An image already on the engine is kept unless `force`. A failure is reported and the next profile is built;
    the exit status is 1 if any failed.
    """
    from hatchway.errors import HatchwayError
    from hatchway.grading.profile_images import build_profile_image, image_status
    from hatchway.judge.profiles import resolve_profiles
    from hatchway.settings import load_settings

    settings = load_settings(config)
    profiles = resolve_profiles(settings.profiles)
    unknown = [name for name in names if name not in profiles]
    if unknown:
        print(f"hatchway: {_unknown(unknown, profiles)}", file=sys.stderr)
        return 2
    chosen = [profiles[name] for name in dict.fromkeys(names)] if names else list(profiles.values())
    failed = 0
    for profile in chosen:
        if not profile.packages:
            print(f"{profile.name}: {profile.image} lists no Debian packages; it comes from a registry, not built here")
            failed += bool(names)  # asked for by name, it is an error; as part of "all", a note
            continue
        try:
            if not force:
                status = image_status(profile, docker_url=settings.docker_url)
                if status.present:
                    note = " but was built from other packages" if status.current is False else ""
                    size = _megabytes(status.size_bytes or 0)
                    print(f"{profile.name}: {profile.image} is present ({size}){note}; --force rebuilds it")
                    continue
            print(f"{profile.name}: building {profile.image} from {', '.join(profile.packages)} ...", flush=True)
            with output.StatusLine(f"building {profile.image}"):
                done = build_profile_image(profile, force=True, docker_url=settings.docker_url)
        except HatchwayError as exc:
            print(f"hatchway: {profile.name}: {exc}", file=sys.stderr, flush=True)
            failed += 1
            continue
        print(f"{profile.name}: built {done.image}, {_megabytes(done.size_bytes)} in {done.seconds:.0f} s", flush=True)
    return 1 if failed else 0


def _megabytes(size_bytes: int) -> str:
    return f"{size_bytes / 1e6:.0f} MB"


def _unknown(names: Sequence[str], profiles: dict[str, Profile]) -> str:
    return f"no profile named {', '.join(map(repr, names))}; this worker has: {', '.join(sorted(profiles))}"
