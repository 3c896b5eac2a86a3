"""Talking to a sandbox's supervisor over the container's attached stdin and stdout.

The attach stream multiplexes stdout and stderr in frames (an 8-byte header: stream, three zero bytes, a
big-endian length). The supervisor writes one JSON line per request to stdout; its stderr carries only its
own diagnostics, which are kept for error messages. Nothing the sandboxed programs do reaches this channel:
their standard streams are files the supervisor opened, and they cannot touch the supervisor's descriptors.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
from typing import Any

from hatchway.errors import EngineError

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">BxxxL")
_STDOUT, _STDERR = 1, 2
_MAX_LINE = 1024 * 1024
_STDERR_KEPT = 4096


class SupervisorChannel:
    """Request/response over one attached container socket; one request at a time."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._raw: socket.socket = getattr(sock, "_sock", sock)
        self._buffer = bytearray()
        self._lines: list[bytes] = []
        self._stderr = bytearray()
        self._lock = threading.Lock()

    @property
    def diagnostics(self) -> str:
        """The last of what the supervisor wrote to its stderr."""
        return self._stderr.decode(errors="replace").strip()

    def read_line(self, timeout_s: float | None) -> bytes:
        """The next line the supervisor wrote. Raises EngineError if the container's stream ends first."""
        self._raw.settimeout(timeout_s)
        try:
            while not self._lines:
                self._read_frame()
        except TimeoutError as exc:
            raise EngineError(f"the sandbox supervisor did not answer within {timeout_s:.0f} s") from exc
        except OSError as exc:
            raise EngineError(f"the sandbox's channel broke: {exc}") from exc
        return self._lines.pop(0)

    def request(self, data: bytes, timeout_s: float | None) -> bytes:
        """Send one request and return its answer line."""
        with self._lock:
            try:
                self._raw.sendall(data)
            except OSError as exc:
                raise EngineError(f"the sandbox's channel broke: {exc}{self._said()}") from exc
            return self.read_line(timeout_s)

    def close(self) -> None:
        """End the channel; a thread blocked reading it wakes (a close alone may not wake it)."""
        with contextlib.suppress(OSError):  # not connected any more
            self._raw.shutdown(socket.SHUT_RDWR)
        self._raw.close()
        self._sock.close()

    def _read_frame(self) -> None:
        header = self._read_exactly(_HEADER.size)
        stream, size = _HEADER.unpack(header)
        payload = self._read_exactly(size)
        if stream == _STDERR:
            self._stderr += payload
            del self._stderr[:-_STDERR_KEPT]
            return
        if stream != _STDOUT:
            return
        self._buffer += payload
        while (end := self._buffer.find(b"\n")) >= 0:
            self._lines.append(bytes(self._buffer[:end]))
            del self._buffer[: end + 1]
        if len(self._buffer) > _MAX_LINE:
            raise EngineError("the sandbox supervisor sent an over-long line")

    def _read_exactly(self, size: int) -> bytes:
        chunks = bytearray()
        while len(chunks) < size:
            chunk = self._raw.recv(size - len(chunks))
            if not chunk:
                raise EngineError(f"the sandbox ended (its supervisor's stream closed){self._said()}")
            chunks += chunk
        return bytes(chunks)

    def _said(self) -> str:
        said = self.diagnostics
        return f"; it said: {said[-500:]}" if said else ""
