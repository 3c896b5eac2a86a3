"""The fleet store's database for the tests: the real PostgreSQL that scripts/test-postgres.sh keeps on
127.0.0.1:5439 (scripts/test.sh starts it). Each test gets a schema of its own, dropped afterwards, so tests never
see each other's jobs; a URL whose connections see only that schema is what a test's workers are given."""

from __future__ import annotations

import contextlib
import os
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Iterator

import psycopg
from psycopg import sql

POSTGRES_URL = os.environ.get("HATCHWAY_TEST_POSTGRES_URL", "postgresql://hatchway@127.0.0.1:5439/hatchway")


def _unreachable(exc: psycopg.OperationalError) -> AssertionError:
    return AssertionError(
        f"no PostgreSQL answers at {POSTGRES_URL} ({exc}); scripts/test-postgres.sh starts one "
        "(scripts/test.sh runs it), or set HATCHWAY_TEST_POSTGRES_URL"
    )


def _in_schema(schema: str) -> str:
    """The test database's URL, its connections confined to `schema`: a URL still (`store_url` takes only those)."""
    options = urllib.parse.quote(f"-c search_path={schema}")
    return f"{POSTGRES_URL}{'&' if '?' in POSTGRES_URL else '?'}options={options}"


@contextlib.asynccontextmanager
async def fresh_schema() -> AsyncIterator[str]:
    """A URL whose connections see only a new, empty schema of the test database, dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex}"
    try:
        admin = await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True)
    except psycopg.OperationalError as exc:
        raise _unreachable(exc) from exc
    async with admin:
        await admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        try:
            yield _in_schema(schema)
        finally:
            await admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@contextlib.contextmanager
def fresh_schema_sync() -> Iterator[str]:
    """`fresh_schema` for tests that are not coroutines (those that start worker processes)."""
    schema = f"t_{uuid.uuid4().hex}"
    try:
        admin = psycopg.connect(POSTGRES_URL, autocommit=True)
    except psycopg.OperationalError as exc:
        raise _unreachable(exc) from exc
    with admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        try:
            yield _in_schema(schema)
        finally:
            admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
