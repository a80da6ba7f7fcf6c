"""The connections the saver writes and reads on, and running its statements on them.

Writes made while the calling thread is inside `transaction.atomic()` (as `update_state`
in a decision is) join that transaction. Any other write (LangGraph calls `put` and
`put_writes` from short-lived threads of its own) borrows one of a few long-lived
connections and commits at once. Reads and maintenance use the calling thread's Django
connection, closed when that thread ends.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper

from workflows.checkpointer.fence import LeaseLost

Statement = tuple[str, Sequence[Any]]


class _ThreadConnections:
    """Closes the Django connections a short-lived thread opened, when it ends.

    Reads and maintenance run on the calling thread's Django connection, and the
    caller may be a thread Django knows nothing of (an async method's worker thread,
    a pool of the caller's own), so nothing else would ever close it. Kept in a
    thread-local, this object is released when its thread exits.
    """

    def __init__(self) -> None:
        self.wrappers: dict[str, Any] = {}

    def __del__(self) -> None:
        for wrapper in self.wrappers.values():
            try:
                # Release may happen from another thread during interpreter cleanup.
                wrapper.inc_thread_sharing()
                wrapper.close()
            except Exception:  # noqa: BLE001, S110 - nothing useful to do at thread exit
                pass


_thread_state = threading.local()


def watch_connection(alias: str) -> None:
    """Have this thread's connection to `alias` closed when the thread ends."""
    if threading.current_thread() is threading.main_thread():
        return
    watcher = getattr(_thread_state, "connections", None)
    if watcher is None:
        watcher = _thread_state.connections = _ThreadConnections()
    if alias not in watcher.wrappers:
        watcher.wrappers[alias] = connections[alias]


class WriteConnections:
    """A few Django connections of one database that any thread may borrow for a write.

    LangGraph calls `put` and `put_writes` from threads it creates for each
    invocation. Giving each of those its own connection costs a connect (SQLite: a
    file open and pragmas) per thread, and on SQLite makes concurrent writers sleep in
    the busy handler. These connections live as long as the process; SQLite gets one
    (it has one writer at a time anyway), PostgreSQL a few, so a task's writes and the
    next checkpoint can commit side by side.
    """

    def __init__(self, alias: str, size: int) -> None:
        self.alias = alias
        self.size = size
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.free: queue.LifoQueue[BaseDatabaseWrapper] = queue.LifoQueue()
        self.opened: list[BaseDatabaseWrapper] = []

    @contextmanager
    def borrow(self) -> Iterator[BaseDatabaseWrapper]:
        wrapper: BaseDatabaseWrapper | None
        try:
            wrapper = self.free.get_nowait()
        except queue.Empty:
            with self.lock:
                wrapper = self._open() if len(self.opened) < self.size else None
            if wrapper is None:
                wrapper = self.free.get()
        try:
            yield wrapper
        except Exception:
            # A broken connection is dropped; the next borrower reconnects.
            if wrapper.connection is not None and not wrapper.is_usable():
                wrapper.close()
            raise
        finally:
            self.free.put(wrapper)

    def _open(self) -> BaseDatabaseWrapper:
        wrapper = connections.create_connection(self.alias)
        # Borrowers take turns through `free`, so sharing across threads is safe.
        wrapper.inc_thread_sharing()
        self.opened.append(wrapper)
        return wrapper

    def close(self) -> None:
        with self.lock:
            for wrapper in self.opened:
                wrapper.close()


_write_connections: dict[str, WriteConnections] = {}
_write_connections_lock = threading.Lock()


def writers(alias: str) -> WriteConnections:
    with _write_connections_lock:
        found = _write_connections.get(alias)
        # A forked child (a Celery prefork worker) must not use its parent's sockets.
        if found is None or found.pid != os.getpid():
            sqlite = connections[alias].vendor == "sqlite"
            found = _write_connections[alias] = WriteConnections(alias, 1 if sqlite else 2)
        return found


def close_write_connections() -> None:
    """Close the connections checkpoint writes borrow (tests call this before dropping
    their database; a process that exits needs not)."""
    with _write_connections_lock:
        for found in _write_connections.values():
            if found.pid == os.getpid():
                found.close()
        _write_connections.clear()


@contextmanager
def write_connection(alias: str) -> Iterator[BaseDatabaseWrapper]:
    """The caller's connection if this thread is in a transaction on `alias`, else a
    borrowed one."""
    # Only a connection this thread already opened can be in a transaction; asking
    # `connections[alias]` would build a wrapper for every LangGraph thread.
    for own in connections.all(initialized_only=True):
        if own.alias == alias and own.in_atomic_block:
            yield own
            return
    with writers(alias).borrow() as shared:
        yield shared


@contextmanager
def _transaction(conn: BaseDatabaseWrapper, fenced: bool) -> Iterator[Any]:
    """A DB-API cursor on `conn`: inside the caller's transaction if there is one; else,
    for a fenced write, in a transaction of its own; else in autocommit."""
    raw: Any = conn.connection
    own = fenced and not conn.in_atomic_block
    if conn.vendor == "postgresql":
        import psycopg

        with raw.transaction() if own else nullcontext(), psycopg.Cursor(raw) as cursor:
            yield cursor
        return
    # sqlite3's connection is its own cursor; Django keeps it in autocommit.
    if not own:
        yield raw
        return
    raw.execute("BEGIN IMMEDIATE")
    try:
        yield raw
    except BaseException:
        raw.execute("ROLLBACK")
        raise
    raw.execute("COMMIT")


def execute(
    conn: BaseDatabaseWrapper, statements: Sequence[Statement], fence: Statement | None = None
) -> None:
    """Run our own INSERTs, in order, on the DB-API connection Django opened.

    Skipping Django's cursor wrapper (and, on PostgreSQL, its client-side parameter
    binding, which sends blobs as hex text) is most of what a write costs beyond its
    commit. Outside a transaction each unfenced statement commits by itself. That is safe
    for `put` on SQLite, its only two-statement write: blob rows go first and the
    checkpoint row that refers to them last, so a crash between leaves blobs nothing
    reads, never a checkpoint missing its values.

    With a fence statement (a run's writes), it runs first, in one transaction with the
    writes, and the writes run only if it matched one row: a worker that lost its lease
    writes nothing.
    """
    conn.ensure_connection()
    with conn.wrap_database_errors, _transaction(conn, fence is not None) as cursor:
        if fence is not None and cursor.execute(*fence).rowcount != 1:
            raise LeaseLost("this run's lease was taken over; the checkpoint write was refused")
        for sql, params in statements:
            cursor.execute(sql, params)


def select(alias: str, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    """Rows of one read statement, on this thread's Django connection (its placeholders
    are Django's `%s` on every database)."""
    watch_connection(alias)
    with connections[alias].cursor() as cursor:
        cursor.execute(sql, params)
        rows: list[tuple[Any, ...]] = cursor.fetchall()
    return rows
