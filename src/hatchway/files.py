"""Writing a file so that a reader, or a crash, sees the old file or the new one and never half of one."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_atomically(dest: Path, data: bytes, *, mode: int = 0o644, durable: bool = False) -> None:
    """Write `data` to a temporary file beside `dest` and rename it over `dest`. `durable`: flushed to the disk
    before the rename, so that after a power cut `dest` holds the new data or the old, never an empty file."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            if durable:
                out.flush()
                os.fsync(out.fileno())
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
