"""PostgreSQL for the tests: the machine's server (127.0.0.1:5432, trust auth),
on which tests create databases of their own beside `test` and drop them after.

When no server answers, PostgreSQL cases skip, unless POSTWERK_REQUIRE_POSTGRES=1
(`.ci/run` sets it: the CI machine runs one, so those tests must run there).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import create_async_engine

PG_SERVER = os.environ.get("POSTWERK_TEST_POSTGRES", "postgresql+asyncpg://postgres@127.0.0.1:5432")
PG_ADMIN_DB = "test"  # the database the machine provides; ours are created beside it
UNREACHABLE = (OSError, OperationalError, DBAPIError)


async def pg_admin(statement: str) -> None:
    engine = create_async_engine(f"{PG_SERVER}/{PG_ADMIN_DB}", isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


def unavailable(exc: BaseException) -> None:
    """Skip the test for want of a server, or fail it where one is required."""
    if os.environ.get("POSTWERK_REQUIRE_POSTGRES") == "1":
        raise exc
    pytest.skip(f"no PostgreSQL at {PG_SERVER}: {exc}")


async def create_database(prefix: str, template: str | None = None) -> str:
    """A database of the caller's own (a copy of `template`, else empty); its name.
    Skips (or fails, where required) when no server answers."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    copy = f' TEMPLATE "{template}"' if template else ""
    try:
        await pg_admin(f'CREATE DATABASE "{name}"{copy}')
    except UNREACHABLE as exc:
        unavailable(exc)
    return name


async def drop_database(name: str) -> None:
    await pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.asynccontextmanager
async def pg_database(prefix: str, template: str | None = None) -> AsyncIterator[str]:
    """`create_database` for the block, dropped on exit; yields its asyncpg URL."""
    name = await create_database(prefix, template)
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        await drop_database(name)
