"""PortAllocator and ArtifactStore: pure logic on the local host and file system."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from hatchway.errors import ArtifactNotFound, PortsExhausted
from hatchway.jobs.ports import PortAllocator
from hatchway.output.artifacts import ArtifactStore


def test_ports_are_never_shared_and_come_back_on_release() -> None:
    allocator = PortAllocator(24100, 24103)
    first = allocator.allocate("a", ["web", "admin"])
    second = allocator.allocate("b", ["web", "x"])
    assert len(set(first.values()) | set(second.values())) == 4
    with pytest.raises(PortsExhausted):
        allocator.allocate("c", ["one"])
    allocator.release("a")
    third = allocator.allocate("c", ["one", "two"])
    assert set(third.values()) == set(first.values())


def test_a_failed_allocation_holds_nothing() -> None:
    allocator = PortAllocator(24110, 24111)
    with pytest.raises(PortsExhausted):
        allocator.allocate("a", ["p1", "p2", "p3"])
    assert allocator.in_use() == {}


def test_a_port_something_else_listens_on_is_skipped() -> None:
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        allocator = PortAllocator(port, port)
        with pytest.raises(PortsExhausted):
            allocator.allocate("a", ["web"])


def test_claim_restores_a_recovered_jobs_ports() -> None:
    allocator = PortAllocator(24120, 24121)
    allocator.claim("old", {"web": 24120})
    assert allocator.allocate("new", ["web"]) == {"web": 24121}


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    out = tmp_path / "ws" / "out"
    (out / "sub").mkdir(parents=True)
    (out / "a.txt").write_text("aaaa")
    (out / "sub" / "b.txt").write_text("bb")
    (out / "link").symlink_to("/etc/passwd")
    (tmp_path / "ws" / "elsewhere.txt").write_text("not an artifact")
    return tmp_path / "ws"


def test_collect_keeps_regular_files_under_out_only(tmp_path: Path, workspace: Path) -> None:
    store = ArtifactStore(tmp_path / "kept", max_bytes=100, max_files=100, retention_s=60)
    collected = store.collect("job", workspace)
    assert (collected.files, collected.bytes, collected.truncated) == (2, 6, False)
    assert [(a.path, a.size) for a in store.listing("job")] == [("a.txt", 4), ("sub/b.txt", 2)]
    assert store.path("job", "sub/b.txt").read_text() == "bb"


def test_collect_stops_at_the_cap(tmp_path: Path, workspace: Path) -> None:
    store = ArtifactStore(tmp_path / "kept", max_bytes=5, max_files=100, retention_s=60)
    collected = store.collect("job", workspace)
    assert collected.truncated and collected.over_bytes and not collected.over_files and collected.bytes <= 5
    assert "artifacts_max_bytes = 5" in store.left_out(collected)


def test_collect_keeps_at_most_max_files_files_and_directories(tmp_path: Path) -> None:
    out = tmp_path / "ws" / "out"
    (out / "deep" / "er").mkdir(parents=True)
    for index in range(500):
        (out / f"{index:03}").touch()
        (out / "deep" / "er" / f"{index:03}").touch()
    store = ArtifactStore(tmp_path / "kept", max_bytes=100, max_files=10, retention_s=60)
    collected = store.collect("job", tmp_path / "ws")
    kept = list((tmp_path / "kept" / "job").rglob("*"))
    assert len(kept) == 10 and collected.files == len([path for path in kept if path.is_file()])
    assert collected.over_files and not collected.over_bytes
    assert store.left_out(collected).startswith(
        "some files under out/ were not kept, over the artifact limits (artifacts_max_files = 10)"
    )


@pytest.mark.parametrize("bad", ["../kept2/x", "../../etc/passwd", "/etc/passwd", "missing.txt", "sub"])
def test_paths_outside_a_jobs_artifacts_are_not_found(tmp_path: Path, workspace: Path, bad: str) -> None:
    store = ArtifactStore(tmp_path / "kept", max_bytes=100, max_files=100, retention_s=60)
    store.collect("job", workspace)
    with pytest.raises(ArtifactNotFound):
        store.path("job", bad)


def test_expire_removes_only_artifacts_past_retention(tmp_path: Path, workspace: Path) -> None:
    store = ArtifactStore(tmp_path / "kept", max_bytes=100, max_files=100, retention_s=3600)
    store.collect("old", workspace)
    store.collect("new", workspace)
    two_hours_ago = time.time() - 7200
    os.utime(tmp_path / "kept" / "old", (two_hours_ago, two_hours_ago))
    assert store.expire() == ["old"]
    assert store.listing("old") == [] and len(store.listing("new")) == 2
