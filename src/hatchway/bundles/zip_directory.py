"""A zip's central directory, sized up from its end record before anything parses it.

`zipfile.ZipFile` reads the whole central directory and makes an object of every entry when it opens an archive,
before a caller can count them: a 53 MB zip listing a million entries cost half a GB of memory and ten seconds
before the unpacker's file-count check ever ran. The end-of-central-directory record (and, for a zip64 archive,
its zip64 record) says how many entries there are and how large the directory is, in the last bytes of the file;
`check_zip_directory` reads only those and refuses an archive past the limits, so what zipfile then parses is
bounded. The record is found the way zipfile finds it (the last signature in the final 64 KiB + 22 bytes), so
both read the same one.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import BinaryIO

from hatchway.errors import BadBundle

_END = struct.Struct("<4s4H2LH")
_END_SIGNATURE = b"PK\x05\x06"
_LOCATOR = struct.Struct("<4sLQL")
_LOCATOR_SIGNATURE = b"PK\x06\x07"
_END64 = struct.Struct("<4sQ2H2L4Q")
_END64_SIGNATURE = b"PK\x06\x06"
_MAX_COMMENT = 0xFFFF
DIRECTORY_BYTES_PER_ENTRY = 1024
"""What a central directory may take per entry allowed: its 46-byte record and a name, extra field and comment of
up to ~1 KB on average (paths are rarely longer than a few hundred bytes)."""
_DIRECTORY_SLACK = 64 * 1024


def check_zip_directory(archive: Path, *, max_files: int) -> None:
    """Refuse (BadBundle) a zip whose end records list more than `max_files` entries, or a central directory
    larger than `max_files` such entries could take. An archive with no end record is left for zipfile to refuse.

    Where a zip64 record is there too, the larger of its figures and the plain record's (zipfile takes the zip64
    record's whenever there is one, whatever the plain record says)."""
    with archive.open("rb") as file:
        found = _end_record(file)
        if found is None:
            return
        position, entries, size = found
        zip64 = _zip64_counts(file, position)
    if zip64:
        # 0xFFFF and 0xFFFFFFFF in the plain record only say "see the zip64 record".
        entries = max([*(count for count, _ in zip64), *([entries] if entries != 0xFFFF else [])])
        size = max([*(length for _, length in zip64), *([size] if size != 0xFFFFFFFF else [])])
    if entries > max_files:
        raise BadBundle(f"bundle is a zip whose directory lists {entries} entries; at most {max_files} are allowed")
    most = max_files * DIRECTORY_BYTES_PER_ENTRY + _DIRECTORY_SLACK
    if size > most:
        raise BadBundle(
            f"bundle is a zip whose central directory takes {size} bytes; at most {most} are allowed for "
            f"{max_files} files"
        )


def _end_record(file: BinaryIO) -> tuple[int, int, int] | None:
    """Where the end record is, and the entries and directory size it gives; None if there is none."""
    end = file.seek(0, os.SEEK_END)
    start = max(end - _MAX_COMMENT - _END.size, 0)
    file.seek(start)
    tail = file.read()
    at = tail.rfind(_END_SIGNATURE)
    if at < 0 or len(tail) - at < _END.size:
        return None
    _, _, _, _, entries, size, _, _ = _END.unpack_from(tail, at)
    return start + at, entries, size


def _zip64_counts(file: BinaryIO, end_position: int) -> list[tuple[int, int]]:
    """The entries and directory size of the zip64 records the locator before the end record leads to: the one
    just before the locator (where zipfile reads it) and the one at the offset it names (where others do)."""
    if end_position < _LOCATOR.size:
        return []
    file.seek(end_position - _LOCATOR.size)
    signature, _, offset, _ = _LOCATOR.unpack(file.read(_LOCATOR.size))
    if signature != _LOCATOR_SIGNATURE:
        return []
    found = []
    for at in {end_position - _LOCATOR.size - _END64.size, offset}:
        if at < 0:
            continue
        file.seek(at)
        record = file.read(_END64.size)
        if len(record) == _END64.size and record.startswith(_END64_SIGNATURE):
            fields = _END64.unpack(record)
            found.append((fields[7], fields[8]))
    return found
