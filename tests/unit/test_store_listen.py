"""The fleet store's listener: a connection of its own that, when cut, is made again, and says so with `Wake.ANY`
(the NOTIFYs sent meanwhile are lost) before the wake-ups flow again."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import psycopg
import pytest

from hatchway.models import Job
from hatchway.store.postgres import PostgresStore
from hatchway.store.postgres_listen import APPLICATION_NAME
from hatchway.store.wakeups import Wake, Wakeup
from tests.postgres_db import fresh_schema
from tests.unit.test_store_contract import wakeups_seen

MakeJob = Callable[..., Job]
pytestmark = [pytest.mark.postgres, pytest.mark.timeout(60)]


def listening_pids(caplog: pytest.LogCaptureFixture) -> list[int]:
    return [record.backend_pid for record in caplog.records if getattr(record, "event", None) == "store_listening"]


async def test_a_cut_connection_is_made_again_and_says_look_at_everything(
    caplog: pytest.LogCaptureFixture, make_job: MakeJob
) -> None:
    caplog.set_level(logging.INFO, logger="hatchway.store.postgres_listen")
    async with fresh_schema() as url:
        store = PostgresStore(url)
        wakeups = store.wakeups()
        try:
            async with asyncio.timeout(10):
                assert await anext(wakeups) == Wakeup(Wake.ANY)
            [first] = listening_pids(caplog)
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as admin:
                row = await (
                    await admin.execute(
                        "SELECT pg_terminate_backend(pid), application_name FROM pg_stat_activity WHERE pid = %s",
                        (first,),
                    )
                ).fetchone()
            assert row == (True, APPLICATION_NAME), "the listener's own connection, named as such"
            async with asyncio.timeout(20):
                while (wakeup := await anext(wakeups)) != Wakeup(Wake.ANY):
                    assert wakeup.wake != Wake.ANY
            assert [getattr(record, "event", None) for record in caplog.records].count("store_listen_lost") == 1
            [_, second] = listening_pids(caplog)
            assert second != first, "a new connection"
            await store.enqueue(make_job(id="after"))
            await wakeups_seen(wakeups, Wakeup(Wake.QUEUE), Wakeup(Wake.EVENTS))
        finally:
            await wakeups.aclose()
            await store.close()


async def test_closing_the_wake_ups_closes_their_connection(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="hatchway.store.postgres_listen")
    count = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND pid = %s"
    async with fresh_schema() as url:
        store = PostgresStore(url)
        wakeups = store.wakeups()
        try:
            async with asyncio.timeout(10):
                assert await anext(wakeups) == Wakeup(Wake.ANY)
            [pid] = listening_pids(caplog)
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as admin:
                assert await (await admin.execute(count, (APPLICATION_NAME, pid))).fetchone() == (1,)
                await wakeups.aclose()
                async with asyncio.timeout(10):  # the server notices the goodbye a moment later
                    while True:
                        if await (await admin.execute(count, (APPLICATION_NAME, pid))).fetchone() == (0,):
                            break
                        await asyncio.sleep(0.05)  # polling another process's state: there is nothing to await
        finally:
            await store.close()


async def test_the_store_outlives_connections_the_server_dropped(make_job: MakeJob) -> None:
    """A database restart or failover drops every connection; the pool's idle ones are found dead before a
    statement is sent on them, so the worker's next call works (without the check it raised)."""
    async with fresh_schema() as url:
        named = f"{url}&application_name=dropped-{id(make_job)}"
        store = PostgresStore(named)
        try:
            await store.enqueue(make_job(id="before"))
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as admin:
                cursor = await admin.execute(
                    # Waiting for the backend to be gone, as after a restart: its connection's end has reached us.
                    "SELECT count(pg_terminate_backend(pid, 10000)) FROM pg_stat_activity WHERE application_name = %s",
                    (f"dropped-{id(make_job)}",),
                )
                assert await cursor.fetchone() == (1,), "the pool's one connection"
            job = await store.get("before")
            assert job is not None and job.id == "before"
        finally:
            await store.close()
