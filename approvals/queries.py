"""Reads for the reviewer pages: what a user may see, the queue, a thread's history.

Every query here is scoped by `reviewable_workflows`, so a review or thread of a
workflow the user does not review is simply not found (404), never "forbidden".
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.contrib.auth.models import AnonymousUser, User
from django.core.paginator import Page, Paginator
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from approvals.models import Review
from workflows import engine, registry
from workflows.models import AuditEvent, Run, Thread

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


def _scoped(queryset: QuerySet[Any], user: User | AnonymousUser, path: str) -> QuerySet[Any]:
    names = reviewable_workflows(user)
    return queryset if names is None else queryset.filter(**{f"{path}__in": names})


def visible_threads(user: User | AnonymousUser) -> QuerySet[Thread]:
    return _scoped(Thread.objects.all(), user, "workflow")


def visible_reviews(user: User | AnonymousUser) -> QuerySet[Review]:
    return _scoped(Review.objects.select_related("thread", "claimed_by"), user, "workflow")


@dataclass(frozen=True)
class QueueFilters:
    workflow: str = ""
    scope: str = "all"
    q: str = ""
    sort: str = "waiting"
    page: int = 1
    per_page: int = 25

    @classmethod
    def from_query(cls, params: Any) -> QueueFilters:
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
            workflow=params.get("workflow", "")[:100],
            scope=scope if scope in SCOPES else "all",
            q=params.get("q", "").strip()[:200],
            sort=sort if sort in SORTS else "waiting",
            page=page,
            per_page=per_page if per_page in PAGE_SIZES else 25,
        )

    def query(self, **changes: Any) -> str:
        """The query string of these filters with some changed (links keep the others)."""
        from urllib.parse import urlencode

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


@dataclass
class Queue:
    page: Page[Review]
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
    live_claim = Q(claimed_by__isnull=False, claim_expires_at__gt=now)
    counts = reviews.aggregate(
        all=Count("id"),
        mine=Count("id", filter=live_claim & Q(claimed_by=user)),
        unclaimed=Count("id", filter=~live_claim),
    )
    if filters.scope == "mine":
        reviews = reviews.filter(live_claim, claimed_by=user)
    elif filters.scope == "unclaimed":
        reviews = reviews.exclude(live_claim)
    ordered = reviews.order_by(*SORTS[filters.sort])
    paginator = Paginator(ordered, filters.per_page)
    # The count is already known: spare the paginator its own COUNT query.
    paginator.count = counts[filters.scope]
    page = paginator.get_page(filters.page)
    names = reviewable_workflows(user)
    workflows = [spec for spec in registry.all_workflows() if names is None or spec.name in names]
    return Queue(page=page, counts=counts, workflows=workflows, filters=filters, now=now)


# -- a thread's history ----------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    field: str
    before: Any
    after: Any
    kind: str  # added / removed / changed


@dataclass
class HistoryEntry:
    checkpoint_id: str
    step: int | None
    source: str
    node: str
    created_at: datetime | None
    actor: str
    changes: list[Change]


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
    for event in AuditEvent.objects.filter(
        thread=thread, action__in=["thread.resumed", "thread.rolled_back"]
    ).only("actor_label", "data"):
        for key in ("checkpoint_id", "fork"):
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
                node=writes
                if source == "loop"
                else {"input": "input", "update": "edit", "fork": "rollback"}.get(source, source),
                created_at=datetime.fromisoformat(snapshot.created_at) if snapshot.created_at else None,
                actor=people.get(checkpoint_id, "worker" if source in ("loop", "input") else "system"),
                changes=diff(parent if isinstance(parent, dict) else {}, _as_dict(snapshot.values)),
            )
        )
    return entries


def _writers(nodes: Iterable[str]) -> str:
    return ", ".join(nodes)


def _as_dict(values: Any) -> dict[str, Any]:
    return values if isinstance(values, dict) else {}


def thread_runs(thread: Thread) -> QuerySet[Run]:
    return thread.runs.select_related("created_by").order_by("-id")
