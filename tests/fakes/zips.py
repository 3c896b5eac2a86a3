"""Zips no archiver would write, made byte by byte: a central directory of any number of entries (each an empty
file, all pointing at one local header), behind zip64 end records that say how many there are."""

from __future__ import annotations

import struct
from pathlib import Path

_LOCAL = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 0, 0, 0x21, 0, 0, 0, 1, 0) + b"a"
_CENTRAL = struct.Struct("<4s6H3L5H2L")
_REGULAR_FILE = 0o100644 << 16


def many_entries_zip(path: Path, entries: int, *, claimed: int | None = None) -> Path:
    """A zip whose central directory really holds `entries` records (53 bytes each); its zip64 end record says
    `claimed` (default: `entries`), and its plain end record says 0xFFFF ("see the zip64 record")."""
    head = _CENTRAL.pack(b"PK\x01\x02", 0x031E, 20, 0, 0, 0, 0x21, 0, 0, 0, 7, 0, 0, 0, 0, _REGULAR_FILE, 0)
    with path.open("wb") as out:
        out.write(_LOCAL)
        start = out.tell()
        for first in range(0, entries, 100_000):
            out.write(b"".join(head + b"f%06d" % index for index in range(first, min(first + 100_000, entries))))
        end = out.tell()
        count = entries if claimed is None else claimed
        out.write(struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, end - start, start))
        out.write(struct.pack("<4sLQL", b"PK\x06\x07", 0, end, 1))
        out.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0))
    return path
