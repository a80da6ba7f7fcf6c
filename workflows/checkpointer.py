"""`DjangoSaver`: LangGraph checkpoints in the app's own database, through Django.

Why not LangGraph's own savers: they keep their own connections, tables and
migrations, outside Django's transactions and admin. This saver writes through
Django's connections: a write made while the calling thread is inside
`transaction.atomic()` (as `update_state` in a decision is) joins that transaction;
any other write (LangGraph calls `put` and `put_writes` from short-lived threads of
its own) borrows one of a few long-lived connections and commits at once. So never
invoke a graph inside a transaction: its background writes would queue behind it.

Storage follows the official savers' contract (see langgraph-checkpoint's
`BaseCheckpointSaver`): a checkpoint row per step, a blob row per channel version
(written only for `new_versions`), and pending writes keyed by task and index. Two
additions: small scalar values live in the checkpoint row (one serialized value,
encrypted like the rest), and a list that grew by appending is stored as just the
appended items, chained to the version it extends, with a full copy whenever the
list has doubled since the last one. That keeps an accumulating message list linear
in storage instead of quadratic, and bounds the chain a read must follow.
"""

from __future__ import annotations

import builtins
import copy
import functools
import json
import os
import queue
import random
import threading
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

from asgiref.sync import sync_to_async
from django.db import connections, models, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models.fields.json import KeyTransform
from django.utils import timezone
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    PendingWrite,
    get_checkpoint_id,
    get_serializable_checkpoint_metadata,
    writes_sort_key,
)
from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from workflows.models import Checkpoint as CheckpointRow
from workflows.models import CheckpointBlob, CheckpointWrite, Run
from workflows.serde import PlaintextRefused, SealedSerializer, default_serde


def _derive_graph_allowlists() -> None:
    """Have LangGraph hand every compiled graph's schema types to its saver.

    DjangoSaver's msgpack is strict, but LangGraph collects a graph's types (state, input,
    output, context and node schemas, channel types) and passes them to
    `checkpointer.with_allowlist` only in its own strict mode; in its default mode a graph
    with a dataclass or Pydantic model in its state reads it back as a dict. Turning on
    just this derivation leaves serializers as they are: a permissive saver's
    `with_allowlist` returns it unchanged, and no type outside the schemas is allowed.
    LANGGRAPH_STRICT_MSGPACK would do it too, but only if set before langgraph is first
    imported, and it also makes every default serializer strict.
    """
    from langgraph._internal import _serde  # no public switch for this in langgraph 1.2

    flags = vars(_serde)
    if not isinstance(flags.get("STRICT_MSGPACK_ENABLED"), bool):
        raise ImportError(
            "langgraph._internal._serde.STRICT_MSGPACK_ENABLED is gone: find how this langgraph "
            "passes a graph's schema types to its checkpointer"
        )
    flags["STRICT_MSGPACK_ENABLED"] = True


_derive_graph_allowlists()

# Checkpoint keys kept as JSON beside the serialized values; none of them is state.
_JSON_KEYS = ("v", "ts", "channel_versions", "versions_seen", "updated_channels")
_INLINE_STR_MAX = 256
# A delta chain is cut (a full copy written) after this many rows even if the list
# has not doubled, so one read never concatenates more rows than this.
MAX_CHAIN_ROWS = 1000
# Reads build tuples in batches: a batch costs a fixed number of queries.
_LIST_BATCH = 100
_TAIL_CACHE_SIZE = 512
# The key in `config["configurable"]` that carries a run's lease into every write.
# LangGraph passes `__`-prefixed keys to the saver but keeps them out of metadata.
LEASE_KEY = "__signoff_lease"


class LeaseLost(RuntimeError):
    """The run writing this checkpoint no longer holds its lease: the write is refused."""


@dataclass(frozen=True)
class Lease:
    run_id: int
    token: str
    seconds: float

    def as_configurable(self) -> dict[str, Any]:
        return {LEASE_KEY: {"run_id": self.run_id, "token": self.token, "seconds": self.seconds}}


def _lease_of(config: RunnableConfig) -> Lease | None:
    value = config["configurable"].get(LEASE_KEY)
    if value is None:
        return None
    return Lease(int(value["run_id"]), str(value["token"]), float(value["seconds"]))


class BrokenDeltaChain(RuntimeError):
    """A stored list extends a version whose row is gone (deleted behind the saver's back)."""


class UnreadableCheckpoint(ValueError):
    """A stored checkpoint value that cannot be decoded: its bytes were changed, or it was
    sealed with another encryption key. A ValueError, as the serializer's own errors are."""


def _is_inline(value: Any) -> bool:
    kind = type(value)
    if kind is str:
        return len(value) <= _INLINE_STR_MAX
    return value is None or kind in (bool, int, float)


def _msgpack_array_header(count: int) -> bytes:
    if count < 16:
        return bytes([0x90 | count])
    if count < 1 << 16:
        return b"\xdc" + count.to_bytes(2, "big")
    return b"\xdd" + count.to_bytes(4, "big")


def _msgpack_array_split(data: bytes) -> tuple[int, bytes] | None:
    """(item count, encoded items) of a msgpack array, or None if `data` is not one."""
    if not data:
        return None
    first = data[0]
    if 0x90 <= first <= 0x9F:
        return first & 0x0F, data[1:]
    if first == 0xDC:
        return int.from_bytes(data[1:3], "big"), data[3:]
    if first == 0xDD:
        return int.from_bytes(data[1:5], "big"), data[5:]
    return None


@dataclass(frozen=True, slots=True)
class _ListState:
    """What the saver remembers of the last stored version of a list channel."""

    version: str
    count: int
    body: bytes  # the msgpack encoding of the items, to prove a new value extends it
    root_version: str
    root_count: int
    chain_items: int
    chain_rows: int


@dataclass(frozen=True, slots=True)
class _Tail:
    checkpoint_id: str
    lists: dict[str, _ListState]


class _TailCache:
    """Per (thread, namespace): the list channels of the checkpoint last put.

    Only a put whose parent is that checkpoint can store deltas; anything else
    (another process, a fork, a resume after a crash) stores full copies, so the
    cache only ever saves space and never decides correctness.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.lock = threading.Lock()
        self.items: OrderedDict[tuple[str, str], _Tail] = OrderedDict()

    def get(self, key: tuple[str, str]) -> _Tail | None:
        with self.lock:
            tail = self.items.get(key)
            if tail is not None:
                self.items.move_to_end(key)
            return tail

    def set(self, key: tuple[str, str], tail: _Tail) -> None:
        with self.lock:
            self.items[key] = tail
            self.items.move_to_end(key)
            while len(self.items) > self.size:
                self.items.popitem(last=False)

    def forget(self, thread_ids: Iterable[str] | None = None) -> None:
        with self.lock:
            if thread_ids is None:
                self.items.clear()
                return
            doomed = set(thread_ids)
            for key in [k for k in self.items if k[0] in doomed]:
                del self.items[key]


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


def _watch_connection(alias: str) -> None:
    if threading.current_thread() is threading.main_thread():
        return
    watcher = getattr(_thread_state, "connections", None)
    if watcher is None:
        watcher = _thread_state.connections = _ThreadConnections()
    if alias not in watcher.wrappers:
        watcher.wrappers[alias] = connections[alias]


class _WriteConnections:
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


_write_connections: dict[str, _WriteConnections] = {}
_write_connections_lock = threading.Lock()


def _writers(alias: str) -> _WriteConnections:
    with _write_connections_lock:
        writers = _write_connections.get(alias)
        # A forked child (a Celery prefork worker) must not use its parent's sockets.
        if writers is None or writers.pid != os.getpid():
            sqlite = connections[alias].vendor == "sqlite"
            writers = _write_connections[alias] = _WriteConnections(alias, 1 if sqlite else 2)
        return writers


def close_write_connections() -> None:
    """Close the connections checkpoint writes borrow (tests call this before dropping
    their database; a process that exits needs not)."""
    with _write_connections_lock:
        for writers in _write_connections.values():
            if writers.pid == os.getpid():
                writers.close()
        _write_connections.clear()


def _config_parts(config: RunnableConfig) -> tuple[str, str, str | None]:
    configurable = config["configurable"]
    return (
        str(configurable["thread_id"]),
        configurable.get("checkpoint_ns", "") or "",
        configurable.get("checkpoint_id"),
    )


def _insert_sql(
    conn: BaseDatabaseWrapper,
    model: type[models.Model],
    columns: tuple[str, ...],
    rows: Sequence[Sequence[Any]],
    *,
    unique: tuple[str, ...],
    update: tuple[str, ...] = (),
) -> tuple[str, list[Any]]:
    """One multi-row INSERT ... ON CONFLICT statement, valid on SQLite and PostgreSQL.

    The hot write path skips the ORM: a checkpoint write is one statement, hence one
    round trip and (outside a caller's transaction) one implicit commit.
    """
    sql = _insert_template(conn.vendor, model, columns, len(rows), unique, update)
    return sql, [value for values in rows for value in values]


@functools.lru_cache(maxsize=256)
def _insert_template(
    vendor: str,
    model: type[models.Model],
    columns: tuple[str, ...],
    count: int,
    unique: tuple[str, ...],
    update: tuple[str, ...],
) -> str:
    def quote(name: str) -> str:
        # Our own column and table names; SQLite and PostgreSQL both quote with ".
        return f'"{name}"'

    json_columns = {
        field.column for field in model._meta.concrete_fields if isinstance(field, models.JSONField)
    }
    # Placeholders for the DB-API driver itself (see DjangoSaver._execute).
    mark, cast_json = ("%s", "::jsonb") if vendor == "postgresql" else ("?", "")
    row = "(" + ", ".join(f"{mark}{cast_json}" if c in json_columns else mark for c in columns) + ")"
    conflict = (
        "DO UPDATE SET " + ", ".join(f"{quote(c)} = EXCLUDED.{quote(c)}" for c in update)
        if update
        else "DO NOTHING"
    )
    return (
        f"INSERT INTO {quote(model._meta.db_table)} ({', '.join(quote(c) for c in columns)}) "
        f"VALUES {', '.join([row] * count)} "
        f"ON CONFLICT ({', '.join(quote(c) for c in unique)}) {conflict}"
    )


_BLOB_COLUMNS = (
    "thread_id",
    "checkpoint_ns",
    "channel",
    "version",
    "type",
    "blob",
    "base_version",
    "root_version",
)
_BLOB_KEY = ("thread_id", "checkpoint_ns", "channel", "version")
_CHECKPOINT_COLUMNS = (
    "thread_id",
    "checkpoint_ns",
    "checkpoint_id",
    "parent_checkpoint_id",
    "checkpoint",
    "values_type",
    "values",
    "metadata",
)
_CHECKPOINT_KEY = ("thread_id", "checkpoint_ns", "checkpoint_id")
_WRITE_COLUMNS = (
    "thread_id",
    "checkpoint_ns",
    "checkpoint_id",
    "task_id",
    "task_path",
    "idx",
    "channel",
    "type",
    "blob",
)
_WRITE_KEY = ("thread_id", "checkpoint_ns", "checkpoint_id", "task_id", "idx")


def _values_of(columns: Sequence[str], keys: Iterable[tuple[Any, ...]]) -> dict[str, set[Any]]:
    """For each column, every value it takes in `keys` (their leading fields): a filter
    that matches at least those keys, and which callers then narrow to exactly them."""
    return {column: set(values) for column, values in zip(columns, zip(*keys, strict=True), strict=False)}


class DjangoSaver(BaseCheckpointSaver[str]):
    """A LangGraph checkpointer over `workflows.models`, on any database Django supports.

    Tested on SQLite and PostgreSQL with LangGraph's conformance suite (all eight
    capabilities). Async methods run the sync ones in a worker thread, one hop per
    call.
    """

    def __init__(self, *, serde: SerializerProtocol | None = None, using: str = "default") -> None:
        super().__init__(serde=serde or default_serde())
        self.using = using
        self._tails = _TailCache(_TAIL_CACHE_SIZE)

    # -- connection and serialization helpers -------------------------------------

    @contextmanager
    def _write_connection(self) -> Iterator[BaseDatabaseWrapper]:
        # Only a connection this thread already opened can be in a transaction; asking
        # `connections[alias]` would build a wrapper for every LangGraph thread.
        for own in connections.all(initialized_only=True):
            if own.alias == self.using and own.in_atomic_block:
                # The caller's transaction (update_state inside a decision): join it.
                yield own
                return
        with _writers(self.using).borrow() as shared:
            yield shared

    def _atomic(self) -> transaction.Atomic:
        _watch_connection(self.using)
        # No savepoint: a failed write must fail the caller's transaction too.
        return transaction.atomic(using=self.using, savepoint=False)

    def _rows(self, model: type[models.Model]) -> models.QuerySet[Any]:
        _watch_connection(self.using)
        return model._default_manager.using(self.using).all()

    def _plain_serde(self) -> SerializerProtocol:
        serde = self.serde
        return serde.serde if isinstance(serde, EncryptedSerializer) else serde

    def _seal(self, type_: str, data: bytes) -> tuple[str, bytes]:
        """Encrypt bytes another serializer produced, as `EncryptedSerializer` would."""
        serde = self.serde
        if isinstance(serde, EncryptedSerializer):
            cipher_name, ciphertext = serde.cipher.encrypt(data)
            return f"{type_}+{cipher_name}", ciphertext
        return type_, data

    def _loads(self, type_: str, blob: bytes | memoryview | None) -> Any:
        try:
            return self.serde.loads_typed((type_, bytes(blob) if blob is not None else b""))
        except PlaintextRefused:
            raise
        except (ValueError, TypeError) as exc:
            raise UnreadableCheckpoint(
                f"a stored checkpoint value ({type_}) cannot be decoded: {exc}"
            ) from exc

    def with_allowlist(self, extra_allowlist: Collection[tuple[str, ...]]) -> DjangoSaver:
        serde = self.serde
        if isinstance(serde, SealedSerializer) and isinstance(serde.serde, JsonPlusSerializer):
            inner = serde.serde.with_msgpack_allowlist(extra_allowlist)
            if inner is serde.serde:
                return self
            clone = copy.copy(self)
            clone.serde = SealedSerializer(serde.cipher, inner)
            return clone
        return cast(DjangoSaver, super().with_allowlist(extra_allowlist))

    def get_next_version(self, current: str | None, channel: None = None) -> str:
        # Zero-padded so text order is numeric order; the random part makes every
        # version unique, so a fork never overwrites a blob of the branch it left.
        if current is None:
            number = 0
        elif isinstance(current, (int, float)):
            number = int(current)
        else:
            number = int(current.split(".")[0])
        return f"{number + 1:032}.{random.random():016}"

    # -- writes --------------------------------------------------------------------

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        thread_id, ns, parent_id = _config_parts(config)
        values = checkpoint["channel_values"]
        inline = {name: value for name, value in values.items() if _is_inline(value)}
        extra = {
            key: value
            for key, value in checkpoint.items()
            if key not in _JSON_KEYS and key not in ("id", "channel_values") and value
        }
        values_type, values_blob = self.serde.dumps_typed({"values": inline, "extra": extra})

        tail = self._tails.get((thread_id, ns))
        parent_lists = tail.lists if tail is not None and tail.checkpoint_id == parent_id else {}
        blob_rows = []
        lists: dict[str, _ListState] = {}
        for channel, version in new_versions.items():
            if channel in inline or channel not in values:
                continue
            row, state = self._blob_row(
                thread_id, ns, channel, str(version), values[channel], parent_lists.get(channel)
            )
            blob_rows.append(row)
            if state is not None:
                lists[channel] = state
        # Lists that did not change this step are still the parent's versions.
        versions = checkpoint["channel_versions"]
        for channel, state in parent_lists.items():
            if channel not in lists and str(versions.get(channel)) == state.version:
                lists[channel] = state

        checkpoint_row = (
            thread_id,
            ns,
            checkpoint["id"],
            parent_id,
            json.dumps({key: checkpoint.get(key) for key in _JSON_KEYS}),
            values_type,
            values_blob,
            json.dumps(get_serializable_checkpoint_metadata(config, metadata)),
        )
        with self._write_connection() as conn:
            self._execute(conn, self._put_statements(conn, checkpoint_row, blob_rows), _lease_of(config))
        self._tails.set((thread_id, ns), _Tail(checkpoint["id"], lists))
        return {
            "configurable": {
                "thread_id": thread_id,
                "checkpoint_ns": ns,
                "checkpoint_id": checkpoint["id"],
            }
        }

    def _put_statements(
        self, conn: BaseDatabaseWrapper, checkpoint_row: tuple[Any, ...], blob_rows: Sequence[tuple[Any, ...]]
    ) -> builtins.list[tuple[str, builtins.list[Any]]]:
        statements = [
            _insert_sql(
                conn,
                CheckpointRow,
                _CHECKPOINT_COLUMNS,
                [checkpoint_row],
                unique=_CHECKPOINT_KEY,
                update=("checkpoint", "values_type", "values", "metadata"),
            )
        ]
        if blob_rows:
            blobs = _insert_sql(conn, CheckpointBlob, _BLOB_COLUMNS, blob_rows, unique=_BLOB_KEY)
            if conn.vendor == "postgresql":
                # A data-modifying CTE makes blobs and checkpoint one statement: atomic
                # on its own, one round trip, one commit.
                statements = [(f"WITH blobs AS ({blobs[0]}) {statements[0][0]}", blobs[1] + statements[0][1])]
            else:
                statements.insert(0, blobs)  # blobs first: see _execute
        return statements

    def _blob_row(
        self,
        thread_id: str,
        ns: str,
        channel: str,
        version: str,
        value: Any,
        base: _ListState | None,
    ) -> tuple[tuple[Any, ...], _ListState | None]:
        """The blob row for one channel version (in `_BLOB_COLUMNS` order), and for a
        list, what to remember of it so the next step can store a delta."""
        key = (thread_id, ns, channel, version)
        if type(value) is not list:
            return (*key, *self.serde.dumps_typed(value), None, None), None
        plain_type, plain = self._plain_serde().dumps_typed(value)
        split = _msgpack_array_split(plain) if plain_type == "msgpack" else None
        if split is None:
            return (*key, *self._seal(plain_type, plain), None, None), None
        count, body = split
        # A byte-level prefix check, not ==: it also catches items mutated in place.
        if base is not None and count > base.count and body.startswith(base.body):
            chain_items = base.chain_items + count - base.count
            chain_rows = base.chain_rows + 1
            if chain_items <= base.root_count and chain_rows <= MAX_CHAIN_ROWS:
                delta = _msgpack_array_header(count - base.count) + body[len(base.body) :]
                state = _ListState(
                    version, count, body, base.root_version, base.root_count, chain_items, chain_rows
                )
                return (*key, *self._seal("msgpack", delta), base.version, base.root_version), state
        return (*key, *self._seal(plain_type, plain), None, None), _ListState(
            version, count, body, version, count, 0, 0
        )

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        thread_id, ns, checkpoint_id = _config_parts(config)
        if checkpoint_id is None:
            raise ValueError("put_writes needs the checkpoint_id the writes belong to")
        if not writes:
            return
        rows = [
            (
                thread_id,
                ns,
                checkpoint_id,
                task_id,
                task_path,
                WRITES_IDX_MAP.get(channel, position),
                channel,
                *self.serde.dumps_typed(value),
            )
            for position, (channel, value) in enumerate(writes)
        ]
        # Special channels (error, interrupt, resume) are replaced on retry; ordinary
        # writes are immutable, so a repeated write is ignored.
        special = all(channel in WRITES_IDX_MAP for channel, _ in writes)
        with self._write_connection() as conn:
            statement = _insert_sql(
                conn,
                CheckpointWrite,
                _WRITE_COLUMNS,
                rows,
                unique=_WRITE_KEY,
                update=("channel", "type", "blob", "task_path") if special else (),
            )
            self._execute(conn, [statement], _lease_of(config))

    def _execute(
        self,
        conn: BaseDatabaseWrapper,
        statements: Sequence[tuple[str, Sequence[Any]]],
        lease: Lease | None = None,
    ) -> None:
        """Run our own INSERTs, in order, on the DB-API connection Django opened.

        Skipping Django's cursor wrapper (and, on PostgreSQL, its client-side
        parameter binding, which sends blobs as hex text) is most of what a write
        costs beyond its commit. Inside the caller's transaction the statements join
        it; otherwise each commits by itself. That is safe for `put` on SQLite, its
        only two-statement write: blob rows go first and the checkpoint row that
        refers to them last, so a crash between leaves blobs nothing reads, never a
        checkpoint missing its values.

        With a lease (a run's writes), the statements are fenced: one transaction
        first renews the lease with `UPDATE run ... WHERE lease_token = <ours>` and
        writes only if that matched. The row lock it takes orders the write before
        any takeover, so a worker that lost its lease writes nothing.
        """
        conn.ensure_connection()
        raw: Any = conn.connection
        postgres = conn.vendor == "postgresql"
        if lease is not None:
            statements = [self._fence(conn, lease), *statements]
        with conn.wrap_database_errors:
            if postgres:
                import psycopg

                if lease is not None and not conn.in_atomic_block:
                    with raw.transaction(), psycopg.Cursor(raw) as cursor:
                        self._run_fenced(cursor, statements)
                else:
                    with psycopg.Cursor(raw) as cursor:
                        (self._run_fenced if lease else self._run)(cursor, statements)
            elif lease is not None and not conn.in_atomic_block:
                raw.execute("BEGIN IMMEDIATE")
                try:
                    self._run_fenced(raw, statements)
                except BaseException:
                    raw.execute("ROLLBACK")
                    raise
                raw.execute("COMMIT")
            elif lease is not None:
                self._run_fenced(raw, statements)
            else:
                self._run(raw, statements)

    @staticmethod
    def _run(cursor: Any, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        for sql, params in statements:
            cursor.execute(sql, params)

    @staticmethod
    def _run_fenced(cursor: Any, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        (fence_sql, fence_params), *rest = statements
        if cursor.execute(fence_sql, fence_params).rowcount != 1:
            raise LeaseLost("this run's lease was taken over; the checkpoint write was refused")
        for sql, params in rest:
            cursor.execute(sql, params)

    @staticmethod
    def _fence(conn: BaseDatabaseWrapper, lease: Lease) -> tuple[str, list[Any]]:
        expires_field = cast(models.Field[Any, Any], Run._meta.get_field("lease_expires_at"))
        token_field = cast(models.Field[Any, Any], Run._meta.get_field("lease_token"))
        mark = "%s" if conn.vendor == "postgresql" else "?"
        expires = timezone.now() + timedelta(seconds=lease.seconds)
        sql = (
            f"UPDATE {Run._meta.db_table} SET lease_expires_at = {mark} "
            f"WHERE id = {mark} AND lease_token = {mark} AND status = 'running'"
        )
        return sql, [
            expires_field.get_db_prep_value(expires, conn),
            lease.run_id,
            token_field.get_db_prep_value(uuid.UUID(lease.token), conn),
        ]

    # -- reads ---------------------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        thread_id, ns, checkpoint_id = _config_parts(config)
        where: dict[str, Collection[Any]] = {"thread_id": [thread_id], "checkpoint_ns": [ns]}
        if checkpoint_id:
            where["checkpoint_id"] = [checkpoint_id]
        found = self._select(
            CheckpointRow, _CHECKPOINT_COLUMNS, where, tail='ORDER BY "checkpoint_id" DESC LIMIT 1'
        )
        if not found:
            return None
        return self._build(found)[0]

    def _select(
        self,
        model: type[models.Model],
        columns: Sequence[str],
        where: Mapping[str, Collection[Any]],
        *,
        either: Sequence[tuple[str, Collection[Any]]] = (),
        tail: str = "",
    ) -> builtins.list[tuple[Any, ...]]:
        """SELECT columns WHERE each column is one of its values (and, if given, any
        one of `either` holds). Hand-written because the ORM's query compilation cost
        more than the database on these reads; values always travel as parameters."""

        def condition(column: str, values: Collection[Any]) -> str:
            params.extend(values)
            return f'"{column}" IN ({", ".join(["%s"] * len(values))})'

        params: builtins.list[Any] = []
        clauses = [condition(column, values) for column, values in where.items()]
        if either:
            clauses.append("(" + " OR ".join(condition(column, values) for column, values in either) + ")")
        selected = ", ".join(f'"{column}"' for column in columns)
        sql = f'SELECT {selected} FROM "{model._meta.db_table}" WHERE {" AND ".join(clauses)} {tail}'
        _watch_connection(self.using)
        with connections[self.using].cursor() as cursor:
            cursor.execute(sql, params)
            rows: builtins.list[tuple[Any, ...]] = cursor.fetchall()
        return rows

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        rows = self._rows(CheckpointRow)
        if config is not None:
            configurable = config["configurable"]
            if configurable.get("thread_id") is not None:
                rows = rows.filter(thread_id=str(configurable["thread_id"]))
            if "checkpoint_ns" in configurable:
                rows = rows.filter(checkpoint_ns=configurable["checkpoint_ns"] or "")
            if configurable.get("checkpoint_id"):
                rows = rows.filter(checkpoint_id=configurable["checkpoint_id"])
        for position, (key, value) in enumerate((filter or {}).items()):
            # An alias keeps keys with "__" or other odd characters from being read
            # as lookups; the key itself is passed to the database as a parameter.
            alias = f"_metadata_key_{position}"
            rows = rows.alias(**{alias: KeyTransform(key, "metadata")}).filter(**{alias: value})
        if before is not None and (before_id := get_checkpoint_id(before)):
            rows = rows.filter(checkpoint_id__lt=before_id)
        rows = rows.order_by("-checkpoint_id")
        if limit is not None:
            rows = rows[:limit]
        found = list(rows.values_list(*_CHECKPOINT_COLUMNS))
        for start in range(0, len(found), _LIST_BATCH):
            yield from self._build(found[start : start + _LIST_BATCH])

    def _build(self, found: Sequence[tuple[Any, ...]]) -> builtins.list[CheckpointTuple]:
        """Checkpoint tuples for rows of one batch, in a fixed number of queries."""
        decoded = []
        wanted: set[tuple[str, str, str, str]] = set()
        for thread_id, ns, checkpoint_id, parent_id, doc, values_type, values, metadata in found:
            # Hand-written SELECTs return JSON as text, the ORM as decoded values.
            doc = json.loads(doc) if isinstance(doc, str) else doc
            metadata = json.loads(metadata) if isinstance(metadata, str) else metadata
            payload = self._loads(values_type, values)
            inline = payload.get("values", {})
            for channel, version in doc["channel_versions"].items():
                if channel not in inline:
                    wanted.add((thread_id, ns, channel, str(version)))
            decoded.append((thread_id, ns, checkpoint_id, parent_id, doc, payload, metadata))

        blob_values = self._blob_values(wanted)
        writes = self._pending_writes({(row[0], row[1], row[2]) for row in found})

        tuples = []
        for thread_id, ns, checkpoint_id, parent_id, doc, payload, metadata in decoded:
            channel_values = dict(payload.get("values", {}))
            for channel, version in doc["channel_versions"].items():
                key = (thread_id, ns, channel, str(version))
                if channel not in channel_values and key in blob_values:
                    channel_values[channel] = blob_values[key]
            checkpoint: dict[str, Any] = {
                "v": doc["v"],
                "id": checkpoint_id,
                "ts": doc["ts"],
                "channel_values": channel_values,
                "channel_versions": doc["channel_versions"],
                "versions_seen": doc["versions_seen"],
                "updated_channels": doc.get("updated_channels"),
                **payload.get("extra", {}),
            }
            tuples.append(
                CheckpointTuple(
                    config={
                        "configurable": {
                            "thread_id": thread_id,
                            "checkpoint_ns": ns,
                            "checkpoint_id": checkpoint_id,
                        }
                    },
                    checkpoint=cast(Checkpoint, checkpoint),
                    metadata=cast(CheckpointMetadata, metadata),
                    parent_config=(
                        {
                            "configurable": {
                                "thread_id": thread_id,
                                "checkpoint_ns": ns,
                                "checkpoint_id": parent_id,
                            }
                        }
                        if parent_id
                        else None
                    ),
                    pending_writes=writes.get((thread_id, ns, checkpoint_id), []),
                )
            )
        return tuples

    def _blob_values(self, wanted: set[tuple[str, str, str, str]]) -> dict[tuple[str, str, str, str], Any]:
        if not wanted:
            return {}
        found = self._select(
            CheckpointBlob,
            _BLOB_COLUMNS,
            _values_of(_BLOB_KEY, wanted),
        )
        rows = {tuple(row[:4]): row for row in found if tuple(row[:4]) in wanted}
        chains = {(row[0], row[1], row[2], row[7]) for row in rows.values() if row[6] is not None}
        if chains:
            # One query for every chain: all rows sharing a root, and the roots.
            roots = {key[3] for key in chains}
            family = self._select(
                CheckpointBlob,
                _BLOB_COLUMNS,
                _values_of(_BLOB_KEY[:3], chains),
                either=[("root_version", roots), ("version", roots)],
            )
            for row in family:
                rows.setdefault(tuple(row[:4]), row)

        loaded: dict[tuple[str, str, str, str], Any] = {}

        def load(key: tuple[str, str, str, str]) -> Any:
            if key not in loaded:
                loaded[key] = self._loads(rows[key][4], rows[key][5])
            return loaded[key]

        values: dict[tuple[str, str, str, str], Any] = {}
        for key in wanted:
            found_row = rows.get(key)
            if found_row is None or found_row[4] == "empty":
                continue
            if found_row[6] is None:
                values[key] = load(key)
                continue
            parts = []
            cursor: tuple[str, str, str, str] | None = key
            while cursor is not None:
                if cursor not in rows:
                    raise BrokenDeltaChain(
                        f"thread {key[0]!r}: version {key[3]} of channel {key[2]!r} extends version "
                        f"{cursor[3]}, which is missing; the checkpoint cannot be read back"
                    )
                parts.append(load(cursor))
                base = rows[cursor][6]
                cursor = (key[0], key[1], key[2], base) if base is not None else None
            values[key] = [item for part in reversed(parts) for item in part]
        return values

    def _pending_writes(
        self, keys: set[tuple[str, str, str]]
    ) -> dict[tuple[str, str, str], builtins.list[PendingWrite]]:
        if not keys:
            return {}
        found = self._select(
            CheckpointWrite,
            _WRITE_COLUMNS,
            _values_of(_CHECKPOINT_KEY, keys),
        )
        grouped: dict[tuple[str, str, str], builtins.list[tuple[tuple[str, str, int], PendingWrite]]] = {}
        for thread_id, ns, checkpoint_id, task_id, task_path, idx, channel, type_, blob in found:
            key = (thread_id, ns, checkpoint_id)
            if key not in keys:
                continue
            grouped.setdefault(key, []).append(
                (writes_sort_key(task_path, task_id, idx), (task_id, channel, self._loads(type_, blob)))
            )
        return {
            key: [write for _, write in sorted(items, key=lambda item: item[0])]
            for key, items in grouped.items()
        }

    # -- deletion, copying, pruning ------------------------------------------------

    def delete_thread(self, thread_id: str) -> None:
        thread_id = str(thread_id)
        with self._atomic():
            for model in (CheckpointWrite, CheckpointBlob, CheckpointRow):
                self._rows(model).filter(thread_id=thread_id).delete()
        self._tails.forget([thread_id])

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        run_ids = [str(run_id) for run_id in run_ids]
        if not run_ids:
            return
        with self._atomic():
            doomed = list(
                self._rows(CheckpointRow)
                .filter(metadata__run_id__in=run_ids)
                .values_list("id", "thread_id", "checkpoint_ns", "checkpoint_id")
            )
            if not doomed:
                return
            writes = models.Q()
            for _, thread_id, ns, checkpoint_id in doomed:
                writes |= models.Q(thread_id=thread_id, checkpoint_ns=ns, checkpoint_id=checkpoint_id)
            self._rows(CheckpointWrite).filter(writes).delete()
            self._rows(CheckpointRow).filter(id__in=[row[0] for row in doomed]).delete()
            self._collect_blobs({row[1] for row in doomed})
        self._tails.forget()

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        source, target = str(source_thread_id), str(target_thread_id)
        with self._atomic():
            for model in (CheckpointRow, CheckpointBlob, CheckpointWrite):
                copies = []
                for row in self._rows(model).filter(thread_id=source).iterator(chunk_size=500):
                    row.pk = None
                    row.thread_id = target
                    copies.append(row)
                    if len(copies) >= 500:
                        self._rows(model).bulk_create(copies, ignore_conflicts=True)
                        copies = []
                if copies:
                    self._rows(model).bulk_create(copies, ignore_conflicts=True)
        self._tails.forget([target])

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        thread_ids = [str(thread_id) for thread_id in thread_ids]
        if strategy not in ("keep_latest", "delete"):
            raise ValueError(f"unknown prune strategy {strategy!r}: use 'keep_latest' or 'delete'")
        with self._atomic():
            if strategy == "delete":
                for model in (CheckpointWrite, CheckpointBlob, CheckpointRow):
                    self._rows(model).filter(thread_id__in=thread_ids).delete()
            else:
                for thread_id in thread_ids:
                    self._keep_latest(thread_id)
        self._tails.forget(thread_ids)

    def _keep_latest(self, thread_id: str) -> None:
        rows = self._rows(CheckpointRow).filter(thread_id=thread_id)
        latest: dict[str, str] = {}
        for ns, checkpoint_id in rows.values_list("checkpoint_ns", "checkpoint_id"):
            if checkpoint_id > latest.get(ns, ""):
                latest[ns] = checkpoint_id
        if not latest:
            return
        keep = models.Q()
        for ns, checkpoint_id in latest.items():
            keep |= models.Q(checkpoint_ns=ns, checkpoint_id=checkpoint_id)
        rows.exclude(keep).delete()
        self._rows(CheckpointWrite).filter(thread_id=thread_id).exclude(keep).delete()
        # The kept checkpoints' parents are gone; say so rather than dangle.
        rows.update(parent_checkpoint_id=None)
        self._collect_blobs({thread_id})

    def _collect_blobs(self, thread_ids: set[str]) -> None:
        """Delete blob rows no checkpoint of these threads needs, keeping delta chains whole."""
        for thread_id in thread_ids:
            needed: set[tuple[str, str, str]] = set()
            for ns, doc in (
                self._rows(CheckpointRow)
                .filter(thread_id=thread_id)
                .values_list("checkpoint_ns", "checkpoint")
            ):
                needed.update(
                    (ns, channel, str(version)) for channel, version in doc["channel_versions"].items()
                )
            blobs = {
                (ns, channel, version): (pk, base)
                for pk, ns, channel, version, base in self._rows(CheckpointBlob)
                .filter(thread_id=thread_id)
                .values_list("id", "checkpoint_ns", "channel", "version", "base_version")
            }
            pending = [key for key in needed if key in blobs]
            while pending:
                ns, channel, version = pending.pop()
                base = blobs[(ns, channel, version)][1]
                if base is not None and (ns, channel, base) not in needed:
                    needed.add((ns, channel, base))
                    if (ns, channel, base) in blobs:
                        pending.append((ns, channel, base))
            orphans = [pk for key, (pk, _) in blobs.items() if key not in needed]
            for start in range(0, len(orphans), 500):
                self._rows(CheckpointBlob).filter(id__in=orphans[start : start + 500]).delete()

    # -- async: one worker-thread hop per call -------------------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await sync_to_async(self.get_tuple, thread_sensitive=False)(config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        def collect() -> builtins.list[CheckpointTuple]:
            return list(self.list(config, filter=filter, before=before, limit=limit))

        for item in await sync_to_async(collect, thread_sensitive=False)():
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await sync_to_async(self.put, thread_sensitive=False)(
            config, checkpoint, metadata, new_versions
        )

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await sync_to_async(self.put_writes, thread_sensitive=False)(config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await sync_to_async(self.delete_thread, thread_sensitive=False)(thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await sync_to_async(self.delete_for_runs, thread_sensitive=False)(run_ids)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await sync_to_async(self.copy_thread, thread_sensitive=False)(source_thread_id, target_thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await sync_to_async(self.prune, thread_sensitive=False)(thread_ids, strategy=strategy)
