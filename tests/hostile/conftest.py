"""Hostile tests: each performs an attack on a real worker (`hatchway serve`) and the real engine, as an outsider
would, and fails if the attack gets anywhere. Runnable by themselves (`pytest tests/hostile`) on a host before
trusting it with other people's work."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from types import TracebackType

from tests.acceptance.conftest import start_server

__all__ = ["OpenWatch", "start_server"]

_IN_ACCESS, _IN_OPEN = 0x1, 0x20


class OpenWatch:
    """Tells whether anything (any process: the worker runs in another) opened or read a file while watched, by
    inotify. Fails if inotify cannot watch it, rather than see nothing."""

    def __init__(self, path: Path) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        assert self._fd >= 0, f"inotify_init1: {os.strerror(ctypes.get_errno())}"
        watch = self._libc.inotify_add_watch(self._fd, str(path).encode(), _IN_ACCESS | _IN_OPEN)
        assert watch >= 0, f"inotify cannot watch {path}: {os.strerror(ctypes.get_errno())}"

    def touched(self) -> bool:
        """Whether the file was opened or read since the watch began."""
        try:
            return bool(os.read(self._fd, 4096))
        except BlockingIOError:
            return False

    def __enter__(self) -> OpenWatch:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        os.close(self._fd)
