"""Reads for the reviewer pages: what a user may see, the queue, a thread's history.

Every query here is scoped by `reviewable_workflows`, so a review or thread of a
workflow the user does not review is simply not found (404), never "forbidden".
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any, Literal, TypedDict
from urllib.parse import urlencode

from django.contrib.auth.models import AnonymousUser, User
from django.core.paginator import Page, Paginator
from django.db.models import (
    BooleanField,
    Count,
    ExpressionWrapper,
    IntegerField,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Subquery,
)
from django.db.models.functions import Coalesce
from django.http import QueryDict
from django.utils import timezone
from django_stubs_ext import WithAnnotations
from langgraph.types import StateSnapshot

from approvals.models import Approval, Decision, Link, Review
from workflows import engine, registry
from workflows import services as engine_services
from workflows.audit import Action as AuditAction
from workflows.models import ACTIVE_RUN_STATUSES, AuditEvent, Run, Thread

SCOPES = ("all", "mine", "unclaimed")
SORTS = {
    "waiting": ("created_at", "id"),
    "newest": ("-created_at", "-id"),
    "due": ("due_at", "id"),
    "workflow": ("workflow", "created_at", "id"),
    "title": ("thread__title", "id"),
}
PAGE_SIZES = (10, 25, 50, 100)


def reviewable_workflows(user: User | AnonymousUser) -> list[str] | None:
    """Names of the workflows the user reviews; None means every workflow (superusers)."""
    if not user.is_authenticated or not user.is_active:
        return []
    if user.is_superuser:
        return None
    # Kept on the user object: one request asks several times, and groups do not change mid-request.
    cached: list[str] | None = getattr(user, "_signoff_workflows", None)
    if cached is None:
        groups = set(user.groups.values_list("name", flat=True))
        cached = [spec.name for spec in registry.all_workflows() if spec.reviewer_group in groups]
        user._signoff_workflows = cached  # type: ignore[attr-defined]
    return cached


def _group_names(user: User | AnonymousUser) -> list[str]:
    if not user.is_authenticated or not user.is_active:
        return []
    cached: list[str] | None = getattr(user, "_signoff_groups", None)
    if cached is None:
        cached = list(user.groups.values_list("name", flat=True))
        user._signoff_groups = cached  # type: ignore[attr-defined]
    return cached


def review_scope(user: User | AnonymousUser) -> Q | None:
    """The reviews the user may see and act on, as a filter (None: every review, superusers).

    A review belongs to its workflow's reviewers until it is escalated, then to the group it
    was escalated to (`Review.responsible_group`; `approvals.services.may_review` is the same
    rule for one review)."""
    names = reviewable_workflows(user)
    if names is None:
        return None
    return Q(escalated_at__isnull=True, workflow__in=names) | Q(
        escalated_at__isnull=False, reviewer_group__in=_group_names(user)
    )


def thread_scope(user: User | AnonymousUser) -> Q | None:
    """The threads the user may see (None: all): those of the workflows they review, and those
    with a review escalated to one of their groups (they decide it, and follow the thread)."""
    names = reviewable_workflows(user)
    if names is None:
        return None
    groups = _group_names(user)
    scope = Q(workflow__in=names)
    if groups:
        escalated = Review.objects.filter(escalated_at__isnull=False, reviewer_group__in=groups)
        scope |= Q(pk__in=escalated.values("thread_id"))
    return scope


def visible_threads(user: User | AnonymousUser) -> QuerySet[Thread]:
    scope = thread_scope(user)
    threads = Thread.objects.all()
    return threads if scope is None else threads.filter(scope)


def visible_reviews(user: User | AnonymousUser) -> QuerySet[Review]:
    scope = review_scope(user)
    reviews = Review.objects.select_related("thread", "claimed_by")
    return reviews if scope is None else reviews.filter(scope)


@dataclass(frozen=True)
class QueueFilters:
    workflow: str = ""
    scope: str = "all"
    q: str = ""
    sort: str = "waiting"
    page: int = 1
    per_page: int = 25
    # Why a filter was ignored, shown above the results.
    errors: tuple[str, ...] = field(default=(), compare=False)

    @classmethod
    def from_query(cls, params: QueryDict) -> QueueFilters:
        errors: list[str] = []
        scope = params.get("scope", "all")
        sort = params.get("sort", "waiting")
        try:
            page = max(1, int(params.get("page", 1)))
        except ValueError:
            page = 1
        try:
            per_page = int(params.get("per_page", 25))
        except ValueError:
            per_page = 25
        return cls(
            workflow=_without_nul("Workflow", params.get("workflow", "")[:100], errors),
            scope=scope if scope in SCOPES else "all",
            q=_without_nul("Search", params.get("q", "").strip()[:200], errors),
            sort=sort if sort in SORTS else "waiting",
            page=page,
            per_page=per_page if per_page in PAGE_SIZES else 25,
            errors=tuple(errors),
        )

    def query(self, **changes: Any) -> str:
        """The query string of these filters with some changed (links keep the others)."""
        values = {
            "workflow": self.workflow,
            "scope": self.scope,
            "q": self.q,
            "sort": self.sort,
            "per_page": self.per_page,
            "page": self.page,
        }
        values.update(changes)
        defaults = {"scope": "all", "sort": "waiting", "per_page": 25, "page": 1}
        kept = {
            key: value
            for key, value in values.items()
            if value not in ("", None) and defaults.get(key) != value
        }
        return "?" + urlencode(kept) if kept else "?"


def _without_nul(label: str, text: str, errors: list[str]) -> str:
    """The text, or "" with an error when it holds a NUL character: PostgreSQL refuses NUL in
    text, so a filter on it would fail the page instead of finding nothing."""
    if "\x00" in text:
        errors.append(f"{label}: contains a NUL character (\\u0000), which no text can hold; it was ignored.")
        return ""
    return text


class ClaimFlag(TypedDict):
    # The queue's reviews carry it: whether the claim is live at Queue.now (Review.live_claim).
    claim_live: bool
    # How many approvals count towards its quorum (0 for a workflow that needs one).
    approvals_given: int


@dataclass
class Queue:
    page: Page[WithAnnotations[Review, ClaimFlag]]
    counts: dict[str, int]
    workflows: list[registry.Workflow]
    filters: QueueFilters
    now: datetime = field(default_factory=timezone.now)

    @property
    def scopes(self) -> list[tuple[str, str, str, int, bool]]:
        """(scope, label, query string, count, current) for the scope tabs."""
        labels = {"all": "All", "mine": "Mine", "unclaimed": "Unclaimed"}
        return [
            (
                scope,
                labels[scope],
                self.filters.query(scope=scope, page=1),
                self.counts[scope],
                scope == self.filters.scope,
            )
            for scope in SCOPES
        ]

    @property
    def refresh_query(self) -> str:
        return self.filters.query(page=self.page.number)

    @property
    def previous_query(self) -> str:
        return self.filters.query(page=self.page.previous_page_number()) if self.page.has_previous() else ""

    @property
    def next_query(self) -> str:
        return self.filters.query(page=self.page.next_page_number()) if self.page.has_next() else ""


def _open_reviews(user: User | AnonymousUser, filters: QueueFilters) -> QuerySet[Review]:
    reviews = visible_reviews(user).filter(status=Review.Status.OPEN)
    if filters.workflow:
        reviews = reviews.filter(workflow=filters.workflow)
    if filters.q:
        # Title, node, the thread's input and the interrupt's payload: what a reviewer sees first.
        reviews = reviews.filter(search_text__contains=filters.q.lower())
    return reviews


def queue(user: User, filters: QueueFilters) -> Queue:
    now = timezone.now()
    reviews = _open_reviews(user, filters)
    live_claim = Review.live_claim(now)
    counts = reviews.aggregate(
        all=Count("id"),
        mine=Count("id", filter=live_claim & Q(claimed_by=user)),
        unclaimed=Count("id", filter=~live_claim),
    )
    if filters.scope == "mine":
        reviews = reviews.filter(live_claim, claimed_by=user)
    elif filters.scope == "unclaimed":
        reviews = reviews.exclude(live_claim)
    # Each row says whether its claim is live by the same rule as the counts (the template
    # shows the holder only then).
    flagged = reviews.annotate(
        claim_live=ExpressionWrapper(live_claim, output_field=BooleanField()),
        # The approvals that count so far, for "1 of 2" (four-eyes workflows).
        approvals_given=Coalesce(Subquery(_approvals_given(), output_field=IntegerField()), 0),
    )
    ordered = flagged.order_by(*SORTS[filters.sort])
    paginator = Paginator(ordered, filters.per_page)
    # The count is already known: spare the paginator its own COUNT query.
    paginator.count = counts[filters.scope]
    page = paginator.get_page(filters.page)
    names = reviewable_workflows(user)
    workflows = [spec for spec in registry.all_workflows() if names is None or spec.name in names]
    return Queue(page=page, counts=counts, workflows=workflows, filters=filters, now=now)


def _approvals_given() -> QuerySet[Any, Any]:
    return (
        Approval.objects.filter(review=OuterRef("pk"), superseded_at__isnull=True)
        .order_by()
        .values("review")
        .annotate(given=Count("id"))
        .values("given")
    )


# -- a review's approvals (four-eyes and quorum) ---------------------------------------------


@dataclass(frozen=True)
class ApprovalRow:
    """One approval as the review page shows it: who, when, the edits it approved as a diff
    against the checkpoint, and whether it still counts."""

    approval: Approval
    changes: list[Change]
    counts: bool


def approval_rows(review: Review, spec: registry.Workflow, values: dict[str, Any]) -> list[ApprovalRow]:
    """Every approval of the review, oldest first, superseded ones too (marked)."""
    rows = []
    for approval in Approval.objects.filter(review=review).select_related("actor").order_by("id"):
        after = dict(approval.updates.get("after", {}))
        before = {name: _as_stored(spec, name, values) for name in after if name in values}
        rows.append(ApprovalRow(approval, diff(before, after), approval.superseded_at is None))
    return rows


def _as_stored(spec: registry.Workflow, name: str, values: dict[str, Any]) -> Any:
    try:
        return spec.dump_updates({name: values[name]})[name]
    except registry.InvalidUpdate:
        return values[name]


# -- a thread's history ----------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    field: str
    before: Any
    after: Any
    kind: Literal["added", "removed", "changed"]


@dataclass
class HistoryEntry:
    checkpoint_id: str
    step: int | None
    source: str
    node: str
    created_at: datetime | None
    actor: str
    changes: list[Change]
    # The checkpoint's whole state and metadata, for pages that show more than the changes.
    values: dict[str, Any] = field(default_factory=dict, repr=False)
    metadata: dict[str, Any] = field(default_factory=dict, repr=False)


# What a checkpoint that no node wrote stands for.
SOURCE_NAMES = {"input": "input", "update": "edit", "fork": "rollback"}


def diff(before: dict[str, Any], after: dict[str, Any]) -> list[Change]:
    """Field-level changes between two states, in the order of the later one."""
    changes = []
    for key in [*after, *[key for key in before if key not in after]]:
        if key not in before:
            changes.append(Change(key, None, after[key], "added"))
        elif key not in after:
            changes.append(Change(key, before[key], None, "removed"))
        elif _dumps(before[key]) != _dumps(after[key]):
            changes.append(Change(key, before[key], after[key], "changed"))
    return changes


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def history(thread: Thread, *, limit: int = 200) -> list[HistoryEntry]:
    """The thread's checkpoints, newest first, with what each changed and who caused it."""
    graph = engine.graph_for(thread.workflow)
    snapshots = list(graph.get_state_history(engine.config_for(thread.thread_id), limit=limit + 1))
    # Checkpoints made by people (edits at a review, rollbacks) are named in the audit trail.
    people: dict[str, str] = {}
    # Edits given with answers at a dynamic interrupt land in the step after the checkpoint
    # the answer was given at (keyed by that checkpoint), mixed with what the node wrote.
    answered_with_edits: dict[str, str] = {}
    for event in AuditEvent.objects.filter(
        thread=thread, action__in=[AuditAction.THREAD_RESUMED, AuditAction.THREAD_ROLLED_BACK]
    ).only("action", "actor_label", "data"):
        if event.action == AuditAction.THREAD_RESUMED and event.data.get("resume"):
            if event.data.get("updates"):
                # Several answers applied at once credit each reviewer who edited.
                editors = event.data.get("edited_by") or [event.actor_label]
                answered_with_edits[str(event.data["checkpoint_id"])] = ", ".join(editors)
            continue
        for key in ("checkpoint_id", "copy", "fork"):
            if event.data.get(key):
                people[str(event.data[key])] = event.actor_label
    entries = []
    for index, snapshot in enumerate(snapshots[:limit]):
        parent = snapshots[index + 1].values if index + 1 < len(snapshots) else {}
        metadata = snapshot.metadata or {}
        checkpoint_id = engine.checkpoint_id_of(snapshot)
        source = str(metadata.get("source", ""))
        writes = _writers(snapshots[index + 1].next if index + 1 < len(snapshots) else ())
        entries.append(
            HistoryEntry(
                checkpoint_id=checkpoint_id,
                step=metadata.get("step"),
                source=source,
                node=writes if source == "loop" else SOURCE_NAMES.get(source, source),
                created_at=datetime.fromisoformat(snapshot.created_at) if snapshot.created_at else None,
                actor=_author(snapshot, source, checkpoint_id, people, answered_with_edits),
                changes=diff(parent if isinstance(parent, dict) else {}, _as_dict(snapshot.values)),
                values=_as_dict(snapshot.values),
                metadata=dict(metadata),
            )
        )
    return entries


def _author(
    snapshot: StateSnapshot, source: str, checkpoint_id: str, people: dict[str, str], edits: dict[str, str]
) -> str:
    if source not in ("loop", "input"):
        return people.get(checkpoint_id, "system")
    parent = (snapshot.parent_config or {}).get("configurable", {}).get("checkpoint_id")
    return f"worker, with edits by {edits[parent]}" if parent in edits else "worker"


def _writers(nodes: Iterable[str]) -> str:
    return ", ".join(nodes)


def _as_dict(values: Any) -> dict[str, Any]:
    return values if isinstance(values, dict) else {}


def thread_runs(thread: Thread) -> QuerySet[Run]:
    return thread.runs.select_related("created_by").order_by("-id")


# -- thread admin ------------------------------------------------------------------------------
# Reads for the Thread admin (approvals/admin.py). Staff pages: not scoped by reviewer group.


@dataclass(frozen=True)
class TimelineEntry:
    """One checkpoint on the thread admin's page, newest first."""

    entry: HistoryEntry
    # The run whose worker wrote the checkpoint; None for edits and rollbacks made by people,
    # and for checkpoints written before runs were recorded in the metadata.
    run: Run | None
    is_head: bool
    # What rolling back here would change: from the head's state to this checkpoint's.
    from_head: list[Change]
    # Whether it may be rolled back to (workflows.services.rollback_refusal), for the page's link.
    can_roll_back: bool


def timeline(thread: Thread, *, limit: int = 200) -> list[TimelineEntry]:
    entries = history(thread, limit=limit)
    if not entries:
        return []
    head_values = entries[0].values
    run_ids = {engine.run_id_in(entry.metadata) for entry in entries} - {None}
    # Scoped to the thread, so metadata naming another thread's run shows no run at all.
    runs: dict[int | None, Run] = dict(thread.runs.in_bulk(list(run_ids))) if run_ids else {}
    return [
        TimelineEntry(
            entry=entry,
            run=runs.get(engine.run_id_in(entry.metadata)),
            is_head=index == 0,
            from_head=diff(head_values, entry.values) if index else [],
            can_roll_back=engine_services.rollback_refusal(
                checkpoint_id=entry.checkpoint_id, metadata=entry.metadata, head_id=entries[0].checkpoint_id
            )
            is None,
        )
        for index, entry in enumerate(entries)
    ]


@dataclass(frozen=True)
class RollbackPreview:
    """What rolling a thread back to one of its checkpoints would do."""

    checkpoint_id: str
    step: int | None
    created_at: datetime | None
    values: dict[str, Any]
    # From the head's state to the target's.
    changes: list[Change]
    # The nodes that run again: the target's next step.
    rerun: tuple[str, ...]
    # Withdrawn by the rollback (the service cancels them).
    open_reviews: list[Review]
    # A rollback is refused while this exists.
    active_run: Run | None


def rollback_preview(thread: Thread, checkpoint_id: str) -> RollbackPreview | None:
    """None when the checkpoint is not in the thread's history, or cannot be rolled back to
    (`workflows.services.rollback_refusal`). Reads only: the rollback itself is
    `workflows.services.rollback_thread`, which checks everything again."""
    graph = engine.graph_for(thread.workflow)
    target = graph.get_state(engine.config_for(thread.thread_id, checkpoint_id=checkpoint_id))
    if engine.checkpoint_id_of(target) != checkpoint_id or target.created_at is None:
        return None
    head = engine.head(thread.workflow, thread.thread_id)
    if engine_services.rollback_refusal(
        checkpoint_id=checkpoint_id, metadata=target.metadata, head_id=engine.checkpoint_id_of(head)
    ):
        return None
    values = _as_dict(target.values)
    return RollbackPreview(
        checkpoint_id=checkpoint_id,
        step=(target.metadata or {}).get("step"),
        created_at=datetime.fromisoformat(target.created_at),
        values=values,
        changes=diff(_as_dict(head.values), values),
        rerun=tuple(target.next),
        open_reviews=list(
            thread.reviews.filter(status=Review.Status.OPEN).select_related("claimed_by").order_by("id")
        ),
        active_run=thread.runs.filter(status__in=ACTIVE_RUN_STATUSES).order_by("id").first(),
    )


# -- the audit trail -------------------------------------------------------------------------
# Staff who hold `workflows.view_auditevent` read every event, whatever their reviewer groups:
# an auditor must see the whole trail, so nothing here is scoped by `reviewable_workflows`.

AUDIT_PAGE_SIZES = (25, 50, 100, 200)
# Dates outside this span cannot be turned into datetimes in every time zone.
_EARLIEST, _LATEST = date(1900, 1, 1), date(9998, 12, 31)
# Export column -> the field it is read from, in the exports' order.
EXPORT_FIELDS = {
    "id": "id",
    "created_at": "created_at",
    "actor": "actor_label",
    "action": "action",
    "thread": "thread__public_id",
    "workflow": "thread__workflow",
    "run": "run_id",
    "data": "data",
    "prev_hash": "prev_hash",
    "hash": "hash",
}
EXPORT_COLUMNS = tuple(EXPORT_FIELDS)


@dataclass(frozen=True)
class AuditFilters:
    actor: str = ""
    action: str = ""
    workflow: str = ""
    thread: uuid.UUID | None = None
    date_from: date | None = None
    date_to: date | None = None
    before: int | None = None
    after: int | None = None
    per_page: int = 50
    # What the user typed, shown again in the form, and why any of it was ignored.
    entered: dict[str, str] = field(default_factory=dict, compare=False)
    errors: tuple[str, ...] = ()

    @classmethod
    def from_query(cls, params: QueryDict) -> AuditFilters:
        """Parse GET parameters; a bad value is dropped with a message, never raised."""
        entered = {
            key: str(params.get(key, "")).strip()[:200]
            for key in ("actor", "action", "workflow", "thread", "from", "to")
        }
        errors: list[str] = []
        for key, label in (
            ("actor", "Actor"),
            ("action", "Action"),
            ("workflow", "Workflow"),
            ("thread", "Thread"),
        ):
            entered[key] = _without_nul(label, entered[key], errors)
        action = entered["action"]
        if action and action not in AuditAction.values:
            errors.append(f"Action: “{action}” is not an action the audit trail records; it was ignored.")
            action = ""
        workflow = entered["workflow"]
        if workflow and workflow not in {spec.name for spec in registry.all_workflows()}:
            errors.append(f"Workflow: “{workflow}” is not a registered workflow; it was ignored.")
            workflow = ""
        thread = None
        if entered["thread"]:
            try:
                thread = uuid.UUID(entered["thread"])
            except ValueError:
                errors.append(f"Thread: “{entered['thread']}” is not a thread id (a UUID); it was ignored.")
        date_from = _parse_date(entered["from"], "From", errors)
        date_to = _parse_date(entered["to"], "To", errors)
        if date_from and date_to and date_to < date_from:
            errors.append(f"Dates: “to” ({date_to}) is before “from” ({date_from}); the dates were ignored.")
            date_from = date_to = None
        before = _parse_id(params.get("before", ""), "before", errors)
        after = _parse_id(params.get("after", ""), "after", errors) if before is None else None
        try:
            per_page = int(params.get("per_page", 50))
        except ValueError:
            per_page = 50
        return cls(
            actor=entered["actor"][:150],
            action=action,
            workflow=workflow,
            thread=thread,
            date_from=date_from,
            date_to=date_to,
            before=before,
            after=after,
            per_page=per_page if per_page in AUDIT_PAGE_SIZES else 50,
            entered=entered,
            errors=tuple(errors),
        )

    def query(self, **changes: Any) -> str:
        """The query string of the filters in effect, with some changed (links keep the others)."""
        values: dict[str, Any] = {
            "actor": self.actor,
            "action": self.action,
            "workflow": self.workflow,
            "thread": self.thread or "",
            "from": self.date_from or "",
            "to": self.date_to or "",
            "per_page": self.per_page if self.per_page != 50 else "",
            "before": self.before,
            "after": self.after,
        }
        values.update(changes)
        kept = {key: value for key, value in values.items() if value not in ("", None)}
        return "?" + urlencode(kept) if kept else "?"

    def export_query(self) -> str:
        # An export is every matching event: no page, no cursor.
        return self.query(before=None, after=None, per_page="")


def _parse_date(text: str, label: str, errors: list[str]) -> date | None:
    if not text:
        return None
    try:
        value = date.fromisoformat(text)
    except ValueError:
        errors.append(f"{label}: “{text}” is not a date (YYYY-MM-DD); it was ignored.")
        return None
    if not _EARLIEST <= value <= _LATEST:
        errors.append(f"{label}: {value} is outside {_EARLIEST} to {_LATEST}; it was ignored.")
        return None
    return value


def _parse_id(text: str, label: str, errors: list[str]) -> int | None:
    if not text:
        return None
    # isdecimal, not isdigit: "²" is a digit that int() refuses.
    if not text.isdecimal() or len(text) > 18:
        errors.append(f"Page: “{text[:40]}” is not an event id ({label}); showing the newest events.")
        return None
    return int(text)


def _day_start(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


def audit_events(filters: AuditFilters) -> QuerySet[AuditEvent]:
    """The events the filters select, in no order (callers order by id: the chain's order)."""
    events = AuditEvent.objects.all()
    if filters.actor:
        events = events.filter(actor_label=filters.actor)
    if filters.action:
        events = events.filter(action=filters.action)
    if filters.workflow:
        events = events.filter(thread__workflow=filters.workflow)
    if filters.thread:
        events = events.filter(thread__public_id=filters.thread)
    # Dates are days in the site's time zone, both ends included.
    if filters.date_from:
        events = events.filter(created_at__gte=_day_start(filters.date_from))
    if filters.date_to:
        events = events.filter(created_at__lt=_day_start(filters.date_to + timedelta(days=1)))
    return events


@dataclass(frozen=True)
class DiffBlock:
    """One {"before": …, "after": …} pair of an event's data, as field-level changes."""

    label: str
    changes: list[Change]


@dataclass
class AuditRow:
    event: AuditEvent
    diffs: list[DiffBlock]
    fields: list[tuple[str, Any]]


def _is_pair(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"before", "after"}


def _holds_pair(value: Any) -> bool:
    return isinstance(value, dict) and any(_is_pair(item) or _holds_pair(item) for item in value.values())


def explain(data: Any, prefix: str = "") -> tuple[list[DiffBlock], list[tuple[str, Any]]]:
    """Split an event's data into diffs (every before/after pair, however deep) and plain fields."""
    if not isinstance(data, dict):
        return [], [(prefix.rstrip(".") or "data", data)]
    diffs: list[DiffBlock] = []
    fields: list[tuple[str, Any]] = []
    for key, value in data.items():
        path = f"{prefix}{key}"
        if _is_pair(value):
            before, after = value["before"], value["after"]
            if isinstance(before, dict) and isinstance(after, dict):
                changes = diff(before, after)
            elif _dumps(before) != _dumps(after):
                changes = [Change(path, before, after, "changed")]
            else:
                changes = []
            if changes:
                diffs.append(DiffBlock(path, changes))
        elif _holds_pair(value):
            inner_diffs, inner_fields = explain(value, f"{path}.")
            diffs.extend(inner_diffs)
            fields.extend(inner_fields)
        else:
            fields.append((path, value))
    return diffs, fields


def _row(event: AuditEvent) -> AuditRow:
    diffs, fields = explain(event.data)
    return AuditRow(event=event, diffs=diffs, fields=fields)


@dataclass
class AuditPage:
    rows: list[AuditRow]
    filters: AuditFilters
    older_query: str
    newer_query: str

    @property
    def actions(self) -> list[str]:
        return AuditAction.values

    @property
    def workflows(self) -> list[registry.Workflow]:
        return list(registry.all_workflows())

    @property
    def page_sizes(self) -> tuple[int, ...]:
        return AUDIT_PAGE_SIZES

    @property
    def first_query(self) -> str:
        return self.filters.query(before=None, after=None)


def audit_page(filters: AuditFilters, *, oldest_first: bool = False) -> AuditPage:
    """One page of events by keyset on id (`before` / `after`), never counting the table:
    one query whatever the page size; the thread comes with each event by a join."""
    events = audit_events(filters).select_related("thread")
    size = filters.per_page
    if filters.before is not None:
        rows, downward = list(events.filter(id__lt=filters.before).order_by("-id")[: size + 1]), True
    elif filters.after is not None:
        rows, downward = list(events.filter(id__gt=filters.after).order_by("id")[: size + 1]), False
    else:
        rows, downward = list(events.order_by("id" if oldest_first else "-id")[: size + 1]), not oldest_first
    more = len(rows) > size
    rows = sorted(rows[:size], key=lambda event: event.pk, reverse=not oldest_first)
    # One more row than shown says whether the walk can go on; the way back exists because a
    # cursor brought us here.
    has_older = more if downward else filters.after is not None
    has_newer = filters.before is not None if downward else more
    ids = [event.pk for event in rows]
    return AuditPage(
        rows=[_row(event) for event in rows],
        filters=filters,
        older_query=filters.query(before=min(ids), after=None) if rows and has_older else "",
        newer_query=filters.query(after=max(ids), before=None) if rows and has_newer else "",
    )


def audit_export(filters: AuditFilters, *, chunk_size: int = 2000) -> Iterator[tuple[Any, ...]]:
    """Every matching event as a tuple of EXPORT_COLUMNS, oldest first (the chain's order),
    read in chunks: no model instances and never the whole result in memory."""
    return (
        audit_events(filters)
        .order_by("id")
        .values_list(*EXPORT_FIELDS.values())
        .iterator(chunk_size=chunk_size)
    )


# -- one-click links (approvals.links) -------------------------------------------------------


def link(pk: int) -> Link | None:
    """An issued link with what following it reads: its review, thread, recipient and, once
    used, the decision and who made it."""
    return Link.objects.select_related("review__thread", "recipient", "decision__actor").filter(pk=pk).first()


def review_cancellation(review: Review) -> AuditEvent | None:
    """The event that withdrew a review: who, when and why. Its data may be sealed (a text
    column), so the thread's few cancellation events are read and matched here."""
    events = AuditEvent.objects.filter(thread_id=review.thread_id, action=AuditAction.REVIEW_CANCELLED)
    for event in events.order_by("-id")[:200]:
        if isinstance(event.data, dict) and event.data.get("review") == review.pk:
            return event
    return None


# -- the review page: a decision's preview and the thread's decisions (issue 13, item 3) ------


@dataclass(frozen=True)
class PreviewChange:
    """One field a decision would change: by the reviewer's edit, or by the action itself
    (`set_by` names it: approve at an expense breakpoint sets approved)."""

    field: str
    before: Any
    after: Any
    kind: Literal["added", "removed", "changed"]
    set_by: str = ""
    # The reviewer edited this field too, and the action's value wins.
    overrides_edit: bool = False


def decision_changes(
    values: dict[str, Any], edits: dict[str, Any], implied: dict[str, Any], action: str
) -> list[PreviewChange]:
    """Every field deciding would change, as services.decide applies it: the edits, then what
    the action sets over them."""
    return [
        PreviewChange(
            change.field,
            change.before,
            change.after,
            change.kind,
            set_by=action if change.field in implied else "",
            overrides_edit=change.field in implied and change.field in edits,
        )
        for change in diff(values, {**values, **edits, **implied})
    ]


@dataclass(frozen=True)
class ReviewOutcome:
    """One review of a thread for its page's Decisions section: the decision if there is one
    (by a reviewer, or by the system: "timeout"), and the approvals given towards it."""

    review: Review
    decision: Decision | None
    approvals: list[Approval]

    @property
    def edited(self) -> list[str]:
        """The fields the decision changed."""
        if self.decision is None:
            return []
        return sorted((self.decision.updates or {}).get("after", {}))


def thread_decisions(thread: Thread) -> list[ReviewOutcome]:
    """Every review of the thread, oldest first, with its decision and approvals: two queries
    whatever the number of reviews (the decision and its actor joined, the approvals and
    their actors prefetched together)."""
    reviews = (
        Review.objects.filter(thread=thread)
        .select_related("decision", "decision__actor")
        .prefetch_related(
            Prefetch("approvals", queryset=Approval.objects.select_related("actor").order_by("id"))
        )
        .order_by("created_at", "id")
    )
    outcomes = []
    for review in reviews:
        decision = getattr(review, "decision", None) if review.status == Review.Status.DECIDED else None
        outcomes.append(ReviewOutcome(review, decision, list(review.approvals.all())))
    return outcomes
