"""A job's disk: one size-limited filesystem holding its working directory and /tmp, so that what a job writes can
never pass `limits.disk_mb`, nor fill the host's disk.

A volume is an ext4 filesystem (no journal, no reserved blocks) in a sparse file under the data directory,
loop-mounted; the sandbox gets its `work` directory as the working directory and its `tmp` directory as /tmp.
Why this and not quotas or a tmpfs: it needs nothing of the host's filesystem (project quotas need XFS or an
ext4 mounted with them), the kernel enforces the limit exactly (a write past it fails with ENOSPC), it works
the same for runc and gVisor (a bind mount either way), it costs memory only for what is cached, and the host
only stores what the job really wrote. Making one takes ~25 ms (mkfs and mount); pooled sandboxes make theirs
ahead.

A filesystem holds less than its size (ext4's tables), so a volume is made a little larger and the excess is
held by a preallocated, root-owned file outside the job's directories: `limit(volume, disk_mb)` sets exactly
what the job may use, in well under a millisecond, which also lets one pooled sandbox serve jobs with different
disk limits.

Layout of a volume's root: `work/` (the job's), `tmp/` (its /tmp, mode 1777), `io/` (root's, 0700: a pooled
job's stdin, stdout and stderr files, written by the supervisor) and `.reserve`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import re
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

from hatchway.errors import DiskUnavailable

log = logging.getLogger(__name__)

MIB = 1024 * 1024
FULL_MARGIN_BYTES = 2 * MIB
"""A volume with less free space than this, plus 0.5% of its size (or with no free inode), counts as full: ext4
refuses a write some way before the last block (it keeps room for the metadata of delayed allocations), so a
write past the limit leaves from a few KiB to about a MiB free."""


def room_for_files(disk_mb: int) -> int:
    """How much file content fits on a disk of `disk_mb` for sure: less the margin ext4 keeps (see above)."""
    disk_bytes = disk_mb * MIB
    return max(disk_bytes - FULL_MARGIN_BYTES - disk_bytes // 200, 0)


WORK_MODE = 0o755
"""The working directory's mode, owned by the job's user (by root and 0777 for a user given by name)."""

_SAFE_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9_.-]")
_OVERHEAD_FRACTION = 0.04  # ext4 keeps ~2.6% for inode tables and bitmaps at one inode per 32 KiB
_OVERHEAD_MB = 8
_BYTES_PER_INODE = 32 * 1024
_COMMAND_TIMEOUT_S = 60
_FS_IOC_GETFLAGS = 0x80086601
_FS_IOC_SETFLAGS = 0x40086602
_NOT_SUPPORTED = (errno.ENOTTY, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL)


@dataclass(frozen=True)
class Volume:
    """One mounted volume."""

    name: str
    root: Path
    """Where the filesystem is mounted (for a DirectoryVolumes volume, a plain directory)."""
    backing: Path | None
    """The sparse file it lives in; None for a plain directory."""

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def io(self) -> Path:
        return self.root / "io"


class Volumes(Protocol):
    """Makes, limits, wipes and removes volumes. Every method blocks: call them in a thread."""

    def create(self, name: str, disk_mb: int) -> Volume:
        """A fresh, empty volume whose job may write up to `disk_mb`. Raises DiskUnavailable."""
        ...

    def limit(self, volume: Volume, disk_mb: int) -> None:
        """Let the job write up to `disk_mb` from now on (at most what the volume was made for)."""
        ...

    def wipe(self, volume: Volume) -> None:
        """Empty `work`, `tmp` and `io`. Raises DiskUnavailable if something is left."""
        ...

    def full(self, volume: Volume) -> bool:
        """Whether the job used all its space (or all the files the filesystem can hold)."""
        ...

    def remove(self, volume: Volume) -> None:
        """Unmount and delete the volume; a volume already gone is not an error."""
        ...

    def sweep(self, keep: set[str]) -> list[str]:
        """Remove every volume an earlier run of the worker left (after a crash) but those named in `keep` (jobs
        re-attached after a restart); the names removed."""
        ...

    def find(self, name: str) -> Volume:
        """The volume `create(name, ...)` made, e.g. for a job re-attached after a restart."""
        ...

    def rename(self, volume: Volume, name: str) -> Volume:
        """The same volume under another name (a spare handed to a new owner)."""
        ...

    def used_bytes(self, volume: Volume) -> int:
        """How much of the volume is in use now."""
        ...

    def trim(self, volume: Volume) -> None:
        """Give the host back the space of blocks freed inside the volume."""
        ...


class LoopVolumes:
    """Volumes as loop-mounted ext4 files under `base`; needs root and `mkfs.ext4`."""

    def __init__(self, base: Path, *, owner: tuple[int, int] | None) -> None:
        self._base = base
        self._owner = owner

    def create(self, name: str, disk_mb: int) -> Volume:
        volume = self.find(name)
        try:
            self.remove(volume)
            volume.root.mkdir(parents=True)
            size_mb = disk_mb + max(_OVERHEAD_MB, int(disk_mb * _OVERHEAD_FRACTION))
            assert volume.backing is not None
            with volume.backing.open("wb") as backing:
                backing.truncate(size_mb * MIB)
            run_tool(
                "mkfs.ext4", "-q", "-F", "-O", "^has_journal", "-m", "0", "-i", str(_BYTES_PER_INODE),
                "-E", "lazy_itable_init=1,nodiscard", str(volume.backing),
            )  # fmt: skip
            run_tool("mount", "-o", "loop,nosuid,nodev,noatime", str(volume.backing), str(volume.root))
        except (OSError, DiskUnavailable) as exc:
            self.remove(volume)
            raise DiskUnavailable(f"could not make a {disk_mb} MB disk for the job: {exc}") from exc
        _lay_out(volume, self._owner)
        self.limit(volume, disk_mb)
        return volume

    def limit(self, volume: Volume, disk_mb: int) -> None:
        reserve = volume.root / ".reserve"
        fd = os.open(reserve, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            os.ftruncate(fd, 0)
            free = _free_bytes(volume.root)
            if free > disk_mb * MIB:
                os.posix_fallocate(fd, 0, free - disk_mb * MIB)
        finally:
            os.close(fd)

    def wipe(self, volume: Volume) -> None:
        _wipe(volume, self._owner)

    def full(self, volume: Volume) -> bool:
        stat = os.statvfs(volume.root)
        margin = FULL_MARGIN_BYTES + stat.f_blocks * stat.f_frsize // 200
        return stat.f_bavail * stat.f_frsize < margin or stat.f_favail == 0

    def remove(self, volume: Volume) -> None:
        home = volume.root.parent
        if os.path.ismount(volume.root):
            unmount(volume.root)
        _remove_tree(home)

    def find(self, name: str) -> Volume:
        home = self._base / _dir_name(name)
        return Volume(name=name, root=home / "mnt", backing=home / "disk.ext4")

    def rename(self, volume: Volume, name: str) -> Volume:
        renamed = self.find(name)
        os.rename(volume.root.parent, renamed.root.parent)  # the mount moves with its parent directory
        return renamed

    def used_bytes(self, volume: Volume) -> int:
        stat = os.statvfs(volume.root)
        return (stat.f_blocks - stat.f_bfree) * stat.f_frsize

    def trim(self, volume: Volume) -> None:
        run_tool("fstrim", str(volume.root))

    def sweep(self, keep: set[str]) -> list[str]:
        if not self._base.is_dir():
            return []
        names = []
        kept = {_dir_name(name) for name in keep}
        for home in sorted(self._base.iterdir()):
            if home.name in kept:
                continue
            try:
                self.remove(self.find(home.name))
                names.append(home.name)
            except DiskUnavailable as exc:
                log.warning("could not remove the volume %s: %s", home, exc, extra={"event": "volume_sweep_failed"})
        return names


class DirectoryVolumes:
    """Plain directories with no size limit: for unit tests on the in-memory engine, never for real jobs."""

    enforces_size: ClassVar[bool] = False
    """A job may write past its `disk_mb`: `limit` changes nothing and a volume is never `full`."""

    def __init__(self, base: Path, *, owner: tuple[int, int] | None) -> None:
        self._base = base
        self._owner = owner

    def create(self, name: str, disk_mb: int) -> Volume:
        volume = self.find(name)
        _remove_tree(volume.root)
        volume.root.mkdir(parents=True)
        _lay_out(volume, self._owner)
        return volume

    def limit(self, volume: Volume, disk_mb: int) -> None:
        return None

    def wipe(self, volume: Volume) -> None:
        _wipe(volume, self._owner)

    def full(self, volume: Volume) -> bool:
        return False

    def remove(self, volume: Volume) -> None:
        _remove_tree(volume.root)

    def find(self, name: str) -> Volume:
        return Volume(name=name, root=self._base / _dir_name(name), backing=None)

    def rename(self, volume: Volume, name: str) -> Volume:
        renamed = self.find(name)
        os.rename(volume.root, renamed.root)
        return renamed

    def used_bytes(self, volume: Volume) -> int:
        used = 0
        for directory, _, files in os.walk(volume.root):
            for name in files:
                with contextlib.suppress(FileNotFoundError):
                    used += os.lstat(os.path.join(directory, name)).st_blocks * 512
        return used

    def trim(self, volume: Volume) -> None:
        return None

    def sweep(self, keep: set[str]) -> list[str]:
        kept = {_dir_name(name) for name in keep}
        names = [path.name for path in self._base.iterdir() if path.name not in kept] if self._base.is_dir() else []
        for name in names:
            _remove_tree(self._base / name)
        return sorted(names)


def _dir_name(name: str) -> str:
    """A directory name for volume `name` that a bind mount can name: Docker splits its specs at ':' and ','
    (which a job id may hold)."""
    if _SAFE_NAME.fullmatch(name):
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:12]
    return f"{_UNSAFE_CHARS.sub('-', name)[:80]}-{digest}"


def _lay_out(volume: Volume, owner: tuple[int, int] | None) -> None:
    volume.work.mkdir(exist_ok=True)
    volume.tmp.mkdir(exist_ok=True)
    volume.io.mkdir(mode=0o700, exist_ok=True)
    _restore_dirs(volume, owner)


def _restore_dirs(volume: Volume, owner: tuple[int, int] | None) -> None:
    """Make the job's two directories exactly as a fresh volume has them, whatever a job did to them (it owns
    `work`): owner and mode (`chmod 0` would lock every later job out), no extended attributes (a default ACL would
    hand a later job's files to another uid), and the inode flags of `io`, made beside them and out of any job's
    reach (`chattr +S` would make every later job's writes synchronous). The directories themselves stay: they are
    what a pooled container has mounted."""
    made_by = os.stat(volume.root)
    maker = (made_by.st_uid, made_by.st_gid)
    flags = _inode_flags(volume.io)
    _restore(volume.tmp, mode=0o1777, owner=maker, flags=flags)
    if owner is not None:
        _restore(volume.work, mode=WORK_MODE, owner=owner, flags=flags)
    else:
        _restore(volume.work, mode=0o777, owner=maker, flags=flags)


def _restore(path: Path, *, mode: int, owner: tuple[int, int], flags: int | None) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        try:
            names = os.listxattr(fd)
        except OSError as exc:
            if exc.errno not in _NOT_SUPPORTED:
                raise
            names = []
        for name in names:
            if not name.startswith("security."):  # the host's security module's labels: no job can set them
                os.removexattr(fd, name)
        if flags is not None and _get_flags(fd) != flags:
            fcntl.ioctl(fd, _FS_IOC_SETFLAGS, struct.pack("i", flags))
        os.fchown(fd, *owner)
        os.fchmod(fd, mode)  # after fchown, which may clear bits
    finally:
        os.close(fd)


def _inode_flags(path: Path) -> int | None:
    """The inode flags (`lsattr`) of `path`; None on a filesystem that has none."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        return _get_flags(fd)
    except OSError as exc:
        if exc.errno in _NOT_SUPPORTED:
            return None
        raise
    finally:
        os.close(fd)


def _get_flags(fd: int) -> int:
    flags: int = struct.unpack("i", fcntl.ioctl(fd, _FS_IOC_GETFLAGS, bytes(4)))[0]
    return flags


def _wipe(volume: Volume, owner: tuple[int, int] | None) -> None:
    for directory in (volume.work, volume.tmp, volume.io):
        with os.scandir(directory) as entries:
            for entry in entries:
                path = Path(entry.path)
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
        if any(directory.iterdir()):
            raise DiskUnavailable(f"could not empty {directory}")
    _restore_dirs(volume, owner)


def _free_bytes(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def unmount(path: Path) -> None:
    """Unmount `path`; if it is still busy (a process of a sandbox not yet gone), detach it now and let the kernel
    free it after. Raises DiskUnavailable."""
    try:
        run_tool("umount", str(path))
    except DiskUnavailable:
        run_tool("umount", "--lazy", str(path))


def run_tool(*argv: str) -> None:
    """Run a system tool (mount, mkfs.ext4, ...); raises DiskUnavailable with its message if it fails."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=_COMMAND_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DiskUnavailable(f"{argv[0]} failed: {exc}") from exc
    if done.returncode != 0:
        raise DiskUnavailable(f"{argv[0]} failed: {(done.stderr or done.stdout).strip() or done.returncode}")


def numeric_owner(user: str) -> tuple[int, int] | None:
    """`uid:gid` as numbers; None for a user given by name."""
    uid, _, gid = user.partition(":")
    if uid.isdigit() and (gid.isdigit() or not gid):
        return int(uid), int(gid or uid)
    return None
