"""The API's bodies, typed: what a client may send (refused with a 422 naming any field
Signoff does not implement) and what it gets, in langgraph_sdk's shapes (`langgraph_sdk.schema`)."""

from __future__ import annotations

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
