"""The API's bodies, typed: what a client may send (refused with a 422 naming any field
Signoff does not implement) and what it gets, in langgraph_sdk's shapes (`langgraph_sdk.schema`)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from ninja import Schema
from pydantic import ConfigDict, Field, StrictInt

AssistantField = Literal[
    "assistant_id",
    "graph_id",
    "name",
    "description",
    "config",
    "context",
    "created_at",
    "updated_at",
    "metadata",
    "version",
]


class Input(Schema):
    """A request body: a field that is not declared is a 422 that names it, never ignored."""

    model_config = ConfigDict(extra="forbid")


class AssistantSearch(Input):
    metadata: dict[str, Any] | None = Field(None, description="exact match on each key of the metadata")
    graph_id: str | None = None
    name: str | None = Field(None, description="a case-insensitive part of the name")
    # Strict: pydantic would otherwise take `false` or "2" for a number, where the schema says
    # integer (the fuzz, tests/test_api_fuzz.py, sends them).
    limit: StrictInt = Field(10, ge=1, le=1000)
    offset: StrictInt = Field(0, ge=0)
    sort_by: Literal["assistant_id", "graph_id", "name", "created_at", "updated_at"] | None = None
    sort_order: Literal["asc", "desc"] | None = None
    select: list[AssistantField] | None = Field(None, description="the fields to return (default: all)")


class Assistant(Schema):
    """A registered workflow, as an assistant: its name is its assistant_id and its graph_id."""

    assistant_id: str
    graph_id: str
    name: str
    description: str | None
    config: dict[str, Any]
    context: dict[str, Any]
    metadata: dict[str, Any]
    version: int
    created_at: datetime
    updated_at: datetime


class AssistantFields(Schema):
    """An assistant with only the fields `select` asked for (all of them by default)."""

    assistant_id: str | None = None
    graph_id: str | None = None
    name: str | None = None
    description: str | None = None
    config: dict[str, Any] | None = None
    context: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    version: int | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


class GraphSchemas(Schema):
    graph_id: str
    input_schema: dict[str, Any] | None
    output_schema: dict[str, Any] | None
    state_schema: dict[str, Any] | None
    config_schema: dict[str, Any] | None
    context_schema: dict[str, Any] | None


class DrawnGraph(Schema):
    nodes: list[dict[str, Any]]
    edges: list[dict[str, Any]]


class Ok(Schema):
    ok: bool


class Host(Schema):
    kind: str
    project_id: str | None
    revision_id: str | None
    tenant_id: str | None


class Info(Schema):
    version: str
    langgraph_py_version: str
    flags: dict[str, bool]
    host: Host


class Error(Schema):
    detail: Any


# -- threads ----------------------------------------------------------------------------------

ThreadStatus = Literal["idle", "busy", "interrupted", "error"]
# The fields of a Thread that search's `select` may name: the ones Signoff's thread has
# (LangGraph's "config" and "context" are per-run settings Signoff does not keep on threads).
ThreadField = Literal["thread_id", "created_at", "updated_at", "metadata", "status", "values", "interrupts"]


class ThreadCreate(Input):
    """POST /threads. `graph_id` arrives inside `metadata` (the SDK puts it there);
    `supersteps` and `ttl` are not implemented, so they are refused as unknown fields."""

    thread_id: uuid.UUID | None = Field(None, description="the new thread's id (default: a random UUID)")
    metadata: dict[str, Any] | None = None
    if_exists: Literal["raise", "do_nothing"] = Field(
        "raise", description="a thread_id that exists: a 409 (raise), or that thread (do_nothing)"
    )


class ThreadSearch(Input):
    metadata: dict[str, Any] | None = Field(None, description="every key equal in the thread's metadata")
    values: dict[str, Any] | None = Field(
        None, description="every key equal in the head's state values (scans at most 1000 threads)"
    )
    ids: list[uuid.UUID] | None = None
    status: ThreadStatus | None = None
    limit: StrictInt = Field(10, ge=1, le=1000)
    offset: StrictInt = Field(0, ge=0)
    sort_by: Literal["thread_id", "status", "created_at", "updated_at"] | None = None
    sort_order: Literal["asc", "desc"] | None = None
    select: list[ThreadField] | None = Field(None, description="the fields to return (default: all)")


class CheckpointIn(Input):
    """A checkpoint of the thread, as `ThreadState.checkpoint` names it. Only the root
    namespace is served: Signoff's threads have no subgraph checkpoints to name."""

    thread_id: str | None = None
    checkpoint_ns: Literal[""] = ""
    checkpoint_id: str | None = None
    checkpoint_map: dict[str, Any] | None = None


class StateAtCheckpoint(Input):
    checkpoint: CheckpointIn
    subgraphs: bool = False


class StateUpdate(Input):
    values: dict[str, Any] | None = Field(
        None, description="the workflow's editable fields to set (null: none, e.g. with as_node='__end__')"
    )
    as_node: str | None = Field(None, description="write the values as if this node had just run")
    checkpoint: CheckpointIn | None = Field(None, description="update this checkpoint (an earlier one forks)")
    checkpoint_id: str | None = Field(None, description="the same, as the SDK's deprecated argument")


class HistoryQuery(Input):
    limit: StrictInt = Field(10, ge=1, le=1000)
    before: str | CheckpointIn | None = Field(None, description="only checkpoints older than this one")
    metadata: dict[str, Any] | None = Field(None, description="every key equal in the checkpoint's metadata")
    checkpoint: CheckpointIn | None = Field(None, description="only this checkpoint")


class CheckpointOut(Schema):
    thread_id: str
    checkpoint_ns: str
    checkpoint_id: str | None
    checkpoint_map: dict[str, Any] | None


class Interrupt(Schema):
    value: Any
    id: str


class Thread(Schema):
    thread_id: str
    created_at: datetime
    updated_at: datetime
    metadata: dict[str, Any]
    status: ThreadStatus
    values: Any
    interrupts: dict[str, list[Interrupt]]


class ThreadFields(Schema):
    """A thread with only the fields `select` asked for (all of them by default)."""

    thread_id: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    metadata: dict[str, Any] | None = None
    status: ThreadStatus | None = None
    values: Any = None
    interrupts: dict[str, list[Interrupt]] | None = None


class ThreadTask(Schema):
    id: str
    name: str
    error: str | None
    interrupts: list[Interrupt]
    checkpoint: CheckpointOut | None
    state: Any
    result: Any


class ThreadState(Schema):
    values: Any
    next: list[str]
    checkpoint: CheckpointOut | None
    metadata: dict[str, Any] | None
    created_at: str | None
    parent_checkpoint: CheckpointOut | None
    tasks: list[ThreadTask]
    interrupts: list[Interrupt]


class StateUpdated(Schema):
    checkpoint: CheckpointOut
