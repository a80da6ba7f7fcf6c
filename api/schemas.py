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


# -- runs ----------------------------------------------------------------------------------

# The stream modes a run may ask for (langgraph_sdk.schema.StreamMode less "debug", "tools"
# and "lifecycle", which Signoff does not publish): a run's modes are what its worker publishes.
StreamMode = Literal[
    "values", "updates", "checkpoints", "tasks", "events", "custom", "messages", "messages-tuple"
]


class RunCommand(Input):
    """`Command`: answers to the thread's interrupts and the edits given with them."""

    resume: Any = Field(
        None,
        description=(
            "the answer to the one pending interrupt, a map of answers by interrupt id, or Agent "
            "Inbox's [HumanResponse]; it decides the interrupt's open review as the key's user"
        ),
    )
    update: dict[str, Any] | list[tuple[str, Any]] | None = Field(
        None, description="edits of state fields given with the answer, typed by the workflow's schema"
    )
    goto: Any = Field(
        None, description="refused unless empty: a review's answer decides where the graph goes"
    )


class RunConfig(Input):
    """The parts of a RunnableConfig Signoff honours (what RemoteGraph sends, once sanitized)."""

    recursion_limit: int | None = Field(
        None, description="accepted only equal to the server's SIGNOFF_RECURSION_LIMIT"
    )
    tags: list[str] | None = Field(None, description="refused unless empty: Signoff traces no runs")
    metadata: dict[str, Any] | None = Field(None, description="merged into the run's metadata")
    configurable: dict[str, Any] | None = Field(
        None, description="only thread_id, equal to the run's thread: Signoff's graphs take no configuration"
    )


class CheckpointRef(Input):
    thread_id: str | None = None
    checkpoint_ns: str | None = None
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


class RunCreate(Input):
    """A run, as langgraph_sdk's runs.create / wait / stream send it. Every field the SDK may
    send is declared; a value Signoff does not implement is a 422 naming the field and why
    (docs/api.md lists them)."""

    assistant_id: str = Field(description="a workflow's name (its graph_id) or its default assistant's uuid5")
    input: dict[str, Any] | None = Field(
        None, description="starts a NEW thread, or gives a completed one new input"
    )
    command: RunCommand | None = Field(
        None, description="answers to the thread's interrupts (resume) and edits"
    )
    metadata: dict[str, Any] | None = Field(None, description="the run's metadata")
    config: RunConfig | None = Field(
        None, description="recursion_limit, tags, metadata, configurable.thread_id"
    )
    context: dict[str, Any] | None = Field(None, description="refused unless empty: no context schema")
    stream_mode: StreamMode | list[StreamMode] | None = Field(
        None, description='what the worker publishes for /stream (default ["values"])'
    )
    stream_subgraphs: bool | None = Field(None, description="refused when true")
    stream_resumable: bool | None = Field(
        None, description="streams can always be rejoined with Last-Event-ID"
    )
    interrupt_before: Literal["*"] | list[str] | None = Field(
        None,
        description="nodes this run also stops before, on top of the workflow's breakpoints; "
        "each pause opens a review",
    )
    interrupt_after: Literal["*"] | list[str] | None = Field(None, description="as interrupt_before, after")
    webhook: str | None = Field(None, description="an http(s) URL that gets a POST when the run ends")
    checkpoint: CheckpointRef | None = Field(None, description="with command.resume: the checkpoint answered")
    checkpoint_id: str | None = Field(None, description="with command.resume: the checkpoint answered")
    checkpoint_during: bool | None = Field(None, description="refused: deprecated, use durability")
    multitask_strategy: Literal["reject", "interrupt", "rollback", "enqueue"] | None = Field(
        None, description='"reject" (default) or "enqueue"; "interrupt" and "rollback" are refused'
    )
    if_not_exists: Literal["create", "reject"] | None = Field(
        None, description='"create" makes the thread when the id is unknown; "reject" (default) is a 404'
    )
    on_disconnect: Literal["cancel", "continue"] | None = Field(
        None, description='"continue" only: a run goes on when its client leaves'
    )
    on_completion: Literal["delete", "keep"] | None = Field(
        None, description='"keep" only: nothing is deleted'
    )
    after_seconds: float | None = Field(None, description="refused unless 0: runs are not scheduled")
    durability: Literal["sync", "async", "exit"] | None = Field(
        None, description='"sync" only: every step is written durably before the next starts'
    )
    strict_resume: bool | None = Field(
        None, description="true only: an answer to no waiting interrupt is refused"
    )
    feedback_keys: list[str] | None = Field(None, description="refused unless empty: no LangSmith feedback")
    langsmith_tracer: dict[str, Any] | None = Field(None, description="refused: no LangSmith tracing")


class Run(Schema):
    """A `Run` (langgraph_sdk.schema.Run)."""

    run_id: str
    thread_id: str
    assistant_id: str
    created_at: datetime
    updated_at: datetime
    status: Literal["pending", "running", "error", "success", "timeout", "interrupted"]
    metadata: dict[str, Any]
    multitask_strategy: str
    kwargs: dict[str, Any]
