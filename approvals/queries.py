"""Reads for the reviewer pages: what a user may see, the queue, a thread's history.

Every query here is scoped by `reviewable_workflows`, so a review or thread of a
workflow the user does not review is simply not found (404), never "forbidden".
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Literal, TypedDict
from urllib.parse import urlencode

from django.contrib.auth.models import AnonymousUser, User
from django.core import signing
from django.db.models import (
    BooleanField,
    Count,
    ExpressionWrapper,
    F,
    IntegerField,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Subquery,
)
from django.db.models.expressions import OrderBy
from django.db.models.functions import Coalesce
from django.http import QueryDict
from django.utils import timezone
from django.utils.safestring import SafeString, mark_safe
from django_stubs_ext import WithAnnotations
from langgraph.types import StateSnapshot

from approvals.models import Approval, Decision, Link, Review, SavedFilter
from workflows import engine, registry
from workflows import services as engine_services
from workflows.audit import Action as AuditAction
from workflows.models import ACTIVE_RUN_STATUSES, AuditEvent, Run, Thread

SCOPES = ("all", "mine", "unclaimed")
# The queue's orders, each a tuple of (field, descending), ending with the id so that every
# row has one place: the keyset cursor (`after` / `before`) holds the last row's values of
# these. Nullable keys (due_at, summary_amount) sort their nulls last either way.
SORTS: dict[str, tuple[tuple[str, bool], ...]] = {
    "waiting": (("created_at", False), ("id", False)),
    "newest": (("created_at", True), ("id", True)),
    "age": (("created_at", False), ("id", False)),
    "-age": (("created_at", True), ("id", True)),
    "due": (("due_at", False), ("id", False)),
    "-due": (("due_at", True), ("id", True)),
    "amount": (("summary_amount", False), ("id", False)),
    "-amount": (("summary_amount", True), ("id", True)),
    "workflow": (("workflow", False), ("created_at", False), ("id", False)),
    "title": (("thread__title", False), ("id", False)),
}
# What the sort menu offers ("age" and "-age" are the same orders as waiting and newest).
SORT_LABELS = {
    "waiting": "Waiting longest",
    "newest": "Newest",
    "due": "Due soonest",
    "-due": "Due latest",
    "-amount": "Amount, highest first",
    "amount": "Amount, lowest first",
    "workflow": "Workflow",
    "title": "Title",
}
NULLABLE_KEYS = frozenset({"due_at", "summary_amount"})
CURSOR_SALT = "approvals.queue.cursor"
PAGE_SIZES = (10, 25, 50, 100)


def page_size(params: QueryDict, sizes: tuple[int, ...], default: int) -> int:
    """`?per_page=`, if it is one of the page's `sizes`; else `default` (never an error: a page
    size is a preference, not a filter)."""
    value = params.get("per_page", "")
    return int(value) if value.isdecimal() and int(value) in sizes else default


def reviewable_workflows(user: User | AnonymousUser) -> list[str] | None:
    """Names of the workflows the user reviews; None means every workflow (superusers)."""
    if not user.is_authenticated or not user.is_active:
        return []
    if user.is_superuser:
        return None
    # Kept on the user object: one request asks several times, and groups do not change mid-request.
    cached: list[str] | None = getattr(user, "_signoff_workflows", None)
    if cached is None:
        groups = set(_group_names(user))
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


def led_workflows(user: User | AnonymousUser) -> list[str]:
    """Names of the workflows whose lead group the user is in (`Workflow.lead_group`): they
    may read those reviews and threads and move their claims, not decide them."""
    groups = set(_group_names(user))
    return [spec.name for spec in registry.all_workflows() if spec.lead_group and spec.lead_group in groups]


def thread_scope(user: User | AnonymousUser) -> Q | None:
    """The threads the user may see (None: all): those of the workflows they review or lead,
    and those with a review escalated to one of their groups (they decide it, and follow the
    thread)."""
    names = reviewable_workflows(user)
    if names is None:
        return None
    groups = _group_names(user)
    scope = Q(workflow__in=[*names, *led_workflows(user)])
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


def readable_reviews(user: User | AnonymousUser) -> QuerySet[Review]:
    """The reviews the user may open: those they review (`visible_reviews`) and those of the
    workflows they lead, which they may reassign (the queue lists only the first)."""
    scope = review_scope(user)
    reviews = Review.objects.select_related("thread", "claimed_by")
    if scope is None:
        return reviews
    if led := led_workflows(user):
        scope |= Q(workflow__in=led)
    return reviews.filter(scope)


class BadCursor(ValueError):
    """A queue cursor (`after` / `before`) that is not one the queue wrote for this order:
    altered, cut, or from another sort."""


@dataclass(frozen=True)
class Cursor:
    """Where a keyset page starts: the sort key's values of the row it follows (`after`) or
    precedes (`before`). In a URL it is signed (`token`), so it is opaque and cannot be forged
    into a filter the queue did not write."""

    sort: str
    values: tuple[Any, ...]
    before: bool = False

    @property
    def token(self) -> str:
        return signing.dumps([self.sort, [_key_text(value) for value in self.values]], salt=CURSOR_SALT)

    @classmethod
    def parse(cls, token: str, *, sort: str, before: bool) -> Cursor:
        try:
            data = signing.loads(token, salt=CURSOR_SALT)
        except signing.BadSignature:
            raise BadCursor("the page link is damaged or altered: start again from the first page") from None
        if not isinstance(data, list) or len(data) != 2 or not isinstance(data[1], list):
            raise BadCursor("the page link is not one the queue wrote")
        written_for, texts = data
        if written_for != sort:
            raise BadCursor(f"the page link was written for another order ({written_for}), not {sort}")
        keys = SORTS[sort]
        if len(texts) != len(keys):
            raise BadCursor("the page link is not one the queue wrote")
        try:
            values = tuple(_key_value(name, text) for (name, _), text in zip(keys, texts, strict=True))
        except (TypeError, ValueError, ArithmeticError):
            raise BadCursor("the page link is not one the queue wrote") from None
        return cls(sort=sort, values=values, before=before)

    @classmethod
    def of(cls, review: Review, sort: str, *, before: bool = False) -> Cursor:
        return cls(sort=sort, values=tuple(_key_of(review, name) for name, _ in SORTS[sort]), before=before)


def _key_of(review: Review, name: str) -> Any:
    value: Any = review
    for part in name.split("__"):
        value = getattr(value, part)
    return value


def _key_text(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def _key_value(name: str, text: Any) -> Any:
    if text is None:
        if name not in NULLABLE_KEYS:
            raise ValueError(f"{name} is never empty")
        return None
    if name == "id":
        if isinstance(text, bool) or not isinstance(text, int):
            raise TypeError("an id is a number")
        return text
    if not isinstance(text, str):
        raise TypeError(f"{name} is written as text")
    if name in ("created_at", "due_at"):
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            raise ValueError("a cursor's time has its zone")
        return moment
    if name == "summary_amount":
        return Decimal(text)
    return text


def _beyond(name: str, descending: bool, value: Any) -> Q:
    """Rows whose `name` comes after `value` in this direction (nulls come last)."""
    if value is None:
        return Q(pk__in=[])
    after = Q(**{f"{name}__{'lt' if descending else 'gt'}": value})
    return after | Q(**{f"{name}__isnull": True}) if name in NULLABLE_KEYS else after


def _before(name: str, descending: bool, value: Any) -> Q:
    """Rows whose `name` comes before `value` in this direction (nulls come last)."""
    if value is None:
        return Q(**{f"{name}__isnull": False})
    return Q(**{f"{name}__{'gt' if descending else 'lt'}": value})


def _same(name: str, value: Any) -> Q:
    return Q(**{f"{name}__isnull": True}) if value is None else Q(**{name: value})


def keyset(cursor: Cursor) -> Q:
    """The rows past the cursor in its order (before it, for `before`), as one filter:
    (k1 past v1) or (k1 = v1 and k2 past v2) or ..."""
    condition = Q(pk__in=[])
    equal = Q()
    for (name, descending), value in zip(SORTS[cursor.sort], cursor.values, strict=True):
        past = _before(name, descending, value) if cursor.before else _beyond(name, descending, value)
        condition |= equal & past
        equal &= _same(name, value)
    return condition


def segments(cursor: Cursor) -> list[Q]:
    """`keyset(cursor)` as filters an index can range over, in the order they are read: the
    first key's bound (k1 >= v1) narrows the index scan, where the OR of `keyset` alone would
    have it read and drop every row before the cursor (page 200 of 7,500 reviews dropped 5,000).
    A nullable first key's empty values come last, so they are their own, later segment."""
    (name, descending), *_ = SORTS[cursor.sort]
    value = cursor.values[0]
    exact = keyset(cursor)
    upward = descending == cursor.before  # reading the first key in ascending order
    if name not in NULLABLE_KEYS:
        return [exact & Q(**{f"{name}__{'gte' if upward else 'lte'}": value})]
    empty = Q(**{f"{name}__isnull": True})
    if value is None:
        # Past an empty value only empty ones follow; before it, every value comes.
        after_empty = exact & empty
        return [after_empty] if not cursor.before else [after_empty, Q(**{f"{name}__isnull": False})]
    bounded = exact & Q(**{f"{name}__{'gte' if upward else 'lte'}": value})
    return [bounded, empty] if not cursor.before else [bounded]


def ordering(sort: str, *, reverse: bool = False) -> list[OrderBy]:
    """The ORDER BY of a sort, or of its reverse (a `before` page is read backwards)."""
    terms = []
    for name, descending in SORTS[sort]:
        down = descending != reverse
        expression = F(name)
        if name in NULLABLE_KEYS:
            # Nulls last in the order the page shows, so first when it is read backwards.
            nulls = {"nulls_first": True} if reverse else {"nulls_last": True}
            terms.append(expression.desc(**nulls) if down else expression.asc(**nulls))
        else:
            terms.append(expression.desc() if down else expression.asc())
    return terms


@dataclass(frozen=True)
class QueueFilters:
    workflow: str = ""
    scope: str = "all"
    q: str = ""
    sort: str = "waiting"
    per_page: int = 25
    # The keyset cursor the page starts from (None: the first page).
    cursor: Cursor | None = None
    # Why a filter was ignored, shown above the results.
    errors: tuple[str, ...] = field(default=(), compare=False)

    @classmethod
    def from_query(cls, params: QueryDict) -> QueueFilters:
        """The filters in a query string; a bad filter is ignored with an error, a bad cursor
        (after / before) raises BadCursor: the page it names cannot be found."""
        errors: list[str] = []
        scope = params.get("scope", "all")
        sort = params.get("sort", "waiting")
        sort = sort if sort in SORTS else "waiting"
        per_page = page_size(params, PAGE_SIZES, 25)
        after, before = params.get("after", ""), params.get("before", "")
        if after and before:
            raise BadCursor("a page link has either after or before, not both")
        cursor = Cursor.parse(after or before, sort=sort, before=bool(before)) if after or before else None
        return cls(
            workflow=_without_nul("Workflow", params.get("workflow", "")[:100], errors),
            scope=scope if scope in SCOPES else "all",
            q=_without_nul("Search", params.get("q", "").strip()[:200], errors),
            sort=sort,
            per_page=per_page,
            cursor=cursor,
            errors=tuple(errors),
        )

    def query(self, **changes: Any) -> str:
        """The query string of these filters with some changed (links keep the others); a
        cursor only when given (after= or before= its token)."""
        values = {
            "workflow": self.workflow,
            "scope": self.scope,
            "q": self.q,
            "sort": self.sort,
            "per_page": self.per_page,
        }
        values.update(changes)
        defaults = {"scope": "all", "sort": "waiting", "per_page": 25}
        kept = {
            key: value
            for key, value in values.items()
            if value not in ("", None) and defaults.get(key) != value
        }
        return "?" + urlencode(kept) if kept else "?"

    @classmethod
    def clean_query(cls, query: str) -> str:
        """A query string as the queue writes it for these filters: without a page (cursor),
        with only the filters it knows and their values made sound."""
        params = QueryDict(query.removeprefix("?"), mutable=True)
        for name in ("after", "before"):
            params.pop(name, None)
        return cls.from_query(params).query()

    @property
    def here(self) -> str:
        """This page's query string, cursor included (the results' poll keeps the page)."""
        if self.cursor is None:
            return self.query()
        return self.query(**{"before" if self.cursor.before else "after": self.cursor.token})


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
class KeysetPage:
    """One page of the queue, read by key from a cursor (no OFFSET, so page 200 costs what
    page 1 does): its rows, and the cursors of the pages before and after it."""

    object_list: list[WithAnnotations[Review, ClaimFlag]]
    previous: Cursor | None
    next: Cursor | None

    def __iter__(self) -> Iterator[WithAnnotations[Review, ClaimFlag]]:
        return iter(self.object_list)

    def __len__(self) -> int:
        return len(self.object_list)

    def has_other_pages(self) -> bool:
        return self.previous is not None or self.next is not None


@dataclass(frozen=True)
class Column:
    """A summary field shown as a column; `sortable` when the amount sort orders by it."""

    field: registry.SummaryField
    sortable: bool = False


@dataclass
class Queue:
    page: KeysetPage
    counts: dict[str, int]
    workflows: list[registry.Workflow]
    filters: QueueFilters
    now: datetime = field(default_factory=timezone.now)
    # The summary fields shown as columns: the workflow's when one is filtered, else none
    # (each row then shows its own workflow's in one "Key fields" cell).
    columns: list[Column] = field(default_factory=list)
    saved_filters: list[SavedFilter] = field(default_factory=list)

    @property
    def scopes(self) -> list[tuple[str, str, str, int, bool]]:
        """(scope, label, query string, count, current) for the scope tabs."""
        labels = {"all": "All", "mine": "Mine", "unclaimed": "Unclaimed"}
        return [
            (
                scope,
                labels[scope],
                self.filters.query(scope=scope),
                self.counts[scope],
                scope == self.filters.scope,
            )
            for scope in SCOPES
        ]

    @property
    def sorts(self) -> list[tuple[str, str]]:
        return list(SORT_LABELS.items())

    @property
    def refresh_query(self) -> str:
        return self.filters.here

    @property
    def previous_query(self) -> str:
        cursor = self.page.previous
        return self.filters.query(before=cursor.token) if cursor is not None else ""

    @property
    def next_query(self) -> str:
        cursor = self.page.next
        return self.filters.query(after=cursor.token) if cursor is not None else ""

    @property
    def first_query(self) -> str:
        """The first page's link, from any later page."""
        return self.filters.query() if self.filters.cursor is not None else ""

    def _toggle(self, first: str, second: str) -> str:
        return self.filters.query(sort=second if self.filters.sort == first else first)

    # The sortable headers' links: each click turns the column's order round.
    @property
    def amount_sort_query(self) -> str:
        return self._toggle("-amount", "amount")

    @property
    def age_sort_query(self) -> str:
        return self._toggle("waiting", "newest")

    @property
    def due_sort_query(self) -> str:
        return self._toggle("due", "-due")

    @property
    def shows_amount(self) -> bool:
        """Whether any workflow listed has a sort field (the amount column and sorts)."""
        return any(spec.sort_field is not None for spec in self.workflows)

    @property
    def total(self) -> int:
        """How many reviews the filters find, over every page."""
        return self.counts[self.filters.scope]

    @property
    def column_count(self) -> int:
        # select, thread, workflow, step, the key fields (one cell without columns), waiting, claim, due
        return 7 + max(1, len(self.columns))

    @property
    def save_query(self) -> str:
        """What a saved filter keeps: the filters without the page."""
        return self.filters.query()


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
    names = reviewable_workflows(user)
    workflows = [spec for spec in registry.all_workflows() if names is None or spec.name in names]
    return Queue(
        page=keyset_page(flagged, filters),
        counts=counts,
        workflows=workflows,
        filters=filters,
        now=now,
        columns=_columns(filters),
        saved_filters=saved_filters(user),
    )


def keyset_page(reviews: QuerySet[Any], filters: QueueFilters) -> KeysetPage:
    """The page of `reviews` the filters' cursor names, in the filters' order: per_page + 1
    rows (the extra one says whether another page follows), in one query, or two where the
    page runs from the reviews with an amount (or due time) into those without."""
    cursor, size = filters.cursor, filters.per_page
    backwards = cursor is not None and cursor.before
    order = ordering(filters.sort, reverse=backwards)
    rows: list[Any] = []
    for part in segments(cursor) if cursor is not None else [Q()]:
        rows += reviews.filter(part).order_by(*order)[: size + 1 - len(rows)]
        if len(rows) > size:
            break
    more = len(rows) > size
    rows = rows[:size]
    if backwards:
        rows.reverse()
    if not rows:
        return KeysetPage(object_list=[], previous=None, next=None)
    # Coming back (before) there is a page after this one; going on (after), one before it.
    has_previous = more if backwards else cursor is not None
    has_next = True if backwards else more
    return KeysetPage(
        object_list=rows,
        previous=Cursor.of(rows[0], filters.sort, before=True) if has_previous else None,
        next=Cursor.of(rows[-1], filters.sort) if has_next else None,
    )


def _columns(filters: QueueFilters) -> list[Column]:
    if not filters.workflow:
        return []
    try:
        spec = registry.get(filters.workflow)
    except LookupError:
        return []
    sort_field = spec.sort_field
    return [
        Column(field=item, sortable=sort_field is not None and item.name == sort_field.name)
        for item in spec.summary_fields
    ]


def saved_filters(user: User) -> list[SavedFilter]:
    return list(SavedFilter.objects.filter(user=user).order_by("name", "id"))


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
# A thread's checkpoints form a tree, not a line. A rollback copies an earlier checkpoint (the
# copy is a child of the target's parent: LangGraph's "__copy__") and a state update made
# from an earlier checkpoint forks there; either leaves the old head behind on a branch of
# its own. The history reads the newest checkpoints once, links each to its parent, and gives
# every branch a lane: lane 0 is the live branch, the head's ancestors.


@dataclass(frozen=True)
class Change:
    field: str
    before: Any
    after: Any
    kind: Literal["added", "removed", "changed"]


@dataclass(frozen=True)
class Branching:
    """What started a branch and left the old head behind, as its audit event recorded it: a
    rollback (`rollback_thread`) or a state update made from an earlier checkpoint (a fork)."""

    kind: Literal["rollback", "fork"]
    actor: str
    at: datetime
    reason: str
    # Where the head went back to, and that checkpoint's step when it is among those read.
    to_checkpoint_id: str
    to_step: int | None
    # The rollback's run; None for a state update, which queues none.
    run_id: int | None


# A decision's action as the history says it.
OUTCOMES = {
    "approve": "approved",
    "reject": "rejected",
    "edit": "edited",
    "respond": "responded",
    "ignore": "ignored",
}


@dataclass(frozen=True)
class ReviewNote:
    """A review raised at a checkpoint, with its decision and its partial approvals."""

    review: Review
    decision: Decision | None
    # Oldest first, those that no longer count too (`Approval.counts`).
    approvals: list[Approval]

    @property
    def outcome(self) -> str:
        if self.decision is not None:
            return OUTCOMES.get(self.decision.action, self.decision.action)
        return "withdrawn" if self.review.status == Review.Status.CANCELLED else "waiting"


@dataclass
class HistoryEntry:
    checkpoint_id: str
    step: int | None
    source: str
    node: str
    created_at: datetime | None
    actor: str
    # From the checkpoint's parent to it; empty when the parent is older than those read
    # (`changes_known` False).
    changes: list[Change]
    # The checkpoint's whole state and metadata, for pages that show more than the changes.
    values: dict[str, Any] = field(default_factory=dict, repr=False)
    metadata: dict[str, Any] = field(default_factory=dict, repr=False)
    parent_id: str | None = None
    changes_known: bool = True
    # The tree: the lane the checkpoint is drawn in, and whether it is on the live branch.
    lane: int = 0
    live: bool = True
    # Off the live branch: what left its branch behind (None when no audit event says).
    abandoned_by: Branching | None = None
    # The newest checkpoint of an abandoned branch: the head that the rollback left.
    branch_tip: bool = False
    # Written by a rollback or a fork (the copy of the checkpoint gone back to, or the
    # corrections on it): which one. A branch starts there.
    made_by: Branching | None = None
    # What each lane draws on this row, as the CSS classes of its segments (see `_draw`).
    rails: list[list[str]] = field(default_factory=list, repr=False)
    reviews: list[ReviewNote] = field(default_factory=list)

    @property
    def rails_html(self) -> SafeString:
        """The rails as markup, built here rather than in a template loop: a long history's
        rows times lanes times segments made the loop a third of the page's rendering. Every
        class name is one of `_draw`'s constants, none comes from the thread."""
        return mark_safe(  # noqa: S308 - only _draw's constant class names
            "".join(
                '<span class="rail">' + "".join(f'<i class="{segment}"></i>' for segment in cell) + "</span>"
                for cell in self.rails
            )
        )


@dataclass(frozen=True)
class History:
    """A thread's newest checkpoints as a tree, newest first."""

    rows: list[HistoryEntry]
    # Older checkpoints exist than those in `rows`.
    more: bool
    lanes: int
    # How many branches were left behind (rows off the live branch belong to one of them).
    abandoned: int


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
    return history_tree(thread, limit=limit).rows


def history_tree(thread: Thread, *, limit: int = 200) -> History:
    """The thread's newest `limit` checkpoints as a tree: each with its changes, who caused
    it, its lane, whether it is on the live branch (and if not, which rollback left it), and
    the reviews raised at it with their decisions and approvals. A fixed number of queries
    whatever the number of checkpoints: the checkpoints, the audit events that name people,
    the reviews with their decisions, and their approvals."""
    graph = engine.graph_for(thread.workflow)
    # One more than shown, so the oldest row shown has its parent to diff against.
    snapshots = list(graph.get_state_history(engine.config_for(thread.thread_id), limit=limit + 1))
    values = {engine.checkpoint_id_of(snapshot): _as_dict(snapshot.values) for snapshot in snapshots}
    steps = {
        engine.checkpoint_id_of(snapshot): (snapshot.metadata or {}).get("step") for snapshot in snapshots
    }
    nodes = {engine.checkpoint_id_of(snapshot): snapshot.next for snapshot in snapshots}
    credits = _credits(thread, steps)
    entries = []
    for snapshot in snapshots[:limit]:
        metadata = snapshot.metadata or {}
        checkpoint_id = engine.checkpoint_id_of(snapshot)
        parent_id = (snapshot.parent_config or {}).get("configurable", {}).get("checkpoint_id") or None
        source = str(metadata.get("source", ""))
        known = parent_id is None or parent_id in values
        entries.append(
            HistoryEntry(
                checkpoint_id=checkpoint_id,
                step=metadata.get("step"),
                source=source,
                # A step's checkpoint is written by the nodes its parent was about to run.
                node=_writers(nodes.get(parent_id or "", ()))
                if source == "loop"
                else SOURCE_NAMES.get(source, source),
                created_at=datetime.fromisoformat(snapshot.created_at) if snapshot.created_at else None,
                actor=_author(snapshot, source, checkpoint_id, credits.people, credits.edits),
                changes=diff(values.get(parent_id or "", {}), values[checkpoint_id]) if known else [],
                values=values[checkpoint_id],
                metadata=dict(metadata),
                parent_id=parent_id,
                changes_known=known,
                made_by=credits.made.get(checkpoint_id),
            )
        )
    lanes, abandoned = _draw(entries, credits.left)
    notes = _review_notes(thread, [entry.checkpoint_id for entry in entries])
    for entry in entries:
        entry.reviews = notes.get(entry.checkpoint_id, [])
    return History(rows=entries, more=len(snapshots) > limit, lanes=lanes, abandoned=abandoned)


@dataclass
class _Credits:
    # Checkpoints made by people (edits at a review, rollbacks, state updates): who.
    people: dict[str, str] = field(default_factory=dict)
    # Edits given with answers at a dynamic interrupt land in the step after the checkpoint
    # the answer was given at (keyed by that checkpoint), mixed with what the node wrote.
    edits: dict[str, str] = field(default_factory=dict)
    # A head that a rollback or fork moved away from -> what did.
    left: dict[str, Branching] = field(default_factory=dict)
    # A checkpoint a rollback or fork wrote (the copy, the corrections) -> which.
    made: dict[str, Branching] = field(default_factory=dict)


def _credits(thread: Thread, steps: dict[str, Any]) -> _Credits:
    """Who made each checkpoint people made, and what left each old head, from the audit trail."""
    credits = _Credits()
    events = AuditEvent.objects.filter(
        thread=thread,
        action__in=[
            AuditAction.THREAD_RESUMED,
            AuditAction.THREAD_ROLLED_BACK,
            AuditAction.THREAD_STATE_UPDATED,
        ],
    ).only("action", "actor_label", "data", "created_at", "run_id")
    for event in events.order_by("id"):
        data = event.data
        if event.action == AuditAction.THREAD_RESUMED:
            if data.get("resume"):
                if data.get("updates"):
                    # Several answers applied at once credit each reviewer who edited.
                    editors = data.get("edited_by") or [event.actor_label]
                    credits.edits[str(data["checkpoint_id"])] = ", ".join(editors)
            elif data.get("checkpoint_id"):
                credits.people[str(data["checkpoint_id"])] = event.actor_label
            continue
        if event.action == AuditAction.THREAD_ROLLED_BACK:
            for key in ("copy", "fork"):
                if data.get(key):
                    credits.people[str(data[key])] = event.actor_label
            kind: Literal["rollback", "fork"] = "rollback"
            target, reason, run_id = str(data.get("to", "")), str(data.get("reason", "")), event.run_id
        else:
            if data.get("checkpoint_id"):
                credits.people[str(data["checkpoint_id"])] = event.actor_label
            if data.get("fork") is not True:
                continue  # an update of the head leaves nothing behind
            kind, target, reason, run_id = "fork", str(data.get("base", "")), "", None
        branched = Branching(
            kind=kind,
            actor=event.actor_label,
            at=event.created_at,
            reason=reason,
            to_checkpoint_id=target,
            to_step=steps.get(target),
            run_id=run_id,
        )
        for key in ("copy", "fork", "checkpoint_id"):
            if isinstance(data.get(key), str):
                credits.made[data[key]] = branched
        if data.get("from"):
            # The first event that left a head is the one that abandoned it.
            credits.left.setdefault(str(data["from"]), branched)
    return credits


@dataclass
class _Branch:
    # Row indices, newest first: a chain of checkpoints, each the parent of the one before.
    rows: list[int]
    live: bool
    # The row of the checkpoint it branched off (drawn in another lane), when it is listed.
    join: int | None = None
    # Its oldest checkpoint's parent is older than the rows listed: the lane runs off the end.
    open: bool = False
    lane: int = 0

    @property
    def top(self) -> int:
        return self.rows[0]

    def bottom(self, last: int) -> int:
        """The last row the branch's lane is drawn on."""
        if self.join is not None:
            return self.join
        return last if self.open else self.rows[-1]


def _draw(entries: list[HistoryEntry], left: dict[str, Branching]) -> tuple[int, int]:
    """Give each entry its lane, liveness and rails; the number of lanes and of abandoned
    branches. Rows are newest first, and a checkpoint's children are always newer than it,
    so every child of a row read is read too: a row no other row names as parent is a leaf."""
    if not entries:
        return 0, 0
    at = {entry.checkpoint_id: index for index, entry in enumerate(entries)}
    parents = {entry.parent_id for entry in entries}
    owner: dict[int, _Branch] = {}
    branches: list[_Branch] = []
    # The head first: its chain is the live branch. Then each other leaf, oldest first, so a
    # checkpoint belongs to the first branch that was left behind with it.
    leaves = [
        0,
        *sorted((i for i, e in enumerate(entries) if i and e.checkpoint_id not in parents), reverse=True),
    ]
    for leaf in leaves:
        branch = _Branch(rows=[], live=not branches)
        cursor: int | None = leaf
        while cursor is not None and cursor not in owner:
            branch.rows.append(cursor)
            owner[cursor] = branch
            parent = entries[cursor].parent_id
            cursor = at.get(parent) if parent is not None else None
            branch.open = parent is not None and cursor is None
        branch.join = cursor
        branches.append(branch)
    last = len(entries) - 1
    # Lanes: the live branch has 0; each other takes the lowest lane free over its rows.
    spans: list[list[tuple[int, int]]] = [[(0, branches[0].bottom(last))]]
    for branch in sorted(branches[1:], key=lambda branch: branch.top):
        top, bottom = branch.top, branch.bottom(last)
        free = (n for n in range(1, len(spans)) if all(bottom < a or b < top for a, b in spans[n]))
        branch.lane = next(free, len(spans))
        if branch.lane == len(spans):
            spans.append([])
        spans[branch.lane].append((top, bottom))
    rails: list[list[list[str]]] = [[[] for _ in spans] for _ in entries]
    for branch in branches:
        _rail(branch, rails, owner, last)
    for index, entry in enumerate(entries):
        branch = owner[index]
        entry.lane, entry.live, entry.rails = branch.lane, branch.live, rails[index]
        if not branch.live:
            entry.branch_tip = index == branch.top
            entry.abandoned_by = left.get(entries[branch.top].checkpoint_id)
    return len(spans), len(branches) - 1


def _rail(branch: _Branch, rails: list[list[list[str]]], owner: dict[int, _Branch], last: int) -> None:
    """Draw one branch's lane: a line through every row from its newest checkpoint to the one
    it branched off, a dot at each of its checkpoints, and a bend into the parent's lane."""
    tone = "live" if branch.live else "gone"
    mine = set(branch.rows)
    top, bottom = branch.top, branch.bottom(last)
    for row in range(top, bottom + 1):
        cell = rails[row][branch.lane]
        if row > top:
            cell.append(f"up {tone}")
        if row in mine:
            # Below the oldest: on to where it branched off, or off the rows listed.
            if row < bottom or branch.open:
                cell.append(f"down {tone}")
            cell.append(f"dot {tone}")
        elif row == branch.join:
            target = owner[row].lane
            toward = 1 if target > branch.lane else -1
            cell.append(f"{'right' if toward > 0 else 'left'} {tone}")
            for lane in range(branch.lane + toward, target, toward):
                rails[row][lane].append(f"across {tone}")
            rails[row][target].insert(0, f"{'left' if toward > 0 else 'right'} {tone}")
        else:
            cell.append(f"down {tone}")


def _review_notes(thread: Thread, checkpoint_ids: list[str]) -> dict[str, list[ReviewNote]]:
    """The reviews raised at these checkpoints, each with its decision and approvals: two
    queries for any number of checkpoints. The payloads and edits are not read (sealed values
    the history does not show)."""
    if not checkpoint_ids:
        return {}
    reviews = (
        Review.objects.filter(thread=thread, checkpoint_id__in=checkpoint_ids)
        .select_related("decision", "decision__actor")
        .defer("value", "search_text", "decision__updates", "decision__response")
        .prefetch_related(
            Prefetch(
                "approvals",
                queryset=Approval.objects.select_related("actor").defer("updates").order_by("id"),
            )
        )
        .order_by("id")
    )
    notes: dict[str, list[ReviewNote]] = {}
    for review in reviews:
        decision = getattr(review, "decision", None)
        notes.setdefault(review.checkpoint_id, []).append(
            ReviewNote(review=review, decision=decision, approvals=list(review.approvals.all()))
        )
    return notes


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
        per_page = page_size(params, AUDIT_PAGE_SIZES, 50)
        return cls(
            actor=entered["actor"][:150],
            action=action,
            workflow=workflow,
            thread=thread,
            date_from=date_from,
            date_to=date_to,
            before=before,
            after=after,
            per_page=per_page,
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


# -- the threads page (issue 13, item 4) -----------------------------------------------------
# Every thread the user may open (`visible_threads`, the thread page's own rule, so no row links
# to a 404), newest state change first. Pages go by keyset on (updated_at, id), never by OFFSET,
# and nothing counts the table: a page costs the same at any depth.

# The page's status filters, each the Thread.Status values it stands for.
THREAD_STATUSES: dict[str, tuple[str, tuple[str, ...]]] = {
    "running": ("Running", (Thread.Status.QUEUED, Thread.Status.RUNNING)),
    "waiting": ("Waiting for review", (Thread.Status.INTERRUPTED,)),
    "failed": ("Failed", (Thread.Status.FAILED,)),
    "completed": ("Completed", (Thread.Status.COMPLETED,)),
    "cancelled": ("Cancelled", (Thread.Status.CANCELLED,)),
}
# How a row names its thread's status: "interrupted" is the engine's word, not an operator's.
THREAD_STATUS_LABELS: dict[str, str] = {
    Thread.Status.QUEUED: "queued",
    Thread.Status.RUNNING: "running",
    Thread.Status.INTERRUPTED: "waiting for review",
    Thread.Status.FAILED: "failed",
    Thread.Status.COMPLETED: "completed",
    Thread.Status.CANCELLED: "cancelled",
}
THREAD_PAGE_SIZES = PAGE_SIZES
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

# A position in the threads' order: a row's updated_at and id.
ThreadCursor = tuple[datetime, int]


def thread_cursor(thread: Thread) -> str:
    """The cursor of a row, as the page's links carry it."""
    return _cursor_text((thread.updated_at, thread.pk))


def _parse_thread_cursor(text: str, label: str, errors: list[str]) -> ThreadCursor | None:
    if not text:
        return None
    micros, _, pk = text.partition("-")
    # isdecimal, not isdigit ("²"); the lengths keep both within what a datetime and a bigint hold.
    if micros.isdecimal() and pk.isdecimal() and len(micros) <= 17 and len(pk) <= 18:
        try:
            return _EPOCH + int(micros) * _MICROSECOND, int(pk)
        except OverflowError:
            pass
    errors.append(f"Page: “{text[:40]}” is not a position in the list ({label}); showing the newest threads.")
    return None


@dataclass(frozen=True)
class ThreadFilters:
    status: str = ""
    workflow: str = ""
    before: ThreadCursor | None = None
    after: ThreadCursor | None = None
    per_page: int = 25
    # Why a filter was ignored, shown above the rows.
    errors: tuple[str, ...] = field(default=(), compare=False)

    @classmethod
    def from_query(cls, params: QueryDict) -> ThreadFilters:
        """Parse GET parameters; a bad value is dropped with a message, never raised."""
        errors: list[str] = []
        status = _without_nul("Status", params.get("status", "")[:40], errors)
        if status and status not in THREAD_STATUSES:
            errors.append(f"Status: “{status}” is not one of {', '.join(THREAD_STATUSES)}; it was ignored.")
            status = ""
        workflow = _without_nul("Workflow", params.get("workflow", "")[:100], errors)
        if workflow and workflow not in {spec.name for spec in registry.all_workflows()}:
            errors.append(f"Workflow: “{workflow}” is not a registered workflow; it was ignored.")
            workflow = ""
        before = _parse_thread_cursor(params.get("before", ""), "before", errors)
        after = _parse_thread_cursor(params.get("after", ""), "after", errors) if before is None else None
        per_page = page_size(params, THREAD_PAGE_SIZES, 25)
        return cls(
            status=status,
            workflow=workflow,
            before=before,
            after=after,
            per_page=per_page,
            errors=tuple(errors),
        )

    def query(self, **changes: Any) -> str:
        """The query string of the filters in effect, with some changed (links keep the others);
        cursors are passed as the text `thread_cursor` makes."""
        values: dict[str, Any] = {
            "status": self.status,
            "workflow": self.workflow,
            "per_page": self.per_page if self.per_page != 25 else "",
            "before": _cursor_text(self.before),
            "after": _cursor_text(self.after),
        }
        values.update(changes)
        kept = {key: value for key, value in values.items() if value not in ("", None)}
        return "?" + urlencode(kept) if kept else "?"


def _cursor_text(cursor: ThreadCursor | None) -> str:
    """ "<µs since 1970>-<id>": integer microseconds, so the time goes round the URL exactly (no
    float, no time zone to encode)."""
    if cursor is None:
        return ""
    moment, pk = cursor
    return f"{(moment - _EPOCH) // _MICROSECOND}-{pk}"


@dataclass(frozen=True)
class ThreadRow:
    thread: Thread
    # Seconds since the thread last changed (its status, or its error when it failed again).
    in_state: float

    @property
    def status_label(self) -> str:
        return THREAD_STATUS_LABELS.get(self.thread.status, self.thread.status)


@dataclass
class ThreadsPage:
    rows: list[ThreadRow]
    filters: ThreadFilters
    # The workflow filter's choices: the workflows the user reviews.
    workflows: list[registry.Workflow]
    older_query: str
    newer_query: str

    @property
    def statuses(self) -> list[tuple[str, str, str, bool]]:
        """(status, label, query string, current) for the status tabs; "" is every status."""
        first = {"before": None, "after": None}
        tabs = [("", "All", self.filters.query(status="", **first), not self.filters.status)]
        for key, (label, _) in THREAD_STATUSES.items():
            tabs.append((key, label, self.filters.query(status=key, **first), key == self.filters.status))
        return tabs

    @property
    def page_sizes(self) -> tuple[int, ...]:
        return THREAD_PAGE_SIZES

    @property
    def first_query(self) -> str:
        return self.filters.query(before=None, after=None)


def threads_page(user: User | AnonymousUser, filters: ThreadFilters) -> ThreadsPage:
    """One page of the threads the user may open, newest state change first: one query for the
    rows (with who started each), whatever the page size and depth."""
    threads = (
        visible_threads(user)
        # A thread made through the API and never run has no workflow and no page yet.
        .exclude(workflow="")
        .select_related("created_by")
        # Sealed columns the list never shows: not read, not decrypted.
        .defer("input", "error", "metadata")
    )
    if filters.status:
        threads = threads.filter(status__in=THREAD_STATUSES[filters.status][1])
    if filters.workflow:
        threads = threads.filter(workflow=filters.workflow)
    size = filters.per_page
    # The cursor's time bounds the range on its own (`updated_at__lte`), so the index scan starts
    # at the cursor instead of reading every newer row to filter it out; the OR then only
    # settles ties of the same updated_at by id.
    if filters.before is not None:
        moment, pk = filters.before
        older = threads.filter(Q(updated_at__lt=moment) | Q(pk__lt=pk), updated_at__lte=moment)
        rows, downward = list(older.order_by("-updated_at", "-pk")[: size + 1]), True
    elif filters.after is not None:
        moment, pk = filters.after
        newer = threads.filter(Q(updated_at__gt=moment) | Q(pk__gt=pk), updated_at__gte=moment)
        rows, downward = list(newer.order_by("updated_at", "pk")[: size + 1]), False
    else:
        rows, downward = list(threads.order_by("-updated_at", "-pk")[: size + 1]), True
    more = len(rows) > size
    rows = rows[:size]
    if not downward:
        rows.reverse()
    # One row more than shown says whether the walk can go on; the way back exists because a
    # cursor brought us here.
    has_older = more if downward else True
    has_newer = filters.before is not None if downward else more
    now = timezone.now()
    names = reviewable_workflows(user)
    if names is not None:
        names = [*names, *led_workflows(user)]
    return ThreadsPage(
        rows=[ThreadRow(thread, max(0.0, (now - thread.updated_at).total_seconds())) for thread in rows],
        filters=filters,
        workflows=[spec for spec in registry.all_workflows() if names is None or spec.name in names],
        older_query=filters.query(before=thread_cursor(rows[-1]), after=None) if rows and has_older else "",
        newer_query=filters.query(after=thread_cursor(rows[0]), before=None) if rows and has_newer else "",
    )


def sees_workflows(user: User | AnonymousUser) -> bool:
    """Whether the user reviews or leads any workflow (superusers: all), for the threads page's
    nav link."""
    names = reviewable_workflows(user)
    return names is None or bool(names) or bool(led_workflows(user))


# -- the queue's key fields -----------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """One summary value of a queue row, as text."""

    name: str
    label: str
    kind: str
    text: str


def summary_cells(review: Review) -> list[Cell]:
    """The row's key fields: its workflow's declared summary fields as they were when the
    review opened (Review.summary). Only fields the workflow still declares: a field taken
    out of summary_fields stops showing on open reviews at once."""
    try:
        spec = registry.get(review.workflow)
    except LookupError:
        return []
    stored = review.summary if isinstance(review.summary, dict) else {}
    return [
        Cell(name=item.name, label=item.title, kind=item.kind, text=summary_text(item, stored[item.name]))
        for item in spec.summary_fields
        if item.name in stored
    ]


def summary_text(item: registry.SummaryField, value: Any) -> str:
    """A summary value as a row shows it: money with two decimals and thousands separators,
    numbers as written, dates as stored (ISO), texts cut to a few words."""
    if value is None:
        return ""
    if item.numeric and not isinstance(value, bool) and isinstance(value, int | float | str):
        try:
            number = Decimal(str(value))
        except ArithmeticError:
            number = None
        if number is not None and number.is_finite():
            return f"{number:,.2f}" if item.kind == "money" else f"{number:,}"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 80 else text[:79] + "…"


# -- the inbox (issue 13) ----------------------------------------------------------------------


def next_review(user: User, *, after: Review) -> Review | None:
    """The review the inbox opens after a decision on `after`: the one after it in the list's
    default order (waiting longest first), or the first when it was the last; never one held by
    someone else, whose claim would only refuse the user. Two indexed LIMIT 1 queries."""
    now = timezone.now()
    reviews = (
        _open_reviews(user, QueueFilters())
        .exclude(Review.live_claim(now) & ~Q(claimed_by=user))
        .exclude(pk=after.pk)
        .order_by(*ordering("waiting"))
    )
    later = Q(created_at__gt=after.created_at) | Q(created_at=after.created_at, pk__gt=after.pk)
    return reviews.filter(later).first() or reviews.first()


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
