"""Between LangGraph's values and the saver's rows: what a put stores, and the tuples a
read's rows (sql.ReadRow) make.

Small scalar values live in the checkpoint row (one serialized value, encrypted like the
rest); every other changed channel gets a blob row, a list as a delta where it can
(list_deltas).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    PendingWrite,
    get_serializable_checkpoint_metadata,
    writes_sort_key,
)
from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer

from workflows.checkpointer import list_deltas
from workflows.checkpointer.sql import ReadRow
from workflows.serde import PlaintextRefused

# Checkpoint keys kept as JSON beside the serialized values; none of them is state.
JSON_KEYS = ("v", "ts", "channel_versions", "versions_seen", "updated_channels")
_INLINE_STR_MAX = 256


class UnreadableCheckpoint(ValueError):
    """A stored checkpoint value that cannot be decoded: its bytes were changed, or it was
    sealed with another encryption key. A ValueError, as the serializer's own errors are."""


def config_parts(config: RunnableConfig) -> tuple[str, str, str | None]:
    configurable = config["configurable"]
    return (
        str(configurable["thread_id"]),
        configurable.get("checkpoint_ns", "") or "",
        configurable.get("checkpoint_id"),
    )


def checkpoint_config(thread_id: str, ns: str, checkpoint_id: str) -> RunnableConfig:
    return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": checkpoint_id}}


def is_inline(value: Any) -> bool:
    kind = type(value)
    if kind is str:
        return len(value) <= _INLINE_STR_MAX
    return value is None or kind in (bool, int, float)


def loads(serde: SerializerProtocol, type_: str, blob: bytes | memoryview | None) -> Any:
    try:
        return serde.loads_typed((type_, bytes(blob) if blob is not None else b""))
    except PlaintextRefused:
        raise
    except (ValueError, TypeError) as exc:
        raise UnreadableCheckpoint(f"a stored checkpoint value ({type_}) cannot be decoded: {exc}") from exc


def _seal(serde: SerializerProtocol, type_: str, data: bytes) -> tuple[str, bytes]:
    """Encrypt bytes another serializer produced, as `EncryptedSerializer` would."""
    if isinstance(serde, EncryptedSerializer):
        cipher_name, ciphertext = serde.cipher.encrypt(data)
        return f"{type_}+{cipher_name}", ciphertext
    return type_, data


def checkpoint_row(
    serde: SerializerProtocol,
    config: RunnableConfig,
    checkpoint: Checkpoint,
    metadata: CheckpointMetadata,
    inline: Mapping[str, Any],
) -> tuple[Any, ...]:
    """The checkpoint row, in sql.CHECKPOINT_COLUMNS order."""
    thread_id, ns, parent_id = config_parts(config)
    extra = {
        key: value
        for key, value in checkpoint.items()
        if key not in JSON_KEYS and key not in ("id", "channel_values") and value
    }
    values_type, values_blob = serde.dumps_typed({"values": dict(inline), "extra": extra})
    return (
        thread_id,
        ns,
        checkpoint["id"],
        parent_id,
        json.dumps({key: checkpoint.get(key) for key in JSON_KEYS}),
        values_type,
        values_blob,
        json.dumps(get_serializable_checkpoint_metadata(config, metadata)),
    )


def blob_row(
    serde: SerializerProtocol, key: tuple[str, str, str, str], value: Any, base: list_deltas.ListState | None
) -> tuple[tuple[Any, ...], list_deltas.ListState | None]:
    """The blob row for one channel version (in sql.BLOB_COLUMNS order), and for a list,
    what to remember of it so the next step can store a delta."""
    if type(value) is not list:
        return (*key, *serde.dumps_typed(value), None, None), None
    plain_serde = serde.serde if isinstance(serde, EncryptedSerializer) else serde
    plain_type, plain = plain_serde.dumps_typed(value)
    encoded = list_deltas.encode(key[3], plain, base) if plain_type == "msgpack" else None
    if encoded is None:
        return (*key, *_seal(serde, plain_type, plain), None, None), None
    sealed = _seal(serde, plain_type, encoded.data)
    return (*key, *sealed, encoded.base_version, encoded.root_version), encoded.state


def write_rows(
    serde: SerializerProtocol,
    parts: tuple[str, str, str],
    writes: Sequence[tuple[str, Any]],
    task_id: str,
    task_path: str,
    index: Mapping[str, int],
) -> list[tuple[Any, ...]]:
    """Pending write rows, in sql.WRITE_COLUMNS order; `index` numbers special channels."""
    return [
        (*parts, task_id, task_path, index.get(channel, position), channel, *serde.dumps_typed(value))
        for position, (channel, value) in enumerate(writes)
    ]


def tuples(serde: SerializerProtocol, rows: Iterable[ReadRow]) -> list[CheckpointTuple]:
    """The checkpoint tuples of one read statement's rows, newest first."""
    checkpoints = []
    blobs: dict[tuple[str, str, str, str], ReadRow] = {}
    bases: dict[tuple[str, str, str], dict[str, str | None]] = {}
    writes: dict[tuple[str, str, str], list[tuple[tuple[str, str, int], PendingWrite]]] = {}
    for row in rows:
        kind, thread_id, ns = row[0], row[1], row[2]
        if kind == "c":
            checkpoints.append(row)
        elif kind == "b":
            if blobs.setdefault((thread_id, ns, row[3], row[4]), row) is row:
                bases.setdefault((thread_id, ns, row[3]), {})[row[4]] = row[5]
        else:
            _, _, _, checkpoint_id, task_id, task_path, channel, type_, blob, idx = row
            writes.setdefault((thread_id, ns, checkpoint_id), []).append(
                (writes_sort_key(task_path, task_id, idx), (task_id, channel, loads(serde, type_, blob)))
            )

    loaded: dict[tuple[str, str, str, str], Any] = {}

    def load(key: tuple[str, str, str, str]) -> Any:
        if key not in loaded:
            row = blobs[key]
            loaded[key] = loads(serde, row[7], row[8])
        return loaded[key]

    def value_of(key: tuple[str, str, str, str]) -> Any:
        thread_id, ns, channel, version = key
        if blobs[key][5] is None:
            return load(key)

        def describe(wanted: str, missing: str) -> str:
            return (
                f"thread {thread_id!r}: version {wanted} of channel {channel!r} extends version "
                f"{missing}, which is missing; the checkpoint cannot be read back"
            )

        return list_deltas.assemble(
            version,
            bases[(thread_id, ns, channel)],
            lambda base: cast(list[Any], load((thread_id, ns, channel, base))),
            describe=describe,
        )

    found = []
    checkpoints.sort(key=lambda row: row[3], reverse=True)
    for (
        _,
        thread_id,
        ns,
        checkpoint_id,
        parent_id,
        doc_text,
        metadata_text,
        values_type,
        values,
        _,
    ) in checkpoints:
        doc = json.loads(doc_text)
        payload = loads(serde, values_type, values)
        channel_values = dict(payload.get("values", {}))
        for channel, version in doc["channel_versions"].items():
            key = (thread_id, ns, channel, str(version))
            if channel not in channel_values and key in blobs and blobs[key][7] != "empty":
                channel_values[channel] = value_of(key)
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
        pending = sorted(writes.get((thread_id, ns, checkpoint_id), []), key=lambda item: item[0])
        found.append(
            CheckpointTuple(
                config=checkpoint_config(thread_id, ns, checkpoint_id),
                checkpoint=cast(Checkpoint, checkpoint),
                metadata=cast(CheckpointMetadata, json.loads(metadata_text)),
                parent_config=checkpoint_config(thread_id, ns, parent_id) if parent_id else None,
                pending_writes=[write for _, write in pending],
            )
        )
    return found
