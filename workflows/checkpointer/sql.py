"""The saver's SQL: column tuples, the INSERTs it writes with, and the one read statement.

Writes run on the DB-API driver itself (placeholders `%s` on PostgreSQL, `?` on SQLite);
reads run through Django's cursor (`%s` everywhere). Table and column names are our own
and quoted with `"`, which SQLite and PostgreSQL share; values always travel as parameters.

Both read paths (`get_tuple` and `list`) run `read_statement`: one round trip returning
rows of one shape, `ReadRow`, for the checkpoints, the blobs their channels need (with the
whole delta chain of each list) and their pending writes.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from django.db import models

from workflows.models import Checkpoint, CheckpointBlob, CheckpointWrite

BLOB_COLUMNS = (
    "thread_id",
    "checkpoint_ns",
    "channel",
    "version",
    "type",
    "blob",
    "base_version",
    "root_version",
)
BLOB_KEY = ("thread_id", "checkpoint_ns", "channel", "version")
CHECKPOINT_COLUMNS = (
    "thread_id",
    "checkpoint_ns",
    "checkpoint_id",
    "parent_checkpoint_id",
    "checkpoint",
    "values_type",
    "values",
    "metadata",
)
CHECKPOINT_KEY = ("thread_id", "checkpoint_ns", "checkpoint_id")
CHECKPOINT_UPDATE = ("checkpoint", "values_type", "values", "metadata")
WRITE_COLUMNS = (
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
WRITE_KEY = ("thread_id", "checkpoint_ns", "checkpoint_id", "task_id", "idx")
# Special channels (error, interrupt, resume) are replaced on retry.
WRITE_UPDATE = ("channel", "type", "blob", "task_path")


def _quote(name: str) -> str:
    return f'"{name}"'


def insert(
    vendor: str,
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
    sql = _insert_template(vendor, model, columns, len(rows), unique, update)
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
    json_columns = {
        field.column for field in model._meta.concrete_fields if isinstance(field, models.JSONField)
    }
    mark, cast_json = ("%s", "::jsonb") if vendor == "postgresql" else ("?", "")
    row = "(" + ", ".join(f"{mark}{cast_json}" if c in json_columns else mark for c in columns) + ")"
    conflict = (
        "DO UPDATE SET " + ", ".join(f"{_quote(c)} = EXCLUDED.{_quote(c)}" for c in update)
        if update
        else "DO NOTHING"
    )
    return (
        f"INSERT INTO {_quote(model._meta.db_table)} ({', '.join(_quote(c) for c in columns)}) "
        f"VALUES {', '.join([row] * count)} "
        f"ON CONFLICT ({', '.join(_quote(c) for c in unique)}) {conflict}"
    )


def put_statements(
    vendor: str, checkpoint_row: tuple[Any, ...], blob_rows: Sequence[tuple[Any, ...]]
) -> list[tuple[str, list[Any]]]:
    """A checkpoint and its new blobs: one statement on PostgreSQL, blobs-then-checkpoint
    on SQLite (see connections.execute)."""
    checkpoint = insert(
        vendor,
        Checkpoint,
        CHECKPOINT_COLUMNS,
        [checkpoint_row],
        unique=CHECKPOINT_KEY,
        update=CHECKPOINT_UPDATE,
    )
    if not blob_rows:
        return [checkpoint]
    blobs = insert(vendor, CheckpointBlob, BLOB_COLUMNS, blob_rows, unique=BLOB_KEY)
    if vendor == "postgresql":
        # A data-modifying CTE makes blobs and checkpoint one statement: atomic on its
        # own, one round trip, one commit.
        return [(f"WITH blobs AS ({blobs[0]}) {checkpoint[0]}", blobs[1] + checkpoint[1])]
    return [blobs, checkpoint]


def write_statement(vendor: str, rows: Sequence[tuple[Any, ...]], *, replace: bool) -> tuple[str, list[Any]]:
    """Pending writes: replaced when `replace` (special channels), else a repeat is ignored."""
    return insert(
        vendor, CheckpointWrite, WRITE_COLUMNS, rows, unique=WRITE_KEY, update=WRITE_UPDATE if replace else ()
    )


# -- the read statement ---------------------------------------------------------------

# Every row the read statement returns: (kind, thread_id, checkpoint_ns, *fields) where
# kind "c", a checkpoint: checkpoint_id, parent_checkpoint_id, checkpoint JSON (text),
#                         metadata JSON (text), values_type, values, NULL
#      "b", a blob:       channel, version, base_version, root_version, type, blob, NULL
#      "w", a write:      checkpoint_id, task_id, task_path, channel, type, blob, idx
ReadRow = tuple[str, str, str, Any, Any, Any, Any, Any, Any, Any]

_CHECKPOINT_TABLE = _quote(Checkpoint._meta.db_table)
_BLOB_TABLE = _quote(CheckpointBlob._meta.db_table)
_WRITE_TABLE = _quote(CheckpointWrite._meta.db_table)
_CHECKPOINT_SELECT = ", ".join(_quote(c) for c in CHECKPOINT_COLUMNS)
_BLOB_FIELDS = (
    "t.thread_id, t.checkpoint_ns, t.channel, t.version, t.base_version, t.root_version, t.type, t.blob"
)
_NO_IDX = "CAST(NULL AS integer)"


def latest_checkpoint(*, with_id: bool) -> str:
    """The checkpoint of a thread and namespace (`%s`, `%s`): the given one (a third `%s`)
    or the latest."""
    where = '"thread_id" = %s AND "checkpoint_ns" = %s' + (' AND "checkpoint_id" = %s' if with_id else "")
    return (
        f"SELECT {_CHECKPOINT_SELECT} FROM {_CHECKPOINT_TABLE} WHERE {where} "
        'ORDER BY "checkpoint_id" DESC LIMIT 1'
    )


def checkpoints_with_ids(ids_sql: str) -> str:
    """The checkpoints whose primary keys a subquery selects (list's ORM filter)."""
    return f"SELECT {_CHECKPOINT_SELECT} FROM {_CHECKPOINT_TABLE} WHERE id IN ({ids_sql})"


def read_statement(vendor: str, checkpoints: str, *, channels: int | None = None) -> str:
    """One SELECT: the rows `checkpoints` (a SELECT of CHECKPOINT_COLUMNS) picks, the blob
    rows of their channel versions and the whole chain of each delta among them, and their
    pending writes, as ReadRows. With `channels`, blobs only of that many channels, given
    as parameters after those of `checkpoints`.

    The checkpoints' JSON names each channel's version, so the blobs are found by a join
    on it (jsonb_each_text / json_each) rather than in a second round trip. A chain is every
    row sharing the delta's root (the partial index on root_version) plus the root itself;
    deduplicating and following it is the caller's (see list_deltas.assemble).
    """
    if vendor == "postgresql":
        versions = "jsonb_each_text(c.checkpoint -> 'channel_versions') AS v (key, value)"
    else:
        versions = "json_each(c.checkpoint, '$.channel_versions') AS v"
    only = f" WHERE v.key IN ({', '.join(['%s'] * channels)})" if channels is not None else ""
    same_channel = "t.thread_id = r.thread_id AND t.checkpoint_ns = r.checkpoint_ns AND t.channel = r.channel"
    return (
        f"WITH c AS ({checkpoints}), "
        "wanted AS (SELECT DISTINCT c.thread_id, c.checkpoint_ns, v.key AS channel, "
        f"CAST(v.value AS text) AS version FROM c, {versions}{only}), "
        f"b AS (SELECT {_BLOB_FIELDS} FROM wanted w JOIN {_BLOB_TABLE} t ON t.thread_id = w.thread_id "
        "AND t.checkpoint_ns = w.checkpoint_ns AND t.channel = w.channel AND t.version = w.version), "
        "r AS (SELECT DISTINCT thread_id, checkpoint_ns, channel, root_version FROM b "
        "WHERE root_version IS NOT NULL) "
        "SELECT 'c', thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, "
        "CAST(checkpoint AS text), CAST(metadata AS text), values_type, "
        f"{_quote('values')}, {_NO_IDX} FROM c "
        f"UNION ALL SELECT 'b', t.*, {_NO_IDX} FROM b t "
        f"UNION ALL SELECT 'b', {_BLOB_FIELDS}, {_NO_IDX} FROM r JOIN {_BLOB_TABLE} t "
        f"ON {same_channel} AND t.root_version = r.root_version "
        f"UNION ALL SELECT 'b', {_BLOB_FIELDS}, {_NO_IDX} FROM r JOIN {_BLOB_TABLE} t "
        f"ON {same_channel} AND t.version = r.root_version "
        "UNION ALL SELECT 'w', t.thread_id, t.checkpoint_ns, t.checkpoint_id, t.task_id, t.task_path, "
        f"t.channel, t.type, t.blob, t.idx FROM c JOIN {_WRITE_TABLE} t ON t.thread_id = c.thread_id "
        "AND t.checkpoint_ns = c.checkpoint_ns AND t.checkpoint_id = c.checkpoint_id"
    )


def parent_links() -> str:
    """(checkpoint_id, parent_checkpoint_id) of every checkpoint of a thread and namespace."""
    return (
        f'SELECT "checkpoint_id", "parent_checkpoint_id" FROM {_CHECKPOINT_TABLE} '
        'WHERE "thread_id" = %s AND "checkpoint_ns" = %s'
    )


def checkpoints_in(count: int) -> str:
    """The checkpoints of a thread and namespace with one of `count` ids."""
    return (
        f"SELECT {_CHECKPOINT_SELECT} FROM {_CHECKPOINT_TABLE} "
        'WHERE "thread_id" = %s AND "checkpoint_ns" = %s '
        f'AND "checkpoint_id" IN ({", ".join(["%s"] * count)})'
    )
