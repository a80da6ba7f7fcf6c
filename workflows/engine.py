"""LangGraph glue: the compiled graph of a workflow, a thread's config, and reading its pauses.

Nothing here writes Signoff's tables; `services` and `execution` do.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from langchain_core.runnables import RunnableConfig
from langgraph.channels.last_value import LastValue
from langgraph.checkpoint.base import WRITES_IDX_MAP
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import All, StateSnapshot

from workflows import registry
from workflows.checkpointer import BrokenDeltaChain, DjangoSaver, Lease, UnreadableCheckpoint
from workflows.leases import RunLeaseFence
from workflows.serde import PlaintextRefused
from workflows.signals import PendingInterrupt

# What reading a thread's checkpoints raises when the stored rows cannot be turned back into
# state: bytes changed or sealed with another key, a plaintext row while a key is set, or a
# list whose earlier version is gone. Pages show these as "the checkpoint cannot be read".
UNREADABLE = (UnreadableCheckpoint, PlaintextRefused, BrokenDeltaChain)

# The task id under which LangGraph stores the pending writes no task made: the input,
# Command(update=...) and resume values. A copy of langgraph._internal._constants.NULL_TASK_ID,
# which is not public API; tests/test_langgraph_internals.py checks the two stay equal.
NULL_TASK_ID = "00000000-0000-0000-0000-000000000000"

_compiled: dict[str, CompiledStateGraph[Any, Any, Any, Any]] = {}
_lock = threading.Lock()


def graph_for(workflow: str) -> CompiledStateGraph[Any, Any, Any, Any]:
    """The workflow's graph compiled with DjangoSaver, once per process."""
    with _lock:
        graph = _compiled.get(workflow)
        if graph is None:
            # Compiling hands the graph's schema types to the saver's strict allowlist
            # (see workflows.checkpointer.allowlist).
            graph = _compiled[workflow] = registry.get(workflow).compile(DjangoSaver(fence=RunLeaseFence()))
        return graph


def forget_compiled() -> None:
    with _lock:
        _compiled.clear()


# Checkpoint metadata key naming the Run whose worker wrote the checkpoint. Not LangGraph's
# own "run_id": LangGraph compares that one to decide whether an invoke resumes, and the
# saver's delete_for_runs deletes by it.
RUN_METADATA_KEY = "signoff_run"


def config_for(
    thread_id: str, *, lease: Lease | None = None, checkpoint_id: str = "", run_id: int | None = None
) -> RunnableConfig:
    configurable: dict[str, Any] = {"thread_id": thread_id}
    if checkpoint_id:
        configurable["checkpoint_id"] = checkpoint_id
    if lease is not None:
        configurable.update(lease.as_configurable())
    config: RunnableConfig = {
        "configurable": configurable,
        "recursion_limit": settings.SIGNOFF_RECURSION_LIMIT,
    }
    if run_id is not None:
        # LangGraph copies config["metadata"] into every checkpoint it puts, so each
        # checkpoint says which run wrote it (the thread admin's timeline shows it).
        config["metadata"] = {RUN_METADATA_KEY: run_id}
    return config


def run_id_in(metadata: Any) -> int | None:
    """The Run that wrote a checkpoint, from its metadata; None for checkpoints written by
    people (edits, rollbacks) or before runs were recorded there."""
    value = metadata.get(RUN_METADATA_KEY) if isinstance(metadata, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def is_input_checkpoint(snapshot: StateSnapshot) -> bool:
    """The checkpoint LangGraph writes before the first step, holding the input as pending
    writes only; nothing can be rolled back to it."""
    return (snapshot.metadata or {}).get("source") == "input"


def head(workflow: str, thread_id: str) -> StateSnapshot:
    return graph_for(workflow).get_state(config_for(thread_id))


def checkpoint_id_of(snapshot: StateSnapshot) -> str:
    return str(snapshot.config.get("configurable", {}).get("checkpoint_id") or "")


Nodes = tuple[str, ...] | All


@dataclass(frozen=True)
class Breakpoints:
    """The static breakpoints of one run: the workflow's own and those its run asked for
    (an API client's interrupt_before / interrupt_after, stored in the run's command as
    "breakpoints"). None: the workflow's own, as compiled."""

    before: Nodes | None = None
    after: Nodes | None = None


def _merged(declared: Nodes, extra: Any) -> Nodes:
    if declared == "*" or extra == "*":
        return "*"
    return tuple(dict.fromkeys([*declared, *(extra or ())]))


def breakpoints_for(workflow: str, command: Mapping[str, Any]) -> Breakpoints:
    """The breakpoints a run with this command stops at (see `Breakpoints`)."""
    extra = command.get("breakpoints") or {}
    if not extra:
        return Breakpoints()
    spec = registry.get(workflow)
    return Breakpoints(
        before=_merged(spec.interrupt_before, extra.get("before")),
        after=_merged(spec.interrupt_after, extra.get("after")),
    )


def pending_interrupts(
    workflow: str, snapshot: StateSnapshot, breakpoints: Breakpoints | None = None
) -> list[PendingInterrupt]:
    """The pauses the snapshot is waiting on: unanswered `interrupt()` calls, or a static
    breakpoint the graph stopped at (the workflow's, or those of the run that stopped there,
    `breakpoints`). Empty when the thread can run on by itself."""
    checkpoint_id = checkpoint_id_of(snapshot)
    found = []
    for task in snapshot.tasks:
        for pending in task.interrupts:
            found.append(PendingInterrupt(pending.id, task.name, checkpoint_id, pending.value))
    if found or not snapshot.next:
        return found
    spec = registry.get(workflow)
    breakpoints = breakpoints or Breakpoints()
    declared_before = spec.interrupt_before if breakpoints.before is None else breakpoints.before
    declared_after = spec.interrupt_after if breakpoints.after is None else breakpoints.after
    before = set(snapshot.next) if declared_before == "*" else set(declared_before)
    stopped = [node for node in snapshot.next if node in before]
    if not stopped and declared_after:
        # Stopped after a node: the step that produced this checkpoint ran it.
        parent = snapshot.parent_config
        if parent is not None:
            ran = graph_for(workflow).get_state(parent).next
            after = set(ran) if declared_after == "*" else set(declared_after)
            stopped = [node for node in ran if node in after]
    return [
        PendingInterrupt(
            f"breakpoint:{checkpoint_id}:{node}",
            node,
            checkpoint_id,
            {"next": list(snapshot.next)},
            kind="breakpoint",
        )
        for node in stopped
    ]


def stored_edits(workflow: str, snapshot: StateSnapshot) -> list[tuple[str, Any]]:
    """The state edits (`Command(update=...)`) stored on a checkpoint as pending writes,
    waiting for its step to finish, oldest first."""
    stored = graph_for(workflow).checkpointer.get_tuple(snapshot.config)  # type: ignore[union-attr]
    writes = stored.pending_writes if stored is not None else None
    return [
        (channel, value)
        for task_id, channel, value in writes or ()
        if task_id == NULL_TASK_ID and channel not in WRITES_IDX_MAP
    ]


def single_value_fields(workflow: str, fields: Any) -> set[str]:
    """The fields among `fields` that take one value per step (no reducer): two edits of one
    of them in the same step fail the step with InvalidUpdateError."""
    channels = graph_for(workflow).channels
    return {name for name in fields if isinstance(channels.get(name), LastValue)}
