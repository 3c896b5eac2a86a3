"""The fleet store's wake-ups: a connection of the worker's own, outside the pool, that LISTENs on the channels the
schema's triggers NOTIFY in every worker's transactions (store/pg_schema.py), so an idle worker claims a job
another one queued, and an event stream shows another worker's events, within milliseconds.

The connection is kept for as long as the wake-ups are followed. When it drops it is made again, after a pause
that doubles up to `_RETRY_S[1]`; what was NOTIFYed in between is lost, so the first wake-up on every connection
is `Wake.ANY`, and the followers' slow polls stay as the safety net. A connection quiet for `_QUIET_S` is asked
whether it is still alive (TCP keepalives would take longer to notice a peer gone without a word).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator

import psycopg
from psycopg import AsyncConnection, Notify, sql

from hatchway.store import pg_schema
from hatchway.store.wakeups import Wake, Wakeup

log = logging.getLogger(__name__)

_CHANNELS = {
    pg_schema.QUEUE_CHANNEL: Wake.QUEUE,
    pg_schema.EVENTS_CHANNEL: Wake.EVENTS,
    pg_schema.CANCEL_CHANNEL: Wake.CANCEL,
}
_RETRY_S = (0.2, 10.0)  # the first pause before connecting again, and the longest
_QUIET_S = 30.0
_PROBE_S = 10.0
_CONNECT_TIMEOUT_S = 10
APPLICATION_NAME = "hatchway wake-ups"
"""How the listening connections are named in pg_stat_activity."""


async def listen(url: str) -> AsyncGenerator[Wakeup, None]:
    """Every wake-up of the database at `url`, `Wake.ANY` first on each connection, until the caller stops."""
    pause_s = _RETRY_S[0]
    while True:
        try:
            connection = await AsyncConnection.connect(
                url,
                autocommit=True,
                connect_timeout=_CONNECT_TIMEOUT_S,
                application_name=APPLICATION_NAME,
            )
        except psycopg.Error as exc:
            log.warning(
                "the job store's wake-ups cannot connect (%s); trying again in %.1f s",
                " ".join(str(exc).split()),
                pause_s,
                extra={"event": "store_listen_failed"},
            )
        else:
            try:
                for channel in _CHANNELS:
                    await connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                log.info(
                    "listening for the job store's wake-ups",
                    extra={"event": "store_listening", "backend_pid": connection.info.backend_pid},
                )
                pause_s = _RETRY_S[0]
                yield Wakeup(Wake.ANY)
                while True:
                    async for notify in connection.notifies(timeout=_QUIET_S):
                        yield _wakeup(notify)
                    async with asyncio.timeout(_PROBE_S):
                        await connection.execute("SELECT 1")
            except (psycopg.Error, TimeoutError) as exc:
                log.warning(
                    "the job store's wake-ups were cut off (%s); connecting again in %.1f s",
                    " ".join(str(exc).split()) or type(exc).__name__,
                    pause_s,
                    extra={"event": "store_listen_lost"},
                )
            finally:
                await connection.close()
        await asyncio.sleep(pause_s)  # a pause before connecting again, not a wait for some state
        pause_s = min(pause_s * 2, _RETRY_S[1])


def _wakeup(notify: Notify) -> Wakeup:
    wake = _CHANNELS.get(notify.channel, Wake.ANY)
    return Wakeup(wake, job_id=notify.payload if wake == Wake.CANCEL else None)
