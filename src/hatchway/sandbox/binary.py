"""Where the supervisor binary is, and how to build it from its sources in `supervisor/`.

`scripts/build-supervisor.sh` builds it into `sandbox/bin/` at set-up time; `build_supervisor` is the same compile
step for tests and as a fallback.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from hatchway.errors import SandboxUnavailable
from hatchway.files import write_atomically

SOURCE_DIR = Path(__file__).with_name("supervisor")
"""The supervisor's C sources, shipped with the package: a shared header and one file per concern."""

SOURCES = tuple(
    SOURCE_DIR / name
    for name in (
        "main.c",
        "protocol.c",
        "run.c",
        "exec.c",
        "zygote.c",
        "reap.c",
        "cgroups.c",
        "next_run.c",
        "cleanup.c",
        "util.c",
    )
)
"""The files compiled, in the order given to the compiler."""

BINARY = Path(__file__).parent / "bin" / "hatchway-supervisor"
"""Where `scripts/build-supervisor.sh` puts the built binary."""

COMPILE_FLAGS = ("-static", "-O2", "-Wall", "-Wextra", "-Werror")
"""Static, so that one binary runs in Debian, Alpine (musl) and scratch images alike."""

BUILD_TIMEOUT_S = 120


def supervisor_path() -> Path:
    """The built supervisor binary. Raises SandboxUnavailable (naming the fix) if it is not there."""
    if BINARY.is_file() and os.access(BINARY, os.X_OK):
        return BINARY
    raise SandboxUnavailable(
        f"the sandbox supervisor is not built ({BINARY} is missing): run scripts/build-supervisor.sh"
    )


def installed_supervisor(directory: Path) -> Path:
    """A copy of the built supervisor under `directory` (the worker's data directory), named by its content, and
    its path; made once per build. Sandboxes mount this copy, not the package's file: an upgrade of the package
    never changes the binary under a running sandbox, and when hatchway itself runs in a container, the data
    directory is the one path the host's engine sees as hatchway does. Raises SandboxUnavailable if it is not
    built."""
    built = supervisor_path()
    data = built.read_bytes()
    dest = directory / f"hatchway-supervisor-{hashlib.sha256(data).hexdigest()[:12]}"
    if not dest.is_file():
        write_atomically(dest, data, mode=0o755)
    return dest


def build_supervisor(dest: Path, *, cc: str = "cc") -> Path:
    """Compile the supervisor's sources into `dest` (replaced atomically) and return `dest`.

    Raises SandboxUnavailable with the compiler's output when there is no compiler or no static C library.
    """
    compiler = shutil.which(cc)
    if compiler is None:
        raise SandboxUnavailable(f"cannot build the sandbox supervisor: no C compiler {cc!r} on PATH")
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Compile next to dest and rename, so a concurrent user never sees a half-written binary.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            subprocess.run(
                [compiler, *COMPILE_FLAGS, "-o", str(tmp), *map(str, SOURCES)],
                check=True,
                capture_output=True,
                text=True,
                timeout=BUILD_TIMEOUT_S,
            )
        except subprocess.CalledProcessError as exc:
            hint = " (is the static C library installed? on Debian: apt-get install libc6-dev)"
            raise SandboxUnavailable(
                f"building the sandbox supervisor failed{hint}:\n{exc.stderr.strip()[-4000:]}"
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise SandboxUnavailable(f"building the sandbox supervisor took over {BUILD_TIMEOUT_S} s") from exc
        tmp.chmod(0o755)
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest
