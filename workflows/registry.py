"""The workflows Signoff can run, by name.

A workflow is registered with `@register(...)` on a function that builds an
uncompiled `StateGraph`. Registrations live in `graphs.py` modules of installed
apps and are imported when Django starts (as the admin imports `admin.py`), plus
any module listed in the `SIGNOFF_GRAPH_MODULES` setting.
"""

from __future__ import annotations

import functools
import json
import typing
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from importlib import import_module
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from langgraph.graph import StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import All
from pydantic import PydanticSchemaGenerationError, TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError, to_jsonable_python

from workflows.canonical import load_canonical_json

Builder = Callable[[], StateGraph[Any, Any, Any, Any]]


@dataclass(frozen=True)
class Workflow:
    name: str
    title: str
    builder: Builder
    description: str = ""
    # Members of this group (and superusers) review the workflow's interrupts.
    reviewer_group: str = ""
    # Members of this group (and superusers) may take over or reassign a claimed review.
    lead_group: str = ""
    # State fields a reviewer may change, with their types read from the state schema.
    editable: tuple[str, ...] = ()
    interrupt_before: tuple[str, ...] | All = ()
    interrupt_after: tuple[str, ...] | All = ()
    # How soon a review of this workflow is due, shown in the queue.
    review_hours: float = 24.0
    # State a reviewer's approve / reject sets at a breakpoint (over their own edits of it).
    # Without on_reject, rejecting at a breakpoint cancels the thread.
    on_approve: dict[str, Any] = field(default_factory=dict)
    on_reject: dict[str, Any] | None = None
    field_types: dict[str, Any] = field(default_factory=dict, compare=False)
    # State fields that are not secret: the queue searches their values even with
    # SIGNOFF_ENCRYPTION_KEY set (when everything else a thread carries is encrypted).
    summary_fields: tuple[str, ...] = ()

    @cached_property
    def graph(self) -> StateGraph[Any, Any, Any, Any]:
        return self.builder()

    def compile(self, checkpointer: Any) -> CompiledStateGraph[Any, Any, Any, Any]:
        return self.graph.compile(
            checkpointer=checkpointer,
            interrupt_before=_nodes(self.interrupt_before),
            interrupt_after=_nodes(self.interrupt_after),
            name=self.name,
        )

    def validate_updates(self, updates: Mapping[str, Any]) -> dict[str, Any]:
        """Reviewer edits checked and converted to the schema's types, read as JSON would
        carry them: "lots" is not a float, "yes" is not a bool, "12" is not an int, while
        "99.50" is a Decimal, "high" the member of an Enum and a dict a nested model.
        Raises InvalidUpdate naming each bad field."""
        unknown = sorted(set(updates) - set(self.editable))
        if unknown:
            raise InvalidUpdate(dict.fromkeys(unknown, "this field cannot be edited"))
        return _convert_all(self.field_types, updates)

    def dump_updates(self, updates: Mapping[str, Any]) -> dict[str, Any]:
        """Edits as JSON data (`load_updates` gives back the same values): how a Decision, a
        Run's command and the audit trail store them. Values are validated on the way."""
        return _dump_all(self.field_types, self.validate_updates(updates))

    def load_updates(self, stored: Mapping[str, Any]) -> dict[str, Any]:
        """Edits stored by `dump_updates` (and `canonical_json`), as the schema's types."""
        return _load_all(self.field_types, stored)

    @cached_property
    def input_types(self) -> dict[str, Any]:
        """Field name -> type of the graph's input schema (its state schema unless it has its own)."""
        graph = self.graph
        return schema_fields(getattr(graph, "input_schema", None) or graph.state_schema)

    def validate_input(self, input: Mapping[str, Any]) -> dict[str, Any]:
        """A start input checked against the input schema like edits are (only the fields it
        gives: a graph may set the others itself); InvalidUpdate names each bad field."""
        unknown = sorted(set(input) - set(self.input_types))
        if unknown:
            raise InvalidUpdate(dict.fromkeys(unknown, "the state schema has no such field"))
        return _convert_all(self.input_types, input)

    def dump_input(self, input: Mapping[str, Any]) -> dict[str, Any]:
        """A start input as JSON data that `load_input` turns back into the same values."""
        return _dump_all(self.input_types, self.validate_input(input))

    def load_input(self, stored: Mapping[str, Any] | None) -> dict[str, Any] | None:
        return None if stored is None else _load_all(self.input_types, stored)


def _nodes(nodes: tuple[str, ...] | All) -> list[str] | All | None:
    if nodes == "*":
        return "*"
    return list(nodes) or None


class InvalidUpdate(ValueError):
    """Edits that do not fit the workflow's state schema; `errors` maps field to message."""

    def __init__(self, errors: dict[str, str]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{name}: {message}" for name, message in errors.items()))


@functools.lru_cache(maxsize=256)
def _adapter_or_none(hint: Any) -> TypeAdapter[Any] | None:
    # A state field may have a type Pydantic cannot describe (an arbitrary class): such a
    # field is passed through as given, as before.
    try:
        return TypeAdapter(hint)
    except PydanticSchemaGenerationError:
        return None


def _convert(hint: Any, value: Any) -> Any:
    """`value` as the type `hint`, read the way JSON would carry it (Pydantic's strict JSON
    mode): a typed value is written as JSON first, so a Decimal or an Enum member passes as
    itself, and JSON's text for a date, a UUID or a Decimal becomes one."""
    adapter = _adapter_or_none(hint)
    if adapter is None:
        return value
    try:
        text = json.dumps(to_jsonable_python(value))
    except (PydanticSerializationError, ValueError, TypeError) as exc:
        raise _NotJSON(str(exc)) from None
    return adapter.validate_json(text, strict=True)


class _NotJSON(ValueError):
    pass


def _convert_all(types: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    converted: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name, value in values.items():
        try:
            converted[name] = _convert(types[name], value)
        except ValidationError as exc:
            errors[name] = "; ".join(error["msg"] for error in exc.errors())
        except _NotJSON as exc:
            errors[name] = f"this value cannot be stored: {exc}"
    if errors:
        raise InvalidUpdate(errors)
    return converted


def _dump(hint: Any, value: Any) -> Any:
    adapter = _adapter_or_none(hint)
    return value if adapter is None else adapter.dump_python(value, mode="json")


def _dump_all(types: Mapping[str, Any], typed: Mapping[str, Any]) -> dict[str, Any]:
    return {name: _dump(types[name], value) for name, value in typed.items()}


def _load_all(types: Mapping[str, Any], stored: Mapping[str, Any]) -> dict[str, Any]:
    """Values stored by `_dump_all` and `canonical_json`, as `types`. A field `types` no longer
    has (the workflow changed since) travels as it was stored."""
    loaded = load_canonical_json(dict(stored))
    known = {name: value for name, value in loaded.items() if name in types}
    return {**loaded, **_convert_all(types, known)}


_registry: dict[str, Workflow] = {}


def schema_fields(schema: Any) -> dict[str, Any]:
    """Field name -> annotation of a TypedDict, dataclass or Pydantic state schema,
    with LangGraph's reducers (`Annotated[list, add]`) stripped to the plain type."""
    model_fields = getattr(schema, "model_fields", None)
    if isinstance(model_fields, dict):
        hints = {name: info.annotation for name, info in model_fields.items()}
    else:
        hints = typing.get_type_hints(schema, include_extras=True)
    return {name: _strip(hint) for name, hint in hints.items()}


def _strip(hint: Any) -> Any:
    while typing.get_origin(hint) in (typing.Annotated, typing.Required, typing.NotRequired):
        hint = typing.get_args(hint)[0]
    return hint


def default_assistant_id(name: str) -> str:
    """The id LangGraph's server gives a graph's default assistant (uuid5 of its name in the
    URL namespace): the HTTP API accepts it for the workflow, and threads carry it in their
    metadata, where Agent Inbox looks for it."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, name))


def graph_metadata(name: str) -> dict[str, str]:
    """What a thread of the workflow carries in its metadata, as LangGraph's server stamps it
    on a thread's first run: Agent Inbox searches threads by `graph_id` (or `assistant_id`)."""
    return {"graph_id": name, "assistant_id": default_assistant_id(name)}


def register(
    name: str,
    *,
    title: str,
    description: str = "",
    reviewer_group: str = "",
    lead_group: str = "",
    editable: Sequence[str] = (),
    interrupt_before: Sequence[str] | All = (),
    interrupt_after: Sequence[str] | All = (),
    review_hours: float = 24.0,
    on_approve: Mapping[str, Any] | None = None,
    on_reject: Mapping[str, Any] | None = None,
    summary_fields: Sequence[str] = (),
) -> Callable[[Builder], Builder]:
    """Register the decorated builder (it returns an uncompiled `StateGraph`) as `name`.

    `summary_fields` name the state fields that are not secret: their values stay searchable
    in the review queue when an encryption key is set (see docs/operations.md)."""

    def decorate(builder: Builder) -> Builder:
        add(
            Workflow(
                name=name,
                title=title,
                builder=builder,
                description=description,
                reviewer_group=reviewer_group,
                lead_group=lead_group,
                editable=tuple(editable),
                interrupt_before=interrupt_before if interrupt_before == "*" else tuple(interrupt_before),
                interrupt_after=interrupt_after if interrupt_after == "*" else tuple(interrupt_after),
                review_hours=review_hours,
                on_approve=dict(on_approve or {}),
                on_reject=dict(on_reject) if on_reject is not None else None,
                summary_fields=tuple(summary_fields),
            )
        )
        return builder

    return decorate


def add(workflow: Workflow) -> Workflow:
    """Check a workflow and add it to the registry; errors name the workflow and the problem."""
    where = getattr(workflow.builder, "__module__", "?")
    if workflow.name in _registry:
        first = getattr(_registry[workflow.name].builder, "__module__", "?")
        raise ImproperlyConfigured(
            f"workflow {workflow.name!r} is registered twice: in {first} and in {where}"
        )
    graph = workflow.builder()
    if not isinstance(graph, StateGraph):
        raise ImproperlyConfigured(
            f"workflow {workflow.name!r} ({where}): the builder must return an uncompiled StateGraph, "
            f"not {type(graph).__name__}"
        )
    fields = schema_fields(graph.state_schema)
    for kind, names in (("editable", workflow.editable), ("summary", workflow.summary_fields)):
        missing = [name for name in names if name not in fields]
        if missing:
            raise ImproperlyConfigured(
                f"workflow {workflow.name!r} ({where}): {kind} field(s) {', '.join(missing)} are not in "
                f"the state schema {graph.state_schema.__name__} (fields: {', '.join(fields) or 'none'})"
            )
    for kind, nodes in (
        ("interrupt_before", workflow.interrupt_before),
        ("interrupt_after", workflow.interrupt_after),
    ):
        unknown = [] if nodes == "*" else [node for node in nodes if node not in graph.nodes]
        if unknown:
            raise ImproperlyConfigured(
                f"workflow {workflow.name!r} ({where}): {kind} names unknown node(s) {', '.join(unknown)}"
            )
    workflow.field_types.update({name: fields[name] for name in workflow.editable})
    for kind, implied in (("on_approve", workflow.on_approve), ("on_reject", workflow.on_reject or {})):
        try:
            # Kept as the schema's types, so what approving sets reaches the graph as they are.
            implied.update(workflow.validate_updates(implied))
        except InvalidUpdate as exc:
            raise ImproperlyConfigured(
                f"workflow {workflow.name!r} ({where}): {kind} does not fit: {exc}"
            ) from None
    workflow.__dict__["graph"] = graph
    _registry[workflow.name] = workflow
    return workflow


def remove(name: str) -> None:
    _registry.pop(name, None)


def get(name: str) -> Workflow:
    try:
        return _registry[name]
    except KeyError:
        known = ", ".join(sorted(_registry)) or "none"
        raise LookupError(f"no workflow named {name!r} (registered: {known})") from None


def all_workflows() -> Iterator[Workflow]:
    return iter(sorted(_registry.values(), key=lambda workflow: workflow.name))


def autodiscover(extra_modules: Sequence[str] = ()) -> None:
    from django.utils.module_loading import autodiscover_modules

    autodiscover_modules("graphs")
    for module in extra_modules:
        import_module(module)
