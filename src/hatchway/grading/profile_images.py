"""Local images for language profiles, made from Debian packages: no container registry is needed.

``mmdebstrap`` installs a profile's `packages` into a minimal Debian root filesystem (the ``apt`` variant, without
recommended packages, documentation, manual pages or translations), and ``docker import`` turns its tarball into
the profile's image. The image carries labels naming the profile and a digest of its recipe (suite and packages),
so `image_status` can tell an image built from other packages.

Every image is ready for the way profiles run: as uid 65534 (``nobody``, in Debian's base passwd) on a read-only
root filesystem, with `HOME` at the writable `/tmp` and an empty `/box` to mount the artefacts on.

Both tools are run as commands, the way an operator would; the Docker CLI talks to `docker_url` when one is given
(else to DOCKER_HOST or the local socket). Building blocks for minutes, so the CLI (or a thread) calls it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hatchway.errors import BuildFailed, EngineError, EngineUnavailable
from hatchway.judge.profiles import Profile

log = logging.getLogger(__name__)

SUITE = "bookworm"
PROFILE_LABEL = "hatchway.profile"
RECIPE_LABEL = "hatchway.profile.recipe"
IMAGE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/tmp",
    "LANG": "C.UTF-8",
}
# Bump when the way images are made changes, so that `image_status` calls older images stale.
_RECIPE_VERSION = "2"
_DROPPED_PATHS = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*")
# update-alternatives links manual pages into man1 (the JDK's do): the directory must exist even though its
# files are dropped. /box is where the artefacts are mounted.
_SETUP_HOOK = 'mkdir -p "$1/usr/share/man/man1"'
_CUSTOMIZE_HOOK = 'mkdir -p "$1/box" && rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/* "$1"/var/log/*'
_ERROR_TAIL_CHARS = 4000
# Sets up merged /usr with symlinks when the suite needs it, instead of installing `usrmerge` and with it a full
# Perl (about 55 MB) into every image.
MERGED_USR_HOOKS = Path("/usr/share/mmdebstrap/hooks/maybe-merged-usr")


@dataclass(frozen=True)
class ImageStatus:
    """Whether a profile's image is on the engine, how big it is and whether it was built from today's recipe.

    `current` is None for images `build_profile_image` did not make (an official image, say).
    """

    profile: str
    image: str
    present: bool
    size_bytes: int | None = None
    current: bool | None = None


@dataclass(frozen=True)
class ImageBuild:
    """What `build_profile_image` did: `built` is False when the image was there already."""

    profile: str
    image: str
    built: bool
    seconds: float
    size_bytes: int


def recipe(profile: Profile, suite: str = SUITE) -> str:
    """A digest of everything the image is made from."""
    parts = [_RECIPE_VERSION, suite, *sorted(profile.packages)]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def mmdebstrap_command(
    profile: Profile, tarball: Path, *, suite: str = SUITE, mirrors: Sequence[str] = ()
) -> list[str]:
    """The mmdebstrap command that writes `profile`'s root filesystem to `tarball`."""
    if not profile.packages:
        raise BuildFailed(f"profile {profile.name!r} lists no packages to build its image {profile.image!r} from")
    command = [
        "mmdebstrap",
        "--variant=apt",
        '--aptopt=APT::Install-Recommends "false"',
        f"--include={','.join(profile.packages)}",
        *(f"--dpkgopt=path-exclude={path}" for path in _DROPPED_PATHS),
        "--dpkgopt=path-include=/usr/share/doc/*/copyright",  # the licences stay
        f"--setup-hook={_SETUP_HOOK}",
        f"--customize-hook={_CUSTOMIZE_HOOK}",
        *([f"--hook-dir={MERGED_USR_HOOKS}"] if MERGED_USR_HOOKS.is_dir() else []),
        suite,
        str(tarball),
        *mirrors,
    ]
    return command


def import_command(profile: Profile, tarball: Path, suite: str = SUITE) -> list[str]:
    """The `docker import` command that makes `profile`'s image from its root filesystem."""
    changes = [
        *(f"ENV {name}={value}" for name, value in IMAGE_ENV.items()),
        "WORKDIR /tmp",
        f"LABEL {PROFILE_LABEL}={profile.name} {RECIPE_LABEL}={recipe(profile, suite)}",
    ]
    return [
        "docker",
        "import",
        *(arg for change in changes for arg in ("--change", change)),
        str(tarball),
        profile.image,
    ]


def image_status(profile: Profile, *, docker_url: str | None = None, suite: str = SUITE) -> ImageStatus:
    """Whether `profile`'s image is on the engine, and whether it was built from the profile's current recipe."""
    found = _inspect(profile.image, docker_url)
    if found is None:
        return ImageStatus(profile=profile.name, image=profile.image, present=False)
    built_recipe = found.labels.get(RECIPE_LABEL)
    current = None if built_recipe is None else built_recipe == recipe(profile, suite)
    return ImageStatus(profile.name, profile.image, present=True, size_bytes=found.size_bytes, current=current)


def build_profile_image(
    profile: Profile,
    *,
    force: bool = False,
    suite: str = SUITE,
    mirrors: Sequence[str] = (),
    docker_url: str | None = None,
    work_dir: Path | None = None,
    timeout_s: float | None = None,
) -> ImageBuild:
    """Make `profile`'s image from its Debian packages, unless it is on the engine already (or `force`).

    The root filesystem's tarball is written under `work_dir` (the system's temporary directory by default) and
    removed afterwards. `mirrors` are mmdebstrap's (by default deb.debian.org and its security mirror).
    Raises BuildFailed when mmdebstrap or the import fails, EngineUnavailable when Docker does not answer.
    """
    started = time.monotonic()
    if not force:
        existing = _inspect(profile.image, docker_url)
        if existing is not None:
            return ImageBuild(profile.name, profile.image, False, 0.0, existing.size_bytes)
    if shutil.which("mmdebstrap") is None:
        raise BuildFailed("mmdebstrap is not installed (apt-get install mmdebstrap); it makes the profile images")
    log.info(
        "building profile image",
        extra={"event": "profile_image_build", "profile": profile.name, "image": profile.image},
    )
    with tempfile.TemporaryDirectory(prefix="hatchway-profile-", dir=work_dir) as scratch:
        tarball = Path(scratch) / f"{profile.name}.tar"
        what = f"building the {profile.name} image ({', '.join(profile.packages)})"
        _run(mmdebstrap_command(profile, tarball, suite=suite, mirrors=mirrors), what, timeout_s=timeout_s)
        _docker(import_command(profile, tarball, suite)[1:], docker_url, f"importing {profile.image!r}")
    found = _inspect(profile.image, docker_url)
    if found is None:
        raise BuildFailed(f"the import ended without producing the image {profile.image!r}")
    seconds = time.monotonic() - started
    size = found.size_bytes
    log.info(
        "built profile image",
        extra={"event": "profile_image_built", "profile": profile.name, "seconds": round(seconds, 1), "bytes": size},
    )
    return ImageBuild(profile.name, profile.image, True, seconds, size)


@dataclass(frozen=True)
class _Found:
    size_bytes: int
    labels: dict[str, str]


def _inspect(image: str, docker_url: str | None) -> _Found | None:
    """What the engine says about `image`, or None if it has no such image."""
    try:
        output = _docker(["image", "inspect", image], docker_url, f"inspecting {image!r}")
    except EngineError as exc:
        if "no such image" in str(exc).lower():
            return None
        raise
    records = json.loads(output)
    if not records:
        return None
    record = records[0]
    labels = (record.get("Config") or {}).get("Labels") or {}
    return _Found(size_bytes=int(record.get("Size") or 0), labels={str(k): str(v) for k, v in labels.items()})


def _docker(args: list[str], docker_url: str | None, what: str) -> str:
    env = dict(os.environ)
    if docker_url:
        env["DOCKER_HOST"] = docker_url
    try:
        return _run(["docker", *args], what, env=env, failure=EngineError)
    except FileNotFoundError as exc:
        raise EngineUnavailable("the docker command is not installed") from exc


def _run(
    command: list[str],
    what: str,
    *,
    env: dict[str, str] | None = None,
    timeout_s: float | None = None,
    failure: type[EngineError] = BuildFailed,
) -> str:
    """Run `command` and return its stdout; on failure raise `failure` with the end of what it printed."""
    try:
        done = subprocess.run(
            command, check=False, capture_output=True, text=True, env=env, timeout=timeout_s, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as exc:
        raise failure(f"{what} timed out after {timeout_s:g} s") from exc
    if done.returncode != 0:
        said = _gist(done.stderr or done.stdout)
        if "cannot connect to the docker daemon" in said.lower():
            raise EngineUnavailable(f"the Docker engine does not answer: {said}")
        raise failure(f"{what} failed (exit {done.returncode}): {said}")
    return done.stdout


def _gist(output: str) -> str:
    """What a failed command said: its error lines (apt's and mmdebstrap's start with "E:"), else its last words."""
    errors = [line for line in output.splitlines() if line.startswith("E: ")]
    return ("\n".join(errors) if errors else output.strip())[-_ERROR_TAIL_CHARS:]
