"""A Docker container's attached stream: its stdout and stderr frames copied to a job's sink, stdin fed in, and
the engine's log read back for what the stream had not delivered (after an engine outage or a worker restart);
and any blocking stream of the engine's (a pull, a build step's output) read with a deadline (`within`)."""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
from collections.abc import Callable, Generator, Iterator
from typing import Any, TypeVar, cast

import docker
from docker.utils.socket import STDERR, STDOUT, frames_iter

from hatchway.engines.base import OutputSink
from hatchway.models import PROGRAM_STREAMS, Stream

_T = TypeVar("_T")
_CANCEL_CHECK_S = 0.25


class Counted:
    """An `OutputSink` that counts, per stream, what it passes on."""

    def __init__(self, sink: OutputSink, delivered: dict[Stream, int]) -> None:
        self._sink = sink
        self._delivered = delivered

    def write(self, stream: Stream, data: bytes) -> None:
        self._delivered[stream] = self._delivered.get(stream, 0) + len(data)
        self._sink.write(stream, data)


def raw(sock: Any) -> socket.socket:
    """The socket under the SDK's attach socket (a SocketIO wrapper)."""
    inner: socket.socket = getattr(sock, "_sock", sock)
    return inner


def close(sock: Any) -> None:
    # SocketIO.close() leaves the socket under it open.
    raw(sock).close()
    sock.close()


def pump(sock: Any, sink: OutputSink) -> None:
    """Copy the attached stdout/stderr frames to the sink until the container closes them."""
    with contextlib.suppress(OSError):
        for stream_id, data in frames_iter(sock, tty=False):  # type: ignore[no-untyped-call]
            if stream_id == STDOUT:
                sink.write(Stream.STDOUT, data)
            elif stream_id == STDERR:
                sink.write(Stream.STDERR, data)


def feed_stdin(sock: Any, data: bytes) -> None:
    # A job may exit without reading all of its input; that is its business, not an error.
    with contextlib.suppress(OSError):
        raw(sock).sendall(data)
        raw(sock).shutdown(socket.SHUT_WR)


def collect_logs(api: docker.APIClient, container_id: str, sink: OutputSink, skip: dict[Stream, int]) -> None:
    """Deliver the container's output from the engine's log, less the first `skip` bytes of each stream. The
    log keeps twice the job's output cap, and a job is stopped at the cap, so it holds all that counts."""
    for stream in PROGRAM_STREAMS:
        left = skip.get(stream, 0)
        chunks = api.logs(container_id, stdout=stream is Stream.STDOUT, stderr=stream is Stream.STDERR, stream=True)
        for chunk in chunks:
            if left >= len(chunk):
                left -= len(chunk)
                continue
            sink.write(stream, chunk[left:])
            left = 0


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_END = object()


def within(
    start: Callable[[], Iterator[_T]], timeout_s: float, cancel: threading.Event | None = None
) -> Generator[_T, None, None]:
    """Iterate a blocking stream from a helper thread, raising TimeoutError once `timeout_s` has passed, or
    InterruptedError soon after `cancel` is set.

    When the caller stops (deadline, error or just done), the helper closes the stream at its next item, which
    closes the connection; a stream that stays silent is left to its own read timeout.
    """
    items: queue.Queue[object] = queue.Queue()
    stop = threading.Event()

    def pump() -> None:
        try:
            stream = start()
            try:
                for item in stream:
                    if stop.is_set():
                        break
                    items.put(item)
            finally:
                close = getattr(stream, "close", None)
                if close is not None:
                    close()
            items.put(_END)
        except BaseException as exc:
            items.put(_Failed(exc))

    threading.Thread(target=pump, name="docker-stream", daemon=True).start()
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            left = max(deadline - time.monotonic(), 0)
            try:
                item = items.get(timeout=left if cancel is None else min(left, _CANCEL_CHECK_S))
            except queue.Empty:
                if cancel is not None and cancel.is_set():
                    raise InterruptedError from None
                if time.monotonic() < deadline:
                    continue
                raise TimeoutError from None
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.exc
            yield cast(_T, item)
    finally:
        stop.set()
