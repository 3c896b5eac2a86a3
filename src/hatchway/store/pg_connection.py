"""The PostgreSQL store's connections: a pool, opened and brought up to the current schema once, on first use, and
the three ways a statement runs on it. store/postgres.py adds the `JobStore`'s statements."""

from __future__ import annotations

import asyncio
import contextlib
import select
from typing import Any

import psycopg
from psycopg import AsyncConnection, conninfo
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from hatchway.errors import ConfigError, StoreUnavailable
from hatchway.store import pg_schema

_CONNECT_TIMEOUT_S = 10


class PgConnection:
    """A pool of connections to one database, each in autocommit, rows as dicts."""

    def __init__(self, url: str, *, max_size: int = 10) -> None:
        """Connections to the database at `url` (`postgresql://…`), made, and the schema brought up to date, on first
        use (or `await open()`)."""
        self._pool: AsyncConnectionPool[AsyncConnection[dict[str, Any]]] = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            kwargs={"row_factory": dict_row, "autocommit": True},
            connection_class=AsyncConnection[dict[str, Any]],
            check=_still_open,
            configure=_plan_once,
            open=False,
        )
        self._url = url
        self._opened: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Connect and migrate, once: every method waits for this first."""
        if self._opened is None:
            self._opened = asyncio.ensure_future(self._open())
        await asyncio.shield(self._opened)

    async def _open(self) -> None:
        # One connection first: what is wrong (refused, no such database, authentication) is said at once, in
        # the driver's words, where the pool would only retry until its timeout.
        try:
            probe = await AsyncConnection.connect(self._url, connect_timeout=_CONNECT_TIMEOUT_S)
        except psycopg.OperationalError as exc:
            reason = " ".join(str(exc).split())
            raise StoreUnavailable(f"the job store at {_without_password(self._url)} did not answer: {reason}") from exc
        await probe.close()
        try:
            await self._pool.open(wait=True, timeout=_CONNECT_TIMEOUT_S)
        except PoolTimeout as exc:
            raise StoreUnavailable(f"the job store at {_without_password(self._url)} did not answer: {exc}") from exc
        await self._migrate()

    async def _migrate(self) -> None:
        async with self._pool.connection() as db, db.transaction():
            await db.execute("SELECT pg_advisory_xact_lock(%s)", (pg_schema.MIGRATION_LOCK,))
            await db.execute(pg_schema.CREATE_VERSIONS)
            row = await (await db.execute("SELECT coalesce(max(version), 0) AS v FROM schema_migrations")).fetchone()
            version = 0 if row is None else int(row["v"])
            if version > pg_schema.SCHEMA_VERSION:
                raise ConfigError(
                    f"the job store's schema is version {version}, newer than this worker's "
                    f"{pg_schema.SCHEMA_VERSION}: a newer hatchway wrote it; upgrade this one"
                )
            for target in range(version + 1, pg_schema.SCHEMA_VERSION + 1):
                for statement in pg_schema.MIGRATIONS[target]:
                    await db.execute(statement)
                await db.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (target,))

    async def close(self) -> None:
        if self._opened is not None:
            with contextlib.suppress(Exception):  # what failed to open was said to whoever waited for it
                await self._opened
        await self._pool.close()

    async def _run(self, sql: str, params: Any) -> None:
        await self.open()
        async with self._pool.connection() as db:
            await db.execute(sql, params)

    async def _one(self, sql: str, params: Any) -> dict[str, Any] | None:
        rows = await self._all(sql, params)
        return rows[0] if rows else None

    async def _all(self, sql: str, params: Any) -> list[dict[str, Any]]:
        await self.open()
        async with self._pool.connection() as db:
            cursor = await db.execute(sql, params)
            return await cursor.fetchall()


def _without_password(url: str) -> str:
    """The connection string with its password left out, for messages."""
    parts = conninfo.conninfo_to_dict(url)
    parts.pop("password", None)
    return conninfo.make_conninfo(**{key: str(value) for key, value in parts.items() if value is not None})


async def _plan_once(connection: AsyncConnection[dict[str, Any]]) -> None:
    """Plan a prepared statement once, for every value it is run with. The driver prepares a statement it has run
    a few times; the server then still plans it anew on every run while it judges a plan made for the values at
    hand cheaper, as it does the claim's: planning was a third of a claim's time on the server (bench_fleet.py).
    Every statement here finds its rows through an index its text names, whatever the values."""
    await connection.execute("SET plan_cache_mode = force_generic_plan")


async def _still_open(connection: AsyncConnection[dict[str, Any]]) -> None:
    """Refuse a pooled connection the server has dropped (a restart, a failover, an administrator), before a
    statement is sent on it: it is replaced, rather than found broken halfway through a state change. Without a
    round trip: the server closes a connection it drops, or says why, and an idle connection has nothing to read
    otherwise, so any byte waiting on its socket (or its end) means it is no longer usable."""
    if connection.closed or connection.broken:
        raise psycopg.OperationalError("the connection is closed")
    readable, _, _ = select.select([connection.pgconn.socket], [], [], 0)
    if readable:
        await connection.close()  # so the pool discards it (and makes another) rather than take it back
        raise psycopg.OperationalError("the server dropped the connection while it was idle")
