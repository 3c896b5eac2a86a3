"""A zip's central directory was parsed whole, one Python object per entry, before the unpacker counted them: a
53 MB bundle listing a million entries cost the worker ~450 MB of memory and ~10 s of a core before it was refused
for having too many files, and a few at once could take the worker down. Now the count and the directory's size are
read from the zip's end records first, and such a bundle is refused before anything parses its directory."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.acceptance.conftest import Server, ServerFactory
from tests.fakes.zips import many_entries_zip

pytestmark = pytest.mark.docker

ENTRIES = 1_000_000


def peak_rss_mb(server: Server) -> float:
    """The worker process's peak resident memory so far (VmHWM), in MB."""
    assert server.process is not None
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    kb = next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))
    return int(kb) / 1024


def test_a_zip_listing_a_million_entries_is_refused_before_they_are_parsed(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    archive = many_entries_zip(tmp_path / "million.zip", ENTRIES)
    server = start_server(bundle_allowed_urls=f"file://{tmp_path}/*")
    warm = server.post_job(wait=True, image="hatchway-test/busybox", command="true")  # the worker's own peak first
    assert warm.json()["state"] == "succeeded", warm.text
    before = peak_rss_mb(server)
    began = time.monotonic()
    answer = server.post_job(wait=True, image="hatchway-test/busybox", command="true", bundle_url=f"file://{archive}")
    took_s = time.monotonic() - began
    grown_mb = peak_rss_mb(server) - before
    job = answer.json()
    assert (job["state"], job["reason"]) == ("failed", "bad_bundle"), job
    assert grown_mb < 100, f"the worker's peak memory grew by {grown_mb:.0f} MB in {took_s:.1f} s: {job['message']}"
    assert f"lists {ENTRIES} entries; at most 20000" in job["message"], job["message"]
    assert server.stop() == 0
