"""A job's disk: loop-mounted ext4 volumes, their exact limit, wipe, fullness and sweep (host tier: root, loop
devices, mkfs.ext4)."""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from hatchway.engines.volume_stock import VolumeStock
from hatchway.engines.volumes import MIB, LoopVolumes, Volume, room_for_files
from tests.conftest import mounts_under
from tests.host.conftest import require

pytestmark = pytest.mark.host
NOBODY = (65534, 65534)


@pytest.fixture
def volumes(tmp_path: Path) -> Iterator[LoopVolumes]:
    require("loop devices", "disk tools")
    made = LoopVolumes(tmp_path / "volumes", owner=NOBODY)
    yield made
    made.sweep(set())
    assert mounts_under(tmp_path) == []


def free_bytes(volume: Volume) -> int:
    stat = os.statvfs(volume.root)
    return stat.f_bavail * stat.f_frsize


def fill(path: Path) -> int:
    """Write until the disk refuses; the bytes written."""
    written = 0
    with path.open("wb") as out:
        try:
            while True:
                written += out.write(bytes(MIB))
                out.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return written


def test_a_volume_holds_exactly_its_limit_and_is_laid_out_for_the_job(volumes: LoopVolumes) -> None:
    volume = volumes.create("a", 16)
    assert free_bytes(volume) == 16 * MIB
    assert (volume.work.stat().st_uid, volume.work.stat().st_gid) == NOBODY
    assert volume.tmp.stat().st_mode & 0o7777 == 0o1777
    assert volume.io.stat().st_mode & 0o777 == 0o700 and volume.io.stat().st_uid == 0
    assert mounts_under(volume.root) == [str(volume.root)]


def test_the_limit_can_change_for_the_next_job(volumes: LoopVolumes) -> None:
    volume = volumes.create("a", 16)
    volumes.limit(volume, 4)
    assert free_bytes(volume) == 4 * MIB
    assert fill(volume.work / "big") <= 4 * MIB
    assert volumes.full(volume)
    volumes.wipe(volume)
    volumes.limit(volume, 16)
    assert free_bytes(volume) == 16 * MIB and not volumes.full(volume)


def test_a_disk_is_full_only_near_its_end(volumes: LoopVolumes) -> None:
    volume = volumes.create("a", 32)
    (volume.tmp / "some").write_bytes(bytes(8 * MIB))
    assert not volumes.full(volume)
    fill(volume.work / "rest")
    assert volumes.full(volume)
    assert room_for_files(32) < 32 * MIB - 2 * MIB


def test_wipe_empties_the_job_s_directories_and_restores_their_modes(volumes: LoopVolumes) -> None:
    volume = volumes.create("a", 16)
    (volume.work / "deep" / "er").mkdir(parents=True)
    (volume.work / "deep" / "er" / "f").write_text("x")
    (volume.work / "link").symlink_to("/etc/passwd")
    (volume.tmp / "t").write_text("x")
    (volume.io / "stdout").write_text("x")
    (volume.work / "deep").chmod(0)
    volume.tmp.chmod(0o700)
    volumes.wipe(volume)
    assert [list(d.iterdir()) for d in (volume.work, volume.tmp, volume.io)] == [[], [], []]
    assert volume.tmp.stat().st_mode & 0o7777 == 0o1777
    assert Path("/etc/passwd").exists()


def inode_flags(path: Path) -> int:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        flags: int = struct.unpack("i", fcntl.ioctl(fd, 0x80086601, bytes(4)))[0]  # FS_IOC_GETFLAGS
        return flags
    finally:
        os.close(fd)


def state(path: Path) -> tuple[int, int, int, list[str], int]:
    found = path.stat()
    return found.st_mode, found.st_uid, found.st_gid, sorted(os.listxattr(path)), inode_flags(path)


def test_wipe_gives_the_job_s_directories_back_exactly_as_made(volumes: LoopVolumes) -> None:
    """Whatever the job (which owns `work`) or anyone did to them: owner, mode, extended attributes and ACLs, inode
    flags. A pooled container keeps these very directories mounted for its next job."""
    volume = volumes.create("a", 16)
    made = {part: state(part) for part in (volume.work, volume.tmp)}
    acl = struct.pack("<I", 2) + b"".join(
        struct.pack("<HHi", *entry) for entry in ((1, 7, -1), (2, 7, 4242), (4, 5, -1), (0x10, 7, -1), (0x20, 5, -1))
    )
    for part in (volume.work, volume.tmp):
        os.setxattr(part, "user.left", b"x")
        os.setxattr(part, "system.posix_acl_access", acl)
        os.setxattr(part, "system.posix_acl_default", acl)
        fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY)
        fcntl.ioctl(fd, 0x40086602, struct.pack("i", inode_flags(part) | 0x8 | 0x10000))  # +S, +D
        os.close(fd)
        os.chown(part, 4242, 4242)
        part.chmod(0o2000)
        assert state(part) != made[part]
    volumes.wipe(volume)
    assert {part: state(part) for part in (volume.work, volume.tmp)} == made
    assert made[volume.work][:4] == (0o40755, *NOBODY, [])
    assert made[volume.tmp][:4] == (0o41777, 0, 0, [])


def test_sweep_removes_every_volume_but_those_kept(volumes: LoopVolumes, tmp_path: Path) -> None:
    kept = volumes.create("kept", 8)
    gone = volumes.create("gone", 8)
    assert volumes.sweep({"kept"}) == ["gone"]
    assert not gone.root.parent.exists()
    assert mounts_under(tmp_path) == [str(kept.root)]
    assert volumes.find("kept") == kept


def test_a_stock_hands_a_wiped_spare_to_the_next_owner(volumes: LoopVolumes, tmp_path: Path) -> None:
    stock = VolumeStock(volumes, spares=1)
    first = stock.take("job-1", 16)
    (first.work / "secret").write_bytes(bytes(8 * MIB))
    stock.give_back(first, 16)
    [spare] = (tmp_path / "volumes").iterdir()
    assert spare.name.startswith("spare-"), "a spare's name is its own, so its last owner's can come back"
    assert (spare / "disk.ext4").stat().st_blocks * 512 < 4 * MIB, "the freed blocks went back (trim)"
    second = stock.take("job-2", 16)
    assert second.root.parent.name == "job-2" and not first.root.parent.exists()
    assert list(second.work.iterdir()) == [] and free_bytes(second) == 16 * MIB
    third = stock.take("job-3", 16)  # the stock is empty: a new one
    stock.give_back(second, 16)
    stock.give_back(third, 16)  # no room for a second spare: removed
    assert not third.root.parent.exists()
    stock.clear()
    assert mounts_under(tmp_path) == []
