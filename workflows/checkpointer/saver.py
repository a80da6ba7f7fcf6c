"""`DjangoSaver`: the LangGraph contract, each method building its arguments, running one
statement and loading the result; the pieces live beside it (see the package's docstring)."""

from __future__ import annotations

import builtins
import copy
import functools
import random
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Mapping, Sequence
from typing import Any, cast

from asgiref.sync import sync_to_async
from django.db import connections as django_connections
from django.db.models.fields.json import KeyTransform
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    DeltaChannelHistory,
    PendingWrite,
    get_checkpoint_id,
)
from langgraph.checkpoint.serde.base import SerializerProtocol
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from workflows import timings
from workflows.checkpointer import codec, list_deltas, maintenance, sql
from workflows.checkpointer.connections import Statement, execute, select, write_connection
from workflows.checkpointer.fence import Fence, NoFence, lease_of
from workflows.models import Checkpoint as CheckpointRow
from workflows.serde import SealedSerializer, default_serde

_TAIL_CACHE_SIZE = 512
# get_delta_channel_history reads ancestors in batches of this many, one statement each.
_HISTORY_BATCH = 100


class DjangoSaver(BaseCheckpointSaver[str]):
    """A LangGraph checkpointer over `workflows.models`, on any database Django supports.

    Tested on SQLite and PostgreSQL with LangGraph's conformance suite (all eight
    capabilities). Async methods run the sync ones in a worker thread, one hop per call.

    `fence` checks the lease a run's writes carry in their config (fence.py): Signoff's
    engine passes `workflows.leases.RunLeaseFence()`. A saver built without one writes
    what carries no lease (LangGraph's own tests, tools) and refuses a leased write, which
    it could not check.
    """

    def __init__(
        self, *, serde: SerializerProtocol | None = None, using: str = "default", fence: Fence | None = None
    ) -> None:
        super().__init__(serde=serde or default_serde())
        self.using = using
        self.fence = fence
        self._tails = list_deltas.TailCache(_TAIL_CACHE_SIZE)

    @functools.cached_property
    def _vendor(self) -> str:
        return django_connections[self.using].vendor

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
        thread_id, ns, parent_id = codec.config_parts(config)
        values = checkpoint["channel_values"]
        inline = {name: value for name, value in values.items() if codec.is_inline(value)}
        parent_lists = self._tails.parent_lists((thread_id, ns), parent_id)
        blob_rows = []
        lists: dict[str, list_deltas.ListState] = {}
        for channel, version in new_versions.items():
            if channel in inline or channel not in values:
                continue
            key = (thread_id, ns, channel, str(version))
            row, state = codec.blob_row(self.serde, key, values[channel], parent_lists.get(channel))
            blob_rows.append(row)
            if state is not None:
                lists[channel] = state
        # Lists that did not change this step are still the parent's versions.
        versions = checkpoint["channel_versions"]
        for channel, state in parent_lists.items():
            if channel not in lists and str(versions.get(channel)) == state.version:
                lists[channel] = state
        checkpoint_row = codec.checkpoint_row(self.serde, config, checkpoint, metadata, inline)

        self._write(config, lambda vendor: sql.put_statements(vendor, checkpoint_row, blob_rows))
        self._tails.set((thread_id, ns), list_deltas.Tail(checkpoint["id"], lists))
        return codec.checkpoint_config(thread_id, ns, checkpoint["id"])

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        thread_id, ns, checkpoint_id = codec.config_parts(config)
        if checkpoint_id is None:
            raise ValueError("put_writes needs the checkpoint_id the writes belong to")
        if not writes:
            return
        rows = codec.write_rows(
            self.serde, (thread_id, ns, checkpoint_id), writes, task_id, task_path, WRITES_IDX_MAP
        )
        # Special channels (error, interrupt, resume) are replaced on retry; ordinary
        # writes are immutable, so a repeated write is ignored.
        replace = all(channel in WRITES_IDX_MAP for channel, _ in writes)
        self._write(config, lambda vendor: [sql.write_statement(vendor, rows, replace=replace)])

    def _write(self, config: RunnableConfig, statements: Callable[[str], Sequence[Statement]]) -> None:
        lease = lease_of(config)
        # A run's writes are timed, commit included (workflows.timings); a refused one is not.
        started = time.perf_counter()
        with write_connection(self.using) as conn:
            fence = None
            if lease is not None:
                if self.fence is None:
                    raise NoFence(
                        f"this write carries run {lease.run_id}'s lease, but the saver has no fence "
                        "to check it against: build it with DjangoSaver(fence=...)"
                    )
                fence = self.fence.statement(conn, lease)
            execute(conn, statements(conn.vendor), fence)
        if lease is not None:
            timings.observe(lease.run_id, time.perf_counter() - started)

    # -- reads ---------------------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        thread_id, ns, checkpoint_id = codec.config_parts(config)
        statement = sql.read_statement(self._vendor, sql.latest_checkpoint(with_id=bool(checkpoint_id)))
        params = [thread_id, ns, checkpoint_id] if checkpoint_id else [thread_id, ns]
        found = codec.tuples(self.serde, select(self.using, statement, params))
        return found[0] if found else None

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        rows = maintenance.rows(self.using, CheckpointRow)
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
        rows = rows.order_by("-checkpoint_id") if limit is not None else rows.order_by()
        if limit is not None:
            rows = rows[:limit]
        # The ORM writes the filter (metadata keys are JSON lookups that differ between
        # databases); the read statement around it is the one get_tuple runs.
        ids_sql, params = rows.values_list("id").query.get_compiler(using=self.using).as_sql()
        statement = sql.read_statement(self._vendor, sql.checkpoints_with_ids(ids_sql))
        yield from codec.tuples(self.serde, select(self.using, statement, params))

    def get_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        """The base class's walk of the parent chain, reading the chain's links in one
        statement and the ancestors in batches, instead of a get_tuple per ancestor."""
        if not channels:
            return {}
        thread_id, ns, checkpoint_id = codec.config_parts(config)
        links: dict[str, str | None] = dict(select(self.using, sql.parent_links(), [thread_id, ns]))
        target = checkpoint_id or max(links, default=None)
        path: builtins.list[str] = []
        cursor = links.get(target) if target in links else None
        while cursor is not None and cursor in links and len(path) <= len(links):
            path.append(cursor)
            cursor = links[cursor]

        collected: dict[str, builtins.list[PendingWrite]] = {channel: [] for channel in channels}
        seeds: dict[str, Any] = {}
        remaining = set(channels)
        for start in range(0, len(path), _HISTORY_BATCH):
            batch = path[start : start + _HISTORY_BATCH]
            statement = sql.read_statement(
                self._vendor, sql.checkpoints_in(len(batch)), channels=len(channels)
            )
            rows = select(self.using, statement, [thread_id, ns, *batch, *channels])
            found = {item.checkpoint["id"]: item for item in codec.tuples(self.serde, rows)}
            for ancestor in batch:
                for write in reversed(found[ancestor].pending_writes or ()):
                    if write[1] in remaining:
                        collected[write[1]].append(write)
                stored = found[ancestor].checkpoint["channel_values"]
                for channel in [channel for channel in remaining if channel in stored]:
                    seeds[channel] = stored[channel]
                    remaining.discard(channel)
                if not remaining:
                    break
            if not remaining:
                break
        result: dict[str, DeltaChannelHistory] = {}
        for channel in channels:
            entry: DeltaChannelHistory = {"writes": builtins.list(reversed(collected[channel]))}
            if channel in seeds:
                entry["seed"] = seeds[channel]
            result[channel] = entry
        return result

    # -- deletion, copying, pruning ------------------------------------------------

    def delete_thread(self, thread_id: str) -> None:
        maintenance.delete_threads(self.using, [str(thread_id)])
        self._tails.forget([str(thread_id)])

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        if run_ids:
            maintenance.delete_for_runs(self.using, [str(run_id) for run_id in run_ids])
            self._tails.forget()

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        maintenance.copy_thread(self.using, str(source_thread_id), str(target_thread_id))
        self._tails.forget([str(target_thread_id)])

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        thread_ids = [str(thread_id) for thread_id in thread_ids]
        if strategy == "delete":
            maintenance.delete_threads(self.using, thread_ids)
        elif strategy == "keep_latest":
            maintenance.keep_latest(self.using, thread_ids)
        else:
            raise ValueError(f"unknown prune strategy {strategy!r}: use 'keep_latest' or 'delete'")
        self._tails.forget(thread_ids)

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
            return builtins.list(self.list(config, filter=filter, before=before, limit=limit))

        for item in await sync_to_async(collect, thread_sensitive=False)():
            yield item

    async def aget_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        def history() -> Mapping[str, DeltaChannelHistory]:
            return self.get_delta_channel_history(config=config, channels=channels)

        return await sync_to_async(history, thread_sensitive=False)()

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
