"""One suite, every backend: the `backend` fixture runs each test on memory and SQLite.

SQLite databases are migrated once per session into a template file that each
test copies: a fresh database per test without paying a migration per test.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from postwerk.store.memory import MemoryBackend
from postwerk.store.sqlite import open_sqlite, upgrade

BACKENDS = ["memory", "sqlite"]


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade(path)  # sync: no event loop runs in a session fixture
    return path


@pytest.fixture
def sqlite_path(tmp_path: Path, sqlite_template: Path) -> Path:
    path = tmp_path / "postwerk.db"
    shutil.copyfile(sqlite_template, path)
    return path


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest, sqlite_path: Path) -> AsyncIterator[Any]:
    """A `MemoryBackend` or a `SqliteBackend`: directory, mailstore, queue, tracking."""
    if request.param == "memory":
        mem = MemoryBackend()
        yield mem
        await mem.close()
        return
    # sqlite_path is requested even for memory: a fixture that migrates cannot
    # be created lazily from inside this (running) event loop.
    sql = await open_sqlite(sqlite_path)
    try:
        yield sql
    finally:
        await sql.close()
