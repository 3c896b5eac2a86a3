"""The queue-pull platform's event bus for the tests: the real Redis that scripts/test-redis.sh keeps on
127.0.0.1:6399, and a real subscriber to it, which is all the platform's consumers (its storage worker) are."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import redis

REDIS_URL = "redis://127.0.0.1:6399/0"

Message = tuple[str, dict[str, Any]]
"""A channel and the JSON payload published on it."""


@dataclass
class Subscriber:
    """Every message published on `evaluation:*` (the lifecycle channels and each task's logs channel) since it
    subscribed, in the order Redis delivered them."""

    messages: list[Message] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    def of(self, eval_id: str) -> list[Message]:
        """The messages about one task, in order."""
        with self.arrived:
            return [(channel, data) for channel, data in self.messages if data.get("eval_id") == eval_id]

    def wait(self, check: Callable[[list[Message]], bool], what: str, timeout_s: float = 60) -> list[Message]:
        """The messages once `check(messages)` holds; fail saying `what` did not arrive within `timeout_s`."""
        with self.arrived:
            if not self.arrived.wait_for(lambda: check(self.messages), timeout_s):
                raise AssertionError(f"{what} never came over Redis; it had: {self.messages}")
            return list(self.messages)

    def wait_end(self, eval_id: str, timeout_s: float = 60) -> list[Message]:
        """The task's messages once its last one (on evaluation:completed or evaluation:failed) has come."""
        ends = ("evaluation:completed", "evaluation:failed")
        self.wait(lambda got: any(c in ends and d.get("eval_id") == eval_id for c, d in got), f"{eval_id}'s end")
        return self.of(eval_id)


def kinds(messages: list[Message]) -> list[str]:
    """The channels of one task's messages, logs channels named `logs` (and `logs-final` for the last)."""
    return [
        ("logs-final" if data.get("is_final") else "logs") if channel.endswith(":logs") else channel
        for channel, data in messages
    ]


def lines(messages: list[Message]) -> str:
    """What a task's streamed log messages say, joined as the platform's storage worker joins them."""
    return "\n".join(
        data["content"] for channel, data in messages if channel.endswith(":logs") and "is_final" not in data
    )


@contextmanager
def subscribed(url: str = REDIS_URL, *, ready_s: float = 0) -> Iterator[Subscriber]:
    """A subscriber to the Redis at `url` (the test Redis) for the duration of the block, waiting up to `ready_s`
    for it to answer (one just started). Without it the test fails, saying how to start the test Redis."""
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    deadline = time.monotonic() + ready_s
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError as exc:
            if time.monotonic() >= deadline:
                client.close()
                raise AssertionError(
                    f"no Redis answers at {url} (the test Redis: scripts/test-redis.sh): {exc}"
                ) from exc
            time.sleep(0.05)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe("evaluation:*")
    subscriber = Subscriber()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            message = pubsub.get_message(timeout=0.2)
            if message is None or message["type"] != "pmessage":
                continue
            channel = message["channel"].decode()
            with subscriber.arrived:
                subscriber.messages.append((channel, json.loads(message["data"])))
                subscriber.arrived.notify_all()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        yield subscriber
    finally:
        stop.set()
        reader.join(timeout=5)
        pubsub.close()
        client.close()


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now: a Redis that is down."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
