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
from typing import Any, Literal

from django.core.exceptions import ImproperlyConfigured
from langgraph.graph import StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import All
from pydantic import PydanticSchemaGenerationError, TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError, to_jsonable_python

from workflows.canonical import load_canonical_json

Builder = Callable[[], StateGraph[Any, Any, Any, Any]]

# What happens when a review's due time passes (Workflow.on_due, or an interrupt's "due").
NOTIFY = "notify"
ESCALATE = "escalate"
DECIDE = "decide"
REMIND = "remind"
DUE_ACTIONS = (NOTIFY, ESCALATE, DECIDE, REMIND)
# The answers a default decision may give (approvals.services checks each against the review's
# kind when the review opens: a breakpoint cannot "respond").
DEFAULT_DECISIONS = ("approve", "reject", "respond", "ignore")


@dataclass(frozen=True)
class DuePolicy:
    """What the deadline sweep does once a review is past due (approvals/deadlines.py).

    notify: tell the group once (review_overdue); escalate: move the review to `to_group`, once;
    decide: answer it as the system actor `timeout` with `decision` (and `response`), once;
    remind: tell the group at the due time and again every `every_hours` while it stays open.
    """

    action: str = NOTIFY
    to_group: str = ""
    decision: str = ""
    response: Any = None
    every_hours: float = 0.0

    def as_json(self) -> dict[str, Any]:
        """The policy as a review stores it (its snapshot), without the unused fields."""
        data: dict[str, Any] = {"action": self.action}
        if self.action == ESCALATE:
            data["to_group"] = self.to_group
        elif self.action == DECIDE:
            data["decision"] = self.decision
            if self.response is not None:
                data["response"] = self.response
        elif self.action == REMIND:
            data["every_hours"] = self.every_hours
        return data


def due_policy(spec: Mapping[str, Any] | DuePolicy | None) -> DuePolicy:
    """A policy from how a workflow or a payload writes it: {"escalate": "managers"},
    {"decide": "approve"}, {"decide": "respond", "response": "..."}, {"remind": 4} (hours),
    {"notify": True} or None (tell the group once). ValueError says what is wrong."""
    if spec is None:
        return DuePolicy()
    if isinstance(spec, DuePolicy):
        spec = {spec.action: _policy_argument(spec)} | (
            {"response": spec.response} if spec.response is not None else {}
        )
    if not isinstance(spec, Mapping):
        raise ValueError(
            f"a due policy is a dict such as {{'escalate': 'managers'}}, not {type(spec).__name__}"
        )
    actions = [action for action in DUE_ACTIONS if action in spec]
    if len(actions) != 1:
        raise ValueError(
            "a due policy names exactly one of " + ", ".join(DUE_ACTIONS) + f" (got {sorted(map(str, spec))})"
        )
    action = actions[0]
    allowed = {action} | ({"response"} if action == DECIDE else set())
    extra = sorted(set(map(str, spec)) - allowed)
    if extra:
        raise ValueError(f"unknown due policy key(s) {', '.join(extra)} for {action!r}")
    value = spec[action]
    if action == ESCALATE:
        if not isinstance(value, str) or not value.strip():
            raise ValueError("'escalate' names the group the review moves to, as a non-empty string")
        return DuePolicy(action=ESCALATE, to_group=value.strip())
    if action == DECIDE:
        if value not in DEFAULT_DECISIONS:
            raise ValueError(f"'decide' is one of {', '.join(DEFAULT_DECISIONS)}, not {value!r}")
        response = spec.get("response")
        if value == "respond" and (not isinstance(response, str) or not response.strip()):
            raise ValueError("'decide': 'respond' needs a 'response' text")
        try:
            json.dumps(response)
        except (TypeError, ValueError):
            raise ValueError("'response' must be JSON data") from None
        return DuePolicy(action=DECIDE, decision=value, response=response)
    if action == REMIND:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 24 * 365:
            raise ValueError(f"'remind' is the hours between reminders, a number above 0, not {value!r}")
        return DuePolicy(action=REMIND, every_hours=float(value))
    if value is not True:
        raise ValueError("'notify' is written {'notify': True}")
    return DuePolicy()


def _policy_argument(policy: DuePolicy) -> Any:
    return {ESCALATE: policy.to_group, DECIDE: policy.decision, REMIND: policy.every_hours}.get(
        policy.action, True
    )


def payload_due(value: Any, workflow: Workflow) -> tuple[float, DuePolicy]:
    """The due hours and policy an interrupt's payload asks for with a "due" key (a dict
    payload: {"due": {"hours": 2, "escalate": "managers"}}; "hours" alone keeps the workflow's
    policy, a policy alone its hours), else the workflow's. ValueError for a bad one."""
    due = value.get("due") if isinstance(value, Mapping) else None
    if due is None:
        return workflow.review_hours, workflow.on_due
    if not isinstance(due, Mapping):
        raise ValueError(f'"due" is a dict such as {{"hours": 2, "escalate": "managers"}}, not {due!r}')
    rest = {key: item for key, item in due.items() if key != "hours"}
    hours = due_hours(due["hours"]) if "hours" in due else workflow.review_hours
    policy = due_policy(rest) if rest else workflow.on_due
    if policy.action == ESCALATE and policy.to_group == workflow.reviewer_group:
        raise ValueError(f"it escalates to {policy.to_group!r}, the workflow's own reviewer group")
    return hours, policy


def due_hours(value: Any) -> float:
    """Hours until a review is due, checked: a positive number of at most ten years."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 24 * 3650:
        raise ValueError(f"due hours are a number above 0 (at most ten years), not {value!r}")
    return float(value)


SUMMARY_KINDS = ("text", "money", "number", "date")


@dataclass(frozen=True)
class SummaryField:
    """A state field shown as a column in the review queue, snapshotted onto each review when
    it opens (approvals.services), so the queue reads it without opening sealed state.

    kind: "text", "money", "number" or "date" (how it is shown, and whether it sorts as a
    number). A field is declared not secret: its value is stored unencrypted for search and
    sort even with SIGNOFF_ENCRYPTION_KEY set, unless `secret` is True; a secret one is still
    shown in the row (from a sealed copy), but with a key set it is neither searched nor sorted.
    """

    name: str
    label: str = ""
    kind: str = "text"
    secret: bool = False

    @property
    def title(self) -> str:
        return self.label or self.name.replace("_", " ").capitalize()

    @property
    def numeric(self) -> bool:
        return self.kind in ("money", "number")


def summary_field(spec: str | SummaryField | Mapping[str, Any]) -> SummaryField:
    """A summary field from how a workflow declares it: a field name, a SummaryField, or a dict
    of its attributes ({"name": "amount", "kind": "money"}). ValueError says what is wrong."""
    if isinstance(spec, str):
        field_ = SummaryField(name=spec)
    elif isinstance(spec, SummaryField):
        field_ = spec
    elif isinstance(spec, Mapping):
        unknown = sorted(set(map(str, spec)) - {"name", "label", "kind", "secret"})
        if unknown:
            raise ValueError(f"unknown summary field key(s) {', '.join(unknown)}")
        field_ = SummaryField(**spec)
    else:
        raise ValueError(f"a summary field is a name or a SummaryField, not {type(spec).__name__}")
    if not isinstance(field_.name, str) or not field_.name:
        raise ValueError(f"a summary field needs a name, not {field_.name!r}")
    if field_.kind not in SUMMARY_KINDS:
        raise ValueError(
            f"summary field {field_.name!r}: kind is one of {', '.join(SUMMARY_KINDS)}, not {field_.kind!r}"
        )
    if not isinstance(field_.label, str) or not isinstance(field_.secret, bool):
        raise ValueError(f"summary field {field_.name!r}: label is a text and secret True or False")
    return field_


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
    # How soon a review of this workflow is due, shown in the queue, and what happens when it
    # passes (approvals/deadlines.py). An interrupt's payload may set its own: see `payload_due`.
    review_hours: float = 24.0
    on_due: DuePolicy = field(default_factory=DuePolicy)
    # State a reviewer's approve / reject sets at a breakpoint (over their own edits of it).
    # Without on_reject, rejecting at a breakpoint cancels the thread.
    on_approve: dict[str, Any] = field(default_factory=dict)
    on_reject: dict[str, Any] | None = None
    field_types: dict[str, Any] = field(default_factory=dict, compare=False)
    # Key fields shown as the queue's columns (SummaryField; register() also takes names).
    # Unless declared secret they are not: the queue searches and sorts their values even
    # with SIGNOFF_ENCRYPTION_KEY set (when everything else a thread carries is encrypted).
    summary_fields: tuple[SummaryField, ...] = ()
    # Four-eyes and quorum: how many distinct reviewers must approve a review before the
    # thread resumes (an int >= 1), or "all": one approval from a member of each of
    # `approval_groups`, a different person for each group. Any reject ends the review at once.
    approvals_required: int | Literal["all"] = 1
    approval_groups: tuple[str, ...] = ()
    # Segregation of duties: the user who started a thread may not approve its reviews (they
    # may still reject them). True lets them.
    starter_may_approve: bool = False

    @property
    def summary_names(self) -> tuple[str, ...]:
        return tuple(field_.name for field_ in self.summary_fields)

    @property
    def open_summary_names(self) -> tuple[str, ...]:
        """The summary fields stored in plaintext even with an encryption key set."""
        return tuple(field_.name for field_ in self.summary_fields if not field_.secret)

    @property
    def sort_field(self) -> SummaryField | None:
        """The summary field the queue's amount sort uses: the first money field, else the
        first number."""
        numeric = [field_ for field_ in self.summary_fields if field_.numeric]
        money = [field_ for field_ in numeric if field_.kind == "money"]
        found = money or numeric
        return found[0] if found else None

    @property
    def approvals_needed(self) -> int:
        """How many approvals close a review: the quorum, or one per approval group."""
        if self.approvals_required == "all":
            return len(self.approval_groups)
        return self.approvals_required

    @property
    def needs_quorum(self) -> bool:
        """Whether an approve may be a partial approval (more than one approval is needed)."""
        return self.approvals_required == "all" or self.approvals_needed > 1

    # Whether an emailed one-click link (approvals.links) may decide without a session: its
    # confirmation page then works for whoever holds the link. Off, the link asks to sign in.
    email_decisions: bool = False

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
    on_due: Mapping[str, Any] | DuePolicy | None = None,
    on_approve: Mapping[str, Any] | None = None,
    on_reject: Mapping[str, Any] | None = None,
    summary_fields: Sequence[str | SummaryField | Mapping[str, Any]] = (),
    approvals_required: int | Literal["all"] = 1,
    approval_groups: Sequence[str] = (),
    starter_may_approve: bool = False,
    email_decisions: bool = False,
) -> Callable[[Builder], Builder]:
    """Register the decorated builder (it returns an uncompiled `StateGraph`) as `name`.

    `summary_fields` name the key state fields the queue shows as columns (names, or
    `SummaryField`s with a label and a kind: text, money, number, date). Unless declared
    secret they are not: their values stay searchable and sortable in the review queue when an
    encryption key is set (see docs/operations.md).

    `on_due` says what happens when a review is `review_hours` old and still open (`due_policy`
    reads it): `{"escalate": "managers"}`, `{"decide": "approve"}`, `{"remind": 4}`; by default
    the group is told once. An error names the workflow and the problem.

    `approvals_required` (an int, or "all" with `approval_groups`) and `starter_may_approve`
    are the four-eyes rules (docs/architecture.md, Four-eyes and quorum).

    `email_decisions` lets an emailed one-click link decide without signing in first."""

    def decorate(builder: Builder) -> Builder:
        try:
            policy = due_policy(on_due)
        except ValueError as exc:
            where = getattr(builder, "__module__", "?")
            raise ImproperlyConfigured(f"workflow {name!r} ({where}): on_due: {exc}") from None
        try:
            summaries = tuple(summary_field(spec) for spec in summary_fields)
        except (TypeError, ValueError) as exc:
            where = getattr(builder, "__module__", "?")
            raise ImproperlyConfigured(f"workflow {name!r} ({where}): summary_fields: {exc}") from None
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
                on_due=policy,
                on_approve=dict(on_approve or {}),
                on_reject=dict(on_reject) if on_reject is not None else None,
                summary_fields=summaries,
                approvals_required=approvals_required,
                approval_groups=tuple(approval_groups),
                starter_may_approve=starter_may_approve,
                email_decisions=email_decisions,
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
    try:
        # A Workflow built by hand may name its summary fields, as register() takes them.
        workflow.__dict__["summary_fields"] = tuple(summary_field(spec) for spec in workflow.summary_fields)
    except (TypeError, ValueError) as exc:
        raise ImproperlyConfigured(f"workflow {workflow.name!r} ({where}): summary_fields: {exc}") from None
    for kind, names in (("editable", workflow.editable), ("summary", workflow.summary_names)):
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
    try:
        due_hours(workflow.review_hours)
    except ValueError as exc:
        raise ImproperlyConfigured(f"workflow {workflow.name!r} ({where}): review_hours: {exc}") from None
    try:
        # A Workflow built by hand may carry its policy as a dict, like register() takes it.
        workflow.__dict__["on_due"] = due_policy(workflow.on_due)
    except ValueError as exc:
        raise ImproperlyConfigured(f"workflow {workflow.name!r} ({where}): on_due: {exc}") from None
    if workflow.on_due.action == ESCALATE and workflow.on_due.to_group == workflow.reviewer_group:
        raise ImproperlyConfigured(
            f"workflow {workflow.name!r} ({where}): on_due escalates to {workflow.reviewer_group!r}, "
            "which is already its reviewer group; name another group"
        )
    _check_quorum(workflow, where)
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


def _check_quorum(workflow: Workflow, where: str) -> None:
    """ImproperlyConfigured for four-eyes settings that cannot be met or mean nothing."""
    prefix = f"workflow {workflow.name!r} ({where})"
    required = workflow.approvals_required
    groups = workflow.approval_groups
    if not isinstance(workflow.starter_may_approve, bool):
        raise ImproperlyConfigured(f"{prefix}: starter_may_approve must be True or False")
    if isinstance(groups, str):
        raise ImproperlyConfigured(
            f"{prefix}: approval_groups must be a sequence of group names, not the string {groups!r}"
        )
    if required == "all":
        if not groups:
            raise ImproperlyConfigured(
                f'{prefix}: approvals_required="all" needs approval_groups, the groups whose members '
                "must each approve"
            )
        bad = [group for group in groups if not isinstance(group, str) or not group.strip()]
        if bad:
            raise ImproperlyConfigured(
                f"{prefix}: approval_groups must be non-empty group names, not {bad!r}"
            )
        doubled = sorted({group for group in groups if groups.count(group) > 1})
        if doubled:
            raise ImproperlyConfigured(f"{prefix}: approval_groups names {', '.join(doubled)} more than once")
        if not workflow.reviewer_group:
            raise ImproperlyConfigured(
                f'{prefix}: approvals_required="all" needs a reviewer_group (who sees the reviews); '
                "approvers must belong to it and to one of the approval_groups"
            )
        return
    if isinstance(required, bool) or not isinstance(required, int):
        raise ImproperlyConfigured(
            f'{prefix}: approvals_required must be a whole number of approvals (1 or more) or "all", '
            f"not {required!r}"
        )
    if required < 1:
        raise ImproperlyConfigured(f"{prefix}: approvals_required must be 1 or more, not {required}")
    if groups:
        raise ImproperlyConfigured(
            f'{prefix}: approval_groups is only for approvals_required="all" (one approval from each '
            f"group); with approvals_required={required} leave it out"
        )


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
