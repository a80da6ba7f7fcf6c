"""Assistants: each registered workflow is one, named by its workflow name.

`assistant_id` and `graph_id` are the workflow's name; the UUID LangGraph's server gives a
graph's default assistant (uuid5 of the name in the URL namespace) is accepted too. A key sees
the workflows its user reviews (`approvals.queries.reviewable_workflows`), every one for a
superuser; any other is a 404, as on the reviewer pages.
"""

from __future__ import annotations

import warnings
from datetime import UTC, datetime
from typing import Any, get_args

from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse
from ninja import Router
from ninja.errors import HttpError
from pydantic import PydanticSchemaGenerationError, TypeAdapter

from api.params import refuse_unknown_query
from api.schemas import (
    Assistant,
    AssistantField,
    AssistantFields,
    AssistantSearch,
    DrawnGraph,
    Error,
    GraphSchemas,
)
from approvals.http import request_user
from approvals.queries import reviewable_workflows
from workflows import registry

router = Router(tags=["assistants"])

# Registered workflows are not rows: they exist from the moment this process loaded them.
LOADED_AT = datetime.now(UTC)
ERRORS: dict[int, type[Error]] = {401: Error, 404: Error, 422: Error, 503: Error}


def visible(user: User) -> list[registry.Workflow]:
    names = reviewable_workflows(user)
    return [spec for spec in registry.all_workflows() if names is None or spec.name in names]


def find(user: User, assistant_id: str) -> registry.Workflow:
    for spec in visible(user):
        if assistant_id == spec.name or assistant_id.lower() == registry.default_assistant_id(spec.name):
            return spec
    raise HttpError(404, f"Assistant '{assistant_id}' not found")


def describe(spec: registry.Workflow) -> Assistant:
    return Assistant(
        assistant_id=spec.name,
        graph_id=spec.name,
        name=spec.name,
        description=spec.description or None,
        config={},
        context={},
        metadata={"created_by": "system", "title": spec.title},
        version=1,
        created_at=LOADED_AT,
        updated_at=LOADED_AT,
    )


@router.post("/search", response={200: list[AssistantFields], **ERRORS}, exclude_unset=True)
def search(request: HttpRequest, response: HttpResponse, payload: AssistantSearch) -> list[dict[str, Any]]:
    """The assistants the key's user may see, filtered, sorted and paged as asked."""
    refuse_unknown_query(request)
    found = [describe(spec) for spec in visible(request_user(request))]
    if payload.graph_id is not None:
        found = [item for item in found if item.graph_id == payload.graph_id]
    if payload.name:
        found = [item for item in found if payload.name.lower() in item.name.lower()]
    if payload.metadata:
        wanted = payload.metadata
        found = [
            item for item in found if all(item.metadata.get(k, object()) == v for k, v in wanted.items())
        ]
    sort_by = payload.sort_by or "created_at"
    # Ties (every workflow was loaded at the same moment) go by name, so pages are stable.
    found.sort(key=lambda item: (getattr(item, sort_by), item.name), reverse=payload.sort_order == "desc")
    page = found[payload.offset : payload.offset + payload.limit]
    if payload.offset + payload.limit < len(found):
        response["X-Pagination-Next"] = str(payload.offset + payload.limit)
    fields = payload.select or list(get_args(AssistantField))
    # Dicts, not models: the fields not selected stay unset, and exclude_unset leaves them out.
    return [{name: getattr(item, name) for name in fields} for item in page]


@router.get("/{assistant_id}", response={200: Assistant, **ERRORS})
def get(request: HttpRequest, assistant_id: str) -> Assistant:
    refuse_unknown_query(request)
    return describe(find(request_user(request), assistant_id))


@router.get("/{assistant_id}/graph", response={200: DrawnGraph, **ERRORS})
def graph(request: HttpRequest, assistant_id: str, xray: bool | int = False) -> dict[str, Any]:
    """The graph's nodes and edges as LangGraph draws them (`xray` opens subgraphs: true, or how
    many levels deep)."""
    refuse_unknown_query(request, "xray")
    spec = find(request_user(request), assistant_id)
    drawn: dict[str, Any] = _compiled(spec).get_graph(xray=xray).to_json()
    return drawn


@router.get("/{assistant_id}/schemas", response={200: GraphSchemas, **ERRORS})
def schemas(request: HttpRequest, assistant_id: str) -> GraphSchemas:
    """JSON schemas of the graph's input, output, state and context. Signoff takes no per-run
    configuration, so config_schema is null."""
    refuse_unknown_query(request)
    spec = find(request_user(request), assistant_id)
    compiled = _compiled(spec)
    return GraphSchemas(
        graph_id=spec.name,
        input_schema=compiled.get_input_jsonschema(),
        output_schema=compiled.get_output_jsonschema(),
        state_schema=_json_schema(spec.graph.state_schema),
        config_schema=None,
        context_schema=compiled.get_context_jsonschema(),
    )


def _compiled(spec: registry.Workflow) -> Any:
    # Without a checkpointer: only drawn and described here, never run.
    return spec.compile(checkpointer=None)


def _json_schema(schema: Any) -> dict[str, Any] | None:
    """The state schema's JSON schema; None (as LangGraph's server says it) for a type Pydantic
    cannot describe."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result: dict[str, Any] = TypeAdapter(schema).json_schema()
            return result
    except (PydanticSchemaGenerationError, TypeError, ValueError):
        return None
