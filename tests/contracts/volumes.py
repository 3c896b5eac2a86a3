"""The `Volumes` contract: a job's disk as the runner, the volume stock and the pools use it, whichever kind it is."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from hatchway.engines.volumes import MIB, Volume, Volumes, room_for_files

OWNER = (65534, 65534)


@dataclass(frozen=True)
class VolumesSubject:
    """Volumes under contract, made for `OWNER`."""

    volumes: Volumes
    enforces_size: bool
    """Whether a volume holds at most its `disk_mb` (a write past it fails with ENOSPC, and it is then `full`)."""


def write(path: Path, size: int) -> None:
    """Write `size` bytes of zeros to `path` and make them land on the disk."""
    with path.open("wb") as out:
        for _ in range(size // MIB):
            out.write(bytes(MIB))
        out.write(bytes(size % MIB))
        out.flush()
        os.fsync(out.fileno())


def listing(volume: Volume) -> dict[str, list[str]]:
    return {part.name: sorted(os.listdir(part)) for part in (volume.work, volume.tmp, volume.io)}


class VolumesContract:
    """Every kind of volume does this. Subclasses provide the `subject` fixture."""

    def test_a_new_volume_is_empty_and_laid_out_for_its_job(self, subject: VolumesSubject) -> None:
        volume = subject.volumes.create("job-1", 16)
        assert volume == subject.volumes.find("job-1")
        assert listing(volume) == {"work": [], "tmp": [], "io": []}
        assert (volume.work.stat().st_uid, volume.work.stat().st_gid) == OWNER
        assert volume.tmp.stat().st_mode & 0o7777 == 0o1777
        assert (volume.io.stat().st_mode & 0o777, volume.io.stat().st_uid) == (0o700, 0), "io is root's"
        assert subject.volumes.full(volume) is False

    def test_making_a_volume_again_gives_a_fresh_one(self, subject: VolumesSubject) -> None:
        volume = subject.volumes.create("job-1", 16)
        (volume.work / "old").write_text("left over")
        again = subject.volumes.create("job-1", 16)
        assert listing(again) == {"work": [], "tmp": [], "io": []}

    def test_the_job_may_write_its_disk_and_no_more(self, subject: VolumesSubject) -> None:
        volumes = subject.volumes
        volume = volumes.create("job-1", 16)
        write(volume.work / "fits", room_for_files(16))
        assert volumes.used_bytes(volume) >= room_for_files(16)
        if subject.enforces_size:
            with pytest.raises(OSError) as raised:
                write(volume.tmp / "past", 16 * MIB)  # /tmp shares the job's disk
            assert raised.value.errno == errno.ENOSPC
            assert volumes.full(volume) is True
        else:
            write(volume.tmp / "past", 16 * MIB)  # enforces_size is False: nothing stops it
            assert volumes.full(volume) is False, "a volume that enforces no size is never full"

    def test_limit_changes_what_the_next_job_may_write(self, subject: VolumesSubject) -> None:
        volumes = subject.volumes
        volume = volumes.create("job-1", 16)
        volumes.limit(volume, 4)
        if subject.enforces_size:
            with pytest.raises(OSError) as raised:
                write(volume.work / "big", 8 * MIB)
            assert raised.value.errno == errno.ENOSPC
        else:
            write(volume.work / "big", 8 * MIB)
        volumes.wipe(volume)
        volumes.limit(volume, 16)
        write(volume.work / "big", 8 * MIB)

    def test_used_bytes_follows_what_is_written_and_freed(self, subject: VolumesSubject) -> None:
        volumes = subject.volumes
        volume = volumes.create("job-1", 16)
        empty = volumes.used_bytes(volume)
        write(volume.work / "data", 4 * MIB)
        assert volumes.used_bytes(volume) >= empty + 4 * MIB
        (volume.work / "data").unlink()
        volumes.trim(volume)
        assert volumes.used_bytes(volume) < empty + MIB

    def test_wipe_empties_the_job_s_directories_and_gives_back_their_modes(self, subject: VolumesSubject) -> None:
        volumes = subject.volumes
        volume = volumes.create("job-1", 16)
        (volume.work / "deep" / "er").mkdir(parents=True)
        (volume.work / "deep" / "er" / "file").write_text("x")
        (volume.tmp / "scratch").write_text("x")
        (volume.io / "stdout").write_text("x")
        os.symlink("/etc/passwd", volume.work / "link")
        volume.work.chmod(0o700)
        volume.tmp.chmod(0o700)
        volumes.wipe(volume)
        assert listing(volume) == {"work": [], "tmp": [], "io": []}
        assert (volume.work.stat().st_uid, volume.work.stat().st_gid) == OWNER
        assert volume.tmp.stat().st_mode & 0o7777 == 0o1777
        assert Path("/etc/passwd").exists(), "a link is removed, never followed"

    def test_rename_keeps_the_content_under_the_new_name(self, subject: VolumesSubject) -> None:
        volumes = subject.volumes
        volume = volumes.create("job-1", 16)
        (volume.work / "kept").write_text("kept")
        renamed = volumes.rename(volume, "spare-1")
        assert renamed == volumes.find("spare-1")
        assert (renamed.work / "kept").read_text() == "kept"
        assert not volume.root.exists()
        write(renamed.work / "more", MIB)

    def test_remove_is_idempotent(self, subject: VolumesSubject) -> None:
        volumes = subject.volumes
        volume = volumes.create("job-1", 16)
        volumes.remove(volume)
        assert not volume.root.exists()
        volumes.remove(volume)
        volumes.remove(volumes.find("never-made"))
        assert volumes.sweep(set()) == []

    def test_sweep_removes_what_an_earlier_run_left_but_those_kept(self, subject: VolumesSubject) -> None:
        volumes = subject.volumes
        made = {name: volumes.create(name, 16) for name in ("a", "b", "c")}
        assert volumes.sweep({"b", "not-there"}) == ["a", "c"]
        assert not made["a"].root.exists() and not made["c"].root.exists()
        write(made["b"].work / "still", MIB)
        assert volumes.sweep(set()) == ["b"]
        assert volumes.sweep(set()) == []

    def test_a_job_id_a_bind_mount_cannot_name_still_names_a_volume(self, subject: VolumesSubject) -> None:
        volumes = subject.volumes
        volume = volumes.create("queue:item,1", 16)
        assert volume.name == "queue:item,1"
        assert ":" not in str(volume.root) and "," not in str(volume.root)
        assert volumes.find("queue:item,1") == volume
        assert volumes.sweep({"queue:item,1"}) == []
        volumes.remove(volume)
