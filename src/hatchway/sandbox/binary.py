"""The sandbox supervisor's binary: where it is, and the one recipe that builds it from its sources in `supervisor/`.

Everything that builds the supervisor uses this module: `scripts/build-supervisor.sh` (through
`python -m hatchway.sandbox.binary build`, with the system's python3 and `PYTHONPATH=src`: the module needs only the
standard library and `hatchway.errors`/`hatchway.files`), the package build (`setup.py` puts the binary into the
wheel), and the tests (`build_supervisor` into a temporary directory).

A build records a digest of its inputs (every `.c` and `.h` file in the source directory, the list compiled and the
flags) in a file beside the binary; `ensure_built` compiles again only when that digest changed, so editing any
source file, the header included, or a flag rebuilds it.

    python -m hatchway.sandbox.binary build [DEST] [--force]   build DEST (default: BINARY) unless it is fresh
    python -m hatchway.sandbox.binary check [DEST]             exit 0 if DEST is fresh, 1 if it must be built
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from hatchway.errors import SandboxUnavailable
from hatchway.files import write_atomically

SOURCE_DIR = Path(__file__).with_name("supervisor")
"""The supervisor's C sources, shipped with the package: a shared header and one file per concern."""

SOURCE_FILES = (
    "main.c",
    "protocol.c",
    "run.c",
    "exec.c",
    "zygote.c",
    "reap.c",
    "cgroups.c",
    "next_run.c",
    "cleanup.c",
    "ipc.c",
    "util.c",
)
"""The files compiled, in the order given to the compiler (the header is included by each)."""

SOURCES = tuple(SOURCE_DIR / name for name in SOURCE_FILES)

BINARY = Path(__file__).parent / "bin" / "hatchway-supervisor"
"""Where the set-up script and the package build put the built binary."""

COMPILE_FLAGS = ("-static", "-O2", "-Wall", "-Wextra", "-Werror")
"""Static, so that one binary runs in Debian, Alpine (musl) and scratch images alike."""

BUILD_TIMEOUT_S = 120


def supervisor_path() -> Path:
    """The built supervisor binary. Raises SandboxUnavailable (naming the fix) if it is not there."""
    if BINARY.is_file() and os.access(BINARY, os.X_OK):
        return BINARY
    raise SandboxUnavailable(
        f"the sandbox supervisor is not built ({BINARY} is missing): run scripts/build-supervisor.sh"
        " (or python -m hatchway.sandbox.binary build)"
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


def source_digest(source_dir: Path = SOURCE_DIR) -> str:
    """A digest of everything a build depends on: the flags, the list of files compiled, and the name and content
    of every `.c` and `.h` file in `source_dir` (a header is an input of every file that includes it)."""
    digest = hashlib.sha256()
    for part in (*COMPILE_FLAGS, "--", *SOURCE_FILES, "--"):
        digest.update(part.encode() + b"\0")
    for path in sorted(p for p in source_dir.iterdir() if p.suffix in (".c", ".h")):
        content = path.read_bytes()
        digest.update(f"{path.name}\0{len(content)}\0".encode() + content)
    return digest.hexdigest()


def stamp_path(dest: Path) -> Path:
    """The file beside a built binary that holds the `source_digest` it was built from."""
    return dest.with_name(f"{dest.name}.sources-sha256")


def is_fresh(dest: Path = BINARY, *, source_dir: Path = SOURCE_DIR) -> bool:
    """Whether `dest` is an executable built from the sources as they are now, with the current flags."""
    try:
        recorded = stamp_path(dest).read_text().strip()
    except OSError:
        return False
    return dest.is_file() and os.access(dest, os.X_OK) and recorded == source_digest(source_dir)


def build_supervisor(dest: Path, *, cc: str = "cc", source_dir: Path = SOURCE_DIR) -> Path:
    """Compile the supervisor's sources into `dest` (replaced atomically), record their digest beside it, and
    return `dest`.

    Raises SandboxUnavailable with the compiler's output when there is no compiler or no static C library.
    """
    compiler = shutil.which(cc)
    if compiler is None:
        raise SandboxUnavailable(f"cannot build the sandbox supervisor: no C compiler {cc!r} on PATH")
    digest = source_digest(source_dir)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Compile next to dest and rename, so a concurrent user never sees a half-written binary.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            subprocess.run(
                [compiler, *COMPILE_FLAGS, "-o", str(tmp), *(str(source_dir / name) for name in SOURCE_FILES)],
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
    # After the binary: a crash in between leaves an old stamp, and the next ensure_built builds again.
    write_atomically(stamp_path(dest), f"{digest}\n".encode())
    return dest


def ensure_built(dest: Path = BINARY, *, cc: str = "cc", source_dir: Path = SOURCE_DIR) -> bool:
    """Build the supervisor into `dest` unless it is fresh (see `is_fresh`); True if it was built now.

    Raises SandboxUnavailable as `build_supervisor` does.
    """
    if is_fresh(dest, source_dir=source_dir):
        return False
    build_supervisor(dest, cc=cc, source_dir=source_dir)
    return True


def main(argv: list[str] | None = None) -> int:
    """`python -m hatchway.sandbox.binary build|check [DEST]`: see the module's docstring."""
    parser = argparse.ArgumentParser(prog="python -m hatchway.sandbox.binary", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("build", "check"))
    parser.add_argument("dest", nargs="?", type=Path, default=BINARY, help=f"the binary (default: {BINARY})")
    parser.add_argument("--force", action="store_true", help="build even if the binary is fresh")
    parser.add_argument("--cc", default="cc", help="the C compiler (default: cc)")
    args = parser.parse_args(argv)
    if args.action == "check":
        return 0 if is_fresh(args.dest) else 1
    try:
        if args.force:
            build_supervisor(args.dest, cc=args.cc)
        elif not ensure_built(args.dest, cc=args.cc):
            return 0
    except SandboxUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"built {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
