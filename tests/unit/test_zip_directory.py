"""A zip's entry count and central directory size are checked from its end records, before zipfile parses the
directory (which costs memory and time per entry)."""

from __future__ import annotations

import resource
import struct
import time
import zipfile
from pathlib import Path

import pytest

from hatchway.bundles import unpack
from hatchway.bundles.zip_directory import DIRECTORY_BYTES_PER_ENTRY, check_zip_directory
from hatchway.errors import BadBundle
from tests.fakes.zips import many_entries_zip


def test_an_honest_zip_within_the_limits_passes(tmp_path: Path) -> None:
    check_zip_directory(many_entries_zip(tmp_path / "a.zip", 100), max_files=100)
    with zipfile.ZipFile(tmp_path / "b.zip", "w") as honest:
        for index in range(10):
            honest.writestr(f"dir/{index}.txt", "x" * index)
        honest.comment = b"a comment" * 100
    check_zip_directory(tmp_path / "b.zip", max_files=10)
    assert unpack(tmp_path / "b.zip", tmp_path / "out", max_total_bytes=1000, max_files=11).files == 11


def test_a_zip_listing_more_entries_than_allowed_is_refused_from_its_end_record(tmp_path: Path) -> None:
    with pytest.raises(BadBundle, match="lists 101 entries; at most 100"):
        check_zip_directory(many_entries_zip(tmp_path / "a.zip", 101), max_files=100)


def test_a_zip64_record_claiming_few_entries_over_a_huge_directory_is_refused_by_its_size(tmp_path: Path) -> None:
    archive = many_entries_zip(tmp_path / "a.zip", 5000, claimed=3)
    with pytest.raises(BadBundle, match=r"central directory takes 265000 bytes; at most \d+ are allowed for 10"):
        check_zip_directory(archive, max_files=10)
    assert 265000 > 10 * DIRECTORY_BYTES_PER_ENTRY


def test_a_plain_end_record_cannot_hide_a_zip64_record(tmp_path: Path) -> None:
    archive = many_entries_zip(tmp_path / "a.zip", 50)
    data = bytearray(archive.read_bytes())
    struct.pack_into("<HH", data, len(data) - 14, 2, 2)  # the plain record now says 2 entries; zipfile reads 50
    archive.write_bytes(bytes(data))
    with pytest.raises(BadBundle, match="lists 50 entries"):
        check_zip_directory(archive, max_files=10)


def test_a_million_entry_zip_is_refused_before_zipfile_parses_it(tmp_path: Path) -> None:
    archive = many_entries_zip(tmp_path / "a.zip", 1_000_000)
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    began = time.monotonic()
    with pytest.raises(BadBundle, match="lists 1000000 entries; at most 20000"):
        unpack(archive, tmp_path / "out", max_total_bytes=1 << 30, max_files=20_000)
    assert time.monotonic() - began < 2, "parsing the directory takes ~10 s here; reading its end takes ~0"
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    assert grown_mb < 100, f"the peak memory grew by {grown_mb:.0f} MB (parsing the directory: ~450 MB)"
