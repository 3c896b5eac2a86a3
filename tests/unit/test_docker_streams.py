"""Reading a blocking stream with a deadline (`docker_streams.within`): a pull's progress, a build step's output."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from hatchway.engines.docker_streams import within


def silent_after(items: list[int], released: threading.Event) -> Iterator[int]:
    """`items`, then nothing until `released` (a stream whose engine went quiet)."""
    yield from items
    released.wait(30)


def test_items_arrive_and_the_deadline_ends_a_silent_stream() -> None:
    released = threading.Event()
    got: list[int] = []
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        for item in within(lambda: silent_after([1, 2], released), 0.5):
            got.append(item)
    released.set()
    assert got == [1, 2] and 0.5 <= time.monotonic() - started < 10


def test_cancel_ends_a_silent_stream_soon_whatever_its_deadline() -> None:
    released, cancel = threading.Event(), threading.Event()
    threading.Timer(0.3, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(InterruptedError):
        list(within(lambda: silent_after([1], released), 600, cancel))
    released.set()
    assert time.monotonic() - started < 10, "a generous deadline: cancelled at 0.3 s, looked at every 0.25 s"
