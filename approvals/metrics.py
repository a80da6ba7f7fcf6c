"""Reads for the staff metrics page (`/metrics/`): reviews opened and decided, how long they
waited for a first claim and for a decision (median and p90), what is overdue now, and the
escalations and timeouts of the deadline policies, per workflow, per reviewer and by week.

Durations are read as rows and summarised in Python, so the figures are the same on SQLite and
PostgreSQL (neither's percentile functions are used). A range is capped at MAX_DAYS, which
bounds how many rows one page reads.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from django.db.models import Q
from django.http import QueryDict
from django.utils import timezone

from approvals import services
from approvals.models import Review
from workflows import registry
from workflows.audit import Action as AuditAction
from workflows.models import AuditEvent

DEFAULT_DAYS = 56
MAX_DAYS = 366

# How the deadline policies (approvals.deadlines) show in the audit trail: an escalation is its
# own action; a timeout is a decision by the system actor "timeout". The one place these names
# are read, so a change of them is one change here.
# What the deadline sweep writes (approvals.deadlines): an escalation is its own event, and a
# default applied at the due time is review.decided by the system actor "timeout".
ESCALATION_ACTIONS = (AuditAction.REVIEW_ESCALATED.value,)
TIMEOUT_ACTOR_LABEL = services.TIMEOUT
ESCALATION = "escalation"
TIMEOUT = "timeout"


def policy_events(start: datetime, end: datetime, workflow: str = "") -> list[tuple[datetime, str, str]]:
    """(when, workflow, ESCALATION or TIMEOUT) for each escalation and timeout decision in
    [start, end), read from the audit trail by action name and actor label."""
    events = AuditEvent.objects.filter(created_at__gte=start, created_at__lt=end).filter(
        Q(action__in=ESCALATION_ACTIONS)
        | Q(action=AuditAction.REVIEW_DECIDED.value, actor_label=TIMEOUT_ACTOR_LABEL)
    )
    if workflow:
        events = events.filter(thread__workflow=workflow)
    return [
        (created_at, name or "", ESCALATION if action in ESCALATION_ACTIONS else TIMEOUT)
        for created_at, name, action in events.values_list("created_at", "thread__workflow", "action")
    ]


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) of `values` by linear interpolation between the closest
    ranks (numpy's default, and statistics.quantiles' "inclusive"): q=50 is the median. None
    for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Spread:
    """Median and p90 of some durations, in seconds (None without any)."""

    count: int
    median: float | None
    p90: float | None

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Spread:
        return cls(len(seconds), percentile(seconds, 50), percentile(seconds, 90))


@dataclass(frozen=True)
class MetricsFilters:
    since: date
    until: date
    workflow: str = ""
    errors: tuple[str, ...] = field(default=(), compare=False)

    @classmethod
    def from_query(cls, params: QueryDict, *, today: date | None = None) -> MetricsFilters:
        """The range asked for (YYYY-MM-DD, both days included; the last DEFAULT_DAYS days by
        default) and the workflow; errors say what is wrong, and no figures are read then."""
        today = today or timezone.localdate()
        errors: list[str] = []
        until = _day(params.get("until", ""), "until", today, errors)
        since = _day(params.get("since", ""), "since", until - timedelta(days=DEFAULT_DAYS - 1), errors)
        if not errors and since > until:
            errors.append(f"“since” ({since}) is after “until” ({until}).")
        if not errors and (until - since).days + 1 > MAX_DAYS:
            errors.append(
                f"The range is {(until - since).days + 1} days; at most {MAX_DAYS} are shown at once."
            )
        workflow = params.get("workflow", "").strip()[:100]
        if workflow and workflow not in {spec.name for spec in registry.all_workflows()}:
            errors.append(f"There is no workflow named {workflow!r}.")
        return cls(since=since, until=until, workflow=workflow, errors=tuple(errors))

    @property
    def start(self) -> datetime:
        return timezone.make_aware(datetime.combine(self.since, time.min))

    @property
    def end(self) -> datetime:
        return timezone.make_aware(datetime.combine(self.until + timedelta(days=1), time.min))


def _day(text: str, name: str, default: date, errors: list[str]) -> date:
    text = text.strip()
    if not text:
        return default
    try:
        return date.fromisoformat(text)
    except ValueError:
        errors.append(f"“{name}” must be a date as YYYY-MM-DD, not {text[:40]!r}.")
        return default


@dataclass
class WorkflowRow:
    workflow: str
    title: str
    opened: int = 0
    decided: int = 0
    to_claim: Spread = field(default_factory=lambda: Spread.of([]))
    to_decision: Spread = field(default_factory=lambda: Spread.of([]))
    overdue: int = 0
    escalations: int = 0
    timeouts: int = 0


@dataclass
class ReviewerRow:
    reviewer: str
    decided: int = 0
    to_decision: Spread = field(default_factory=lambda: Spread.of([]))
    holding: int = 0
    overdue: int = 0


@dataclass
class WeekRow:
    week: date
    opened: int = 0
    decided: int = 0
    escalations: int = 0
    timeouts: int = 0


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    height: float
    value: int
    kind: str


@dataclass(frozen=True)
class Chart:
    """Opened and decided reviews by week as bar geometry, for the template's inline SVG."""

    width: int
    height: int
    bars: list[Bar]
    labels: list[tuple[float, str]]
    top: int


@dataclass(frozen=True)
class Metrics:
    filters: MetricsFilters
    workflows: list[WorkflowRow]
    reviewers: list[ReviewerRow]
    weeks: list[WeekRow]
    chart: Chart


SYSTEM = "(system)"


def metrics(filters: MetricsFilters, *, now: datetime | None = None) -> Metrics:
    now = now or timezone.now()
    start, end = filters.start, filters.end
    reviews = Review.objects.all()
    if filters.workflow:
        reviews = reviews.filter(workflow=filters.workflow)
    rows: dict[str, WorkflowRow] = {}

    def row(name: str) -> WorkflowRow:
        if name not in rows:
            try:
                title = registry.get(name).title
            except LookupError:
                title = name
            rows[name] = WorkflowRow(name, title)
        return rows[name]

    weeks = {week: WeekRow(week) for week in _weeks(filters.since, filters.until)}
    to_claim: dict[str, list[float]] = defaultdict(list)
    to_decision: dict[str, list[float]] = defaultdict(list)
    by_reviewer: dict[str, list[float]] = defaultdict(list)

    opened = reviews.filter(created_at__gte=start, created_at__lt=end)
    for name, created_at, first_claimed_at in opened.values_list(
        "workflow", "created_at", "first_claimed_at"
    ):
        row(name).opened += 1
        weeks[_week_of(created_at)].opened += 1
        if first_claimed_at is not None:
            to_claim[name].append((first_claimed_at - created_at).total_seconds())

    decided = reviews.filter(status=Review.Status.DECIDED, closed_at__gte=start, closed_at__lt=end)
    fields = ("workflow", "created_at", "closed_at", "decision__actor__username", "decision__actor_label")
    for name, created_at, closed_at, username, label in decided.values_list(*fields):
        seconds = (closed_at - created_at).total_seconds()
        row(name).decided += 1
        weeks[_week_of(closed_at)].decided += 1
        to_decision[name].append(seconds)
        by_reviewer[username or label or SYSTEM].append(seconds)

    open_now = reviews.filter(status=Review.Status.OPEN)
    overdue = open_now.filter(due_at__lt=now)
    for name in overdue.values_list("workflow", flat=True):
        row(name).overdue += 1
    held: dict[str, ReviewerRow] = {name: ReviewerRow(name) for name in by_reviewer}
    for username, due_at in open_now.filter(Review.live_claim(now)).values_list(
        "claimed_by__username", "due_at"
    ):
        reviewer = held.setdefault(username, ReviewerRow(username))
        reviewer.holding += 1
        reviewer.overdue += int(due_at is not None and due_at < now)

    for when, name, kind in policy_events(start, end, filters.workflow):
        week = weeks[_week_of(when)]
        if kind == ESCALATION:
            row(name).escalations += 1
            week.escalations += 1
        else:
            row(name).timeouts += 1
            week.timeouts += 1

    for name, workflow_row in rows.items():
        workflow_row.to_claim = Spread.of(to_claim[name])
        workflow_row.to_decision = Spread.of(to_decision[name])
    for name, reviewer in held.items():
        reviewer.decided = len(by_reviewer[name])
        reviewer.to_decision = Spread.of(by_reviewer[name])
    week_rows = [weeks[week] for week in sorted(weeks)]
    return Metrics(
        filters=filters,
        workflows=sorted(rows.values(), key=lambda r: r.workflow),
        reviewers=sorted(held.values(), key=lambda r: (-r.decided, r.reviewer)),
        weeks=week_rows,
        chart=chart(week_rows),
    )


def _week_of(when: datetime) -> date:
    day = timezone.localtime(when).date()
    return day - timedelta(days=day.weekday())


def _weeks(since: date, until: date) -> Iterable[date]:
    week = since - timedelta(days=since.weekday())
    while week <= until:
        yield week
        week += timedelta(days=7)


CHART_HEIGHT = 160
BAR_WIDTH = 10
WEEK_WIDTH = 28
LEFT = 30


def chart(weeks: Sequence[WeekRow]) -> Chart:
    """Two bars a week (opened, decided), scaled to the busiest week."""
    top = max([1, *(max(week.opened, week.decided) for week in weeks)])
    bars: list[Bar] = []
    labels: list[tuple[float, str]] = []
    for index, week in enumerate(weeks):
        x = LEFT + index * WEEK_WIDTH
        for offset, kind, value in ((0, "opened", week.opened), (BAR_WIDTH + 1, "decided", week.decided)):
            height = CHART_HEIGHT * value / top
            bars.append(Bar(x + offset, CHART_HEIGHT - height, height, value, kind))
        labels.append((x, week.week.strftime("%d %b")))
    width = LEFT + max(1, len(weeks)) * WEEK_WIDTH + 10
    return Chart(width=width, height=CHART_HEIGHT + 30, bars=bars, labels=labels, top=top)


def duration(seconds: float | None) -> str:
    """A duration as people read it: "45 s", "12 min", "3 h 20 min", "2 d 4 h"."""
    if seconds is None:
        return "–"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"
