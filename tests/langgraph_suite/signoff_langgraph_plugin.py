"""Pytest plugin: LangGraph's own checkpointer tests, run against DjangoSaver.

Loaded by `bin/test-langgraph` (make test-langgraph) into pytest running inside the
unpacked langgraph sdist (`-p signoff_langgraph_plugin`). The sdist's conftest.py
parametrizes two fixtures, `sync_checkpointer` and `async_checkpointer`, over its own
savers; this plugin swaps both for fixtures over the savers named in
SIGNOFF_LANGGRAPH_SAVERS, and keeps only the tests that use one of them.

SIGNOFF_LANGGRAPH_SAVERS (comma-separated):
- `django`: DjangoSaver on the database of DATABASE_URL (SQLite by default), in a test
  database of its own that is created at start and dropped at the end;
- `memory`, `sqlite`, `postgres`: LangGraph's InMemorySaver, SqliteSaver and
  PostgresSaver (their async twins for async tests), the baseline. `postgres` needs
  LANGGRAPH_POSTGRES_URI (a server URL ending in "/"), where it makes a database.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    asynccontextmanager,
    contextmanager,
)
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SAVERS = [name.strip() for name in os.getenv("SIGNOFF_LANGGRAPH_SAVERS", "django").split(",") if name.strip()]
KNOWN = {"django", "memory", "sqlite", "postgres"}
# The sdist's own names of the baselines' context managers (tests/conftest_checkpointer.py).
SYNC_BASELINES = {
    "memory": "_checkpointer_memory",
    "sqlite": "_checkpointer_sqlite",
    "postgres": "_checkpointer_postgres",
}
ASYNC_BASELINES = {
    "memory": "_checkpointer_memory",
    "sqlite": "_checkpointer_sqlite_aio",
    "postgres": "_checkpointer_postgres_aio",
}
CHECKPOINTER_FIXTURES = ("sync_checkpointer", "async_checkpointer")
# Left out: its expected stream order rests on two nodes sleeping 0 and 10 ms, and on a
# busy 2-core machine it failed for LangGraph's own InMemorySaver and PostgresSaver too
# (and again when run once more on its own), so it tests the machine, not the saver.
TIMING_DEPENDENT = ("tests/test_pregel_async.py::test_imp_nested[",)


def pytest_configure(config: pytest.Config) -> None:
    unknown = set(SAVERS) - KNOWN
    if unknown or not SAVERS:
        raise pytest.UsageError(
            f"SIGNOFF_LANGGRAPH_SAVERS must name some of {sorted(KNOWN)}, "
            f"got {os.getenv('SIGNOFF_LANGGRAPH_SAVERS')!r}"
        )
    if "postgres" in SAVERS and not os.getenv("LANGGRAPH_POSTGRES_URI"):
        raise pytest.UsageError(
            "the postgres baseline needs LANGGRAPH_POSTGRES_URI (postgres://user@host:port/)"
        )
    if "django" in SAVERS:
        _start_django()
    if "postgres" in SAVERS:
        _pg_start()


def pytest_unconfigure(config: pytest.Config) -> None:
    if "django" in SAVERS:
        _stop_django()
    if "postgres" in SAVERS:
        _pg_stop()


_old_name: str | None = None


def _start_django() -> None:
    global _old_name
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("DJANGO_SECRET_KEY", "langgraph-suite-only-not-a-secret")
    # DEBUG is off here, and then the audit chain's key is required (base64 of 32+ bytes).
    os.environ.setdefault("SIGNOFF_AUDIT_KEY", "bGFuZ2dyYXBoLXN1aXRlLW9ubHktbm90LWEtc2VjcmV0LWtleQ==")
    # Absolute: pytest runs inside the sdist, and make test's own run may set a relative one.
    os.environ["SIGNOFF_VAR_DIR"] = str(REPO / "var" / "test-langgraph")
    import django
    from django.conf import settings
    from django.db import connection

    django.setup()
    db = settings.DATABASES["default"]
    # A database of its own, so this never drops the test database of `make test-postgres`
    # (test_<name>) or the SQLite suite's file.
    if db["ENGINE"].endswith("sqlite3"):
        db["TEST"]["NAME"] = str(Path(db["NAME"]).with_name("test-langgraph-" + Path(db["NAME"]).name))
    else:
        db.setdefault("TEST", {})["NAME"] = f"test_{db['NAME']}_langgraph"
    _old_name = db["NAME"]
    connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)


def _stop_django() -> None:
    from django.db import connection

    from workflows.checkpointer import close_write_connections

    close_write_connections()
    connection.close()
    if _old_name is None:
        return
    if connection.vendor == "postgresql":
        # Async tests read through DjangoSaver from executor threads, each with its own
        # connection that nothing closes; PostgreSQL refuses to drop a database in use.
        with connection._nodb_cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                [connection.settings_dict["NAME"]],
            )
    connection.creation.destroy_test_db(_old_name, verbosity=0)


def _empty_checkpoint_tables() -> None:
    from workflows.models import Checkpoint, CheckpointBlob, CheckpointWrite

    # LangGraph's tests reuse thread ids ("1") from test to test: each starts empty.
    for model in (CheckpointWrite, CheckpointBlob, Checkpoint):
        model._default_manager.all().delete()


@contextmanager
def _django_saver() -> Iterator[Any]:
    from django.db import close_old_connections

    from workflows.checkpointer import DjangoSaver

    _empty_checkpoint_tables()
    try:
        yield DjangoSaver()
    finally:
        _empty_checkpoint_tables()
        close_old_connections()


@asynccontextmanager
async def _django_saver_async() -> AsyncIterator[Any]:
    from asgiref.sync import sync_to_async

    from workflows.checkpointer import DjangoSaver

    await sync_to_async(_empty_checkpoint_tables, thread_sensitive=True)()
    try:
        yield DjangoSaver()
    finally:
        await sync_to_async(_empty_checkpoint_tables, thread_sensitive=True)()


def _baseline(module: ModuleType, name: str, table: dict[str, str]) -> Callable[[], Any]:
    if name == "postgres":
        return _postgres_sync if table is SYNC_BASELINES else _postgres_async
    return getattr(module, table[name])  # type: ignore[no-any-return]


# The sdist makes a PostgreSQL database for every test; on this machine that doubled the
# run. One database for the session, emptied before each test, gives each test the same
# empty saver.
_PG_DATABASE = f"test_signoff_langgraph_baseline_{os.getpid()}"
_PG_TABLES = "checkpoints, checkpoint_blobs, checkpoint_writes"


def _pg_url() -> str:
    return os.environ["LANGGRAPH_POSTGRES_URI"] + _PG_DATABASE


def _pg_start() -> None:
    from langgraph.checkpoint.postgres import PostgresSaver
    from psycopg import Connection

    with Connection.connect(os.environ["LANGGRAPH_POSTGRES_URI"], autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {_PG_DATABASE}")
        conn.execute(f"CREATE DATABASE {_PG_DATABASE}")
    with PostgresSaver.from_conn_string(_pg_url()) as saver:
        saver.setup()


def _pg_stop() -> None:
    from psycopg import Connection

    with Connection.connect(os.environ["LANGGRAPH_POSTGRES_URI"], autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {_PG_DATABASE} WITH (FORCE)")


@contextmanager
def _postgres_sync() -> Iterator[Any]:
    from langgraph.checkpoint.postgres import PostgresSaver

    with PostgresSaver.from_conn_string(_pg_url()) as saver:
        saver.conn.execute(f"TRUNCATE {_PG_TABLES}")
        yield saver


@asynccontextmanager
async def _postgres_async() -> AsyncIterator[Any]:
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

    async with AsyncPostgresSaver.from_conn_string(_pg_url()) as saver:
        await saver.conn.execute(f"TRUNCATE {_PG_TABLES}")
        yield saver


@pytest.hookimpl(tryfirst=True)
def pytest_plugin_registered(plugin: object, plugin_name: str, manager: pytest.PytestPluginManager) -> None:
    """Swap the sdist conftest's checkpointer fixtures before pytest reads its fixtures."""
    if not isinstance(plugin, ModuleType) or plugin.__name__ != "tests.conftest":
        return
    if not hasattr(plugin, "sync_checkpointer"):
        raise pytest.UsageError(
            "the langgraph sdist's tests/conftest.py has no sync_checkpointer fixture any more"
        )
    helpers = __import__("tests.conftest_checkpointer", fromlist=["*"])

    @pytest.fixture(params=SAVERS)
    def sync_checkpointer(request: pytest.FixtureRequest) -> Iterator[Any]:
        manager: AbstractContextManager[Any] = (
            _django_saver()
            if request.param == "django"
            else _baseline(helpers, request.param, SYNC_BASELINES)()
        )
        with manager as checkpointer:
            yield checkpointer

    @pytest.fixture(params=SAVERS)
    async def async_checkpointer(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
        if request.param == "django":
            async with _django_saver_async() as checkpointer:
                yield checkpointer
            return
        factory = _baseline(helpers, request.param, ASYNC_BASELINES)
        made = factory()
        if isinstance(made, AbstractAsyncContextManager):
            async with made as checkpointer:
                yield checkpointer
        else:
            with made as checkpointer:
                yield checkpointer

    plugin.sync_checkpointer = sync_checkpointer  # type: ignore[attr-defined]
    plugin.async_checkpointer = async_checkpointer  # type: ignore[attr-defined]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep only the tests parametrized over a checkpointer."""
    keep, drop = [], []
    for item in items:
        names = getattr(item, "fixturenames", ())
        wanted = any(name in names for name in CHECKPOINTER_FIXTURES)
        (keep if wanted and not item.nodeid.startswith(TIMING_DEPENDENT) else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
    items[:] = keep
