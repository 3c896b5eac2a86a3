"""Each store's schema: brought up to date once however many workers start together, and never touched by a
worker older than the schema it finds."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import psycopg
import pytest

from hatchway.errors import ConfigError, StoreUnavailable
from hatchway.settings import Settings
from hatchway.store import SqliteStore, pg_schema, queries
from hatchway.store.postgres import PostgresStore
from hatchway.worker.bootstrap import store_from_settings
from tests.postgres_db import fresh_schema
from tests.redis_bus import closed_port


async def test_sqlite_refuses_a_file_a_newer_worker_wrote_and_leaves_it_alone(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    await SqliteStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {queries.SCHEMA_VERSION + 1}")
    db.close()

    with pytest.raises(ConfigError, match=f"version {queries.SCHEMA_VERSION + 1}, newer than this worker's"):
        SqliteStore(path)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == queries.SCHEMA_VERSION + 1
    db.close()


def test_sqlite_workers_starting_together_on_one_new_file_all_open_it(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    start = threading.Barrier(4)
    failures: list[BaseException] = []

    def open_store() -> None:
        start.wait()
        try:
            store = SqliteStore(path)
            asyncio.run(store.close())
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == queries.SCHEMA_VERSION
        assert db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'jobs'").fetchone()[0] == 1
    db.close()


@pytest.mark.postgres
async def test_postgres_workers_starting_together_migrate_once() -> None:
    async with fresh_schema() as url:
        stores = [PostgresStore(url) for _ in range(4)]
        try:
            await asyncio.gather(*(store.open() for store in stores))
        finally:
            for store in stores:
                await store.close()
        async with await psycopg.AsyncConnection.connect(url) as db:
            rows = await (await db.execute("SELECT version FROM schema_migrations ORDER BY version")).fetchall()
        assert [version for (version,) in rows] == list(range(1, pg_schema.SCHEMA_VERSION + 1))


@pytest.mark.postgres
async def test_postgres_refuses_a_database_a_newer_worker_migrated() -> None:
    async with fresh_schema() as url:
        first = PostgresStore(url)
        await first.open()
        await first.close()
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as db:
            await db.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (pg_schema.SCHEMA_VERSION + 1,))
        older = PostgresStore(url)
        try:
            with pytest.raises(ConfigError, match="newer than this worker's"):
                await older.get("any")
        finally:
            await older.close()


async def test_a_store_that_does_not_answer_says_where_and_why_without_the_password() -> None:
    port = closed_port()
    store = PostgresStore(f"postgresql://hatchway:s3cret@127.0.0.1:{port}/hatchway")
    try:
        with pytest.raises(StoreUnavailable) as caught:
            await store.get("any")
    finally:
        await store.close()
    message = str(caught.value)
    assert f"port={port}" in message and "refused" in message.lower()
    assert "s3cret" not in message


def test_store_url_picks_postgres_and_refuses_other_schemes(tmp_path: Path) -> None:
    assert isinstance(store_from_settings(Settings(data_dir=tmp_path)), SqliteStore)
    fleet = store_from_settings(Settings(data_dir=tmp_path, store_url="postgresql://hatchway@127.0.0.1:5439/x"))
    assert isinstance(fleet, PostgresStore)
    asyncio.run(fleet.close())
    with pytest.raises(ValueError, match="store_url"):
        Settings(data_dir=tmp_path, store_url="mysql://root@127.0.0.1/hatchway")
