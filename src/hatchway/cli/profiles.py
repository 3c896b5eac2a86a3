"""`hatchway profiles list|build`: the worker's language profiles and their local images."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from hatchway.errors import HatchwayError
from hatchway.grading.images import build_profile_image, image_status
from hatchway.grading.profiles import Profile, resolve_profiles
from hatchway.settings import load_settings


def list_profiles(config: Path | None) -> int:
    """Print every profile: its image, whether that image is on this engine, and its size."""
    settings = load_settings(config)
    profiles = resolve_profiles(settings.profiles)
    rows = [("NAME", "IMAGE", "PRESENT", "SIZE", "COMPILE")]
    try:
        for profile in profiles.values():
            status = image_status(profile, docker_url=settings.docker_url)
            present = "yes" if status.present else "no"
            if status.current is False:
                present = "stale"  # built from other packages: `profiles build --force` remakes it
            size = _megabytes(status.size_bytes) if status.size_bytes is not None else "-"
            rows.append((profile.name, profile.image, present, size, " ".join(profile.compile or ("-",))))
    except HatchwayError as exc:
        print(f"hatchway: {exc}", file=sys.stderr)
        return 1
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1])
    return 0


def build_profiles(config: Path | None, names: Sequence[str], force: bool) -> int:
    """Build the named profiles' images (every profile with packages when none is named), one after another.

    An image already on the engine is kept unless `force`. A failure is reported and the next profile is built;
    the exit status is 1 if any failed.
    """
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
