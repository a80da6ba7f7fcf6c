"""The staff metrics page (`/metrics/`, approvals.metrics): figures computed from reviews with
known times, the permissions, the chart, and bad ranges refused with a reason."""

from __future__ import annotations

import importlib
import re
import uuid
import xml.etree.ElementTree as ET
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from django.apps import apps
from django.contrib.auth.models import User
from django.db import transaction
from django.http import QueryDict
from django.urls import reverse
from django.utils import timezone

from approvals import metrics, services
from approvals.models import Decision, Review
from tests.factories import EXPENSE, make_user
from tests.pages import HX, client_for
from workflows import services as engine_services
from workflows.models import AuditEvent, Thread

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("doorbell")]

NOW = timezone.now().replace(microsecond=0)
# Eight days ago, so every review below falls in the default range and in a known week.
T0 = NOW - timedelta(days=8)
MINUTE, HOUR = 60, 3600


INPUTS = {"expense_approval": EXPENSE, "parallel_approval": {"counterparty": "Acme", "value": 5000.0}}


def made_thread(staff: User, workflow: str = "expense_approval") -> Thread:
    return engine_services.start_thread(
        workflow=workflow, input=INPUTS[workflow], actor=staff, title="made up"
    )


def made_review(
    thread: Thread,
    *,
    opened: datetime,
    claimed: float | None = None,
    decided: float | None = None,
    by: User | None = None,
    due: datetime | None = None,
    holder: User | None = None,
) -> Review:
    """A review of `thread` opened at `opened`, first claimed and decided so many seconds later."""
    review = Review.objects.create(
        thread=thread,
        workflow=thread.workflow,
        interrupt_id=uuid.uuid4().hex,
        kind=Review.Kind.BREAKPOINT,
        node="pay",
        checkpoint_id="made-up",
    )
    closed = opened + timedelta(seconds=decided) if decided is not None else None
    Review.objects.filter(pk=review.pk).update(
        created_at=opened,
        first_claimed_at=opened + timedelta(seconds=claimed) if claimed is not None else None,
        due_at=due,
        status=Review.Status.DECIDED if closed else Review.Status.OPEN,
        closed_at=closed,
        claimed_by=holder,
        claim_expires_at=NOW + timedelta(hours=1) if holder else None,
    )
    if closed is not None:
        assert by is not None
        decision = Decision.objects.create(review=review, actor=by, action="approve", checkpoint_id="made-up")
        Decision.objects.filter(pk=decision.pk).update(created_at=closed)
    review.refresh_from_db()
    return review


@pytest.fixture
def figures(staff: User, reviewer: User, other_reviewer: User) -> dict[str, Any]:
    """Five expense reviews and one contract review with known times."""
    expense = made_thread(staff)
    contract = made_thread(staff, "parallel_approval")
    claims = [1 * MINUTE, 2 * MINUTE, 3 * MINUTE, 4 * MINUTE, 10 * MINUTE]
    decisions = [
        (1 * HOUR, reviewer),
        (2 * HOUR, reviewer),
        (3 * HOUR, reviewer),
        (10 * HOUR, other_reviewer),
    ]
    for index, claim in enumerate(claims):
        decided, by = decisions[index] if index < len(decisions) else (None, None)
        made_review(expense, opened=T0 + timedelta(minutes=index), claimed=claim, decided=decided, by=by)
    # Open, overdue, held by oscar; and an open one not yet due.
    made_review(expense, opened=T0, due=NOW - timedelta(hours=1), holder=other_reviewer)
    made_review(expense, opened=T0, due=NOW + timedelta(hours=1))
    made_review(contract, opened=T0, claimed=30, decided=90, by=other_reviewer)
    # Before the range: counted nowhere.
    made_review(expense, opened=NOW - timedelta(days=200), claimed=1, decided=2, by=reviewer)
    return {"expense": expense, "contract": contract}


def the_metrics(**query: str) -> metrics.Metrics:
    filters = metrics.MetricsFilters.from_query(QueryDict(urlencode(query)))
    assert not filters.errors
    return metrics.metrics(filters, now=NOW)


def test_percentiles_interpolate_between_the_closest_ranks():
    assert metrics.percentile([], 50) is None
    assert metrics.percentile([7], 90) == 7
    assert metrics.percentile([3, 1, 2], 50) == 2
    assert metrics.percentile([1, 2, 3, 4], 50) == 2.5
    assert metrics.percentile([60, 120, 180, 240, 600], 90) == pytest.approx(456)
    assert metrics.percentile(list(range(1, 11)), 90) == pytest.approx(9.1)


def test_the_figures_per_workflow_are_exact(figures: dict[str, Any]):
    rows = {row.workflow: row for row in the_metrics().workflows}

    expense = rows["expense_approval"]
    assert (expense.opened, expense.decided, expense.overdue) == (7, 4, 1)
    assert expense.to_claim == metrics.Spread(5, 180, pytest.approx(456))
    # 1 h, 2 h, 3 h and 10 h: median 2.5 h; p90 3 h + 0.7 * 7 h = 7.9 h.
    assert expense.to_decision == metrics.Spread(4, 2.5 * HOUR, pytest.approx(7.9 * HOUR))
    contract = rows["parallel_approval"]
    assert (contract.opened, contract.decided, contract.overdue) == (1, 1, 0)
    assert contract.to_claim == metrics.Spread(1, 30, 30)
    assert contract.to_decision == metrics.Spread(1, 90, 90)


def test_the_figures_per_reviewer_count_decisions_and_what_each_holds_now(figures: dict[str, Any]):
    rows = {row.reviewer: row for row in the_metrics().reviewers}

    assert set(rows) == {"rita", "oscar"}
    assert rows["rita"].decided == 3
    assert rows["rita"].to_decision == metrics.Spread(3, 2 * HOUR, pytest.approx(2.8 * HOUR))
    assert (rows["rita"].holding, rows["rita"].overdue) == (0, 0)
    assert rows["oscar"].decided == 2
    assert rows["oscar"].to_decision == metrics.Spread(
        2, pytest.approx((90 + 10 * HOUR) / 2), pytest.approx(90 + 0.9 * (10 * HOUR - 90))
    )
    assert (rows["oscar"].holding, rows["oscar"].overdue) == (1, 1)


def test_one_workflow_only(figures: dict[str, Any]):
    result = the_metrics(workflow="parallel_approval")

    assert [row.workflow for row in result.workflows] == ["parallel_approval"]
    assert [(row.reviewer, row.decided) for row in result.reviewers] == [("oscar", 1)]


def record(action: str, label: str, thread: Thread) -> None:
    with transaction.atomic(durable=True):
        engine_services.record_event(action=action, actor_label=label, thread=thread, data={"review": 1})  # type: ignore[arg-type]


def test_escalations_and_timeouts_are_counted_from_the_audit_trail_by_week(figures: dict[str, Any]):
    expense, contract = figures["expense"], figures["contract"]
    record("review.escalated", "system:deadline", expense)
    record("review.escalated", "system:deadline", contract)
    record("review.decided", "timeout", expense)
    # A reviewer's decision and another action of the deadline sweep are neither.
    record("review.decided", "rita", expense)
    record("review.overdue", "system:deadline", expense)

    result = the_metrics()

    rows = {row.workflow: row for row in result.workflows}
    assert (rows["expense_approval"].escalations, rows["expense_approval"].timeouts) == (1, 1)
    assert (rows["parallel_approval"].escalations, rows["parallel_approval"].timeouts) == (1, 0)
    today = timezone.localdate()
    this_week = today - timedelta(days=today.weekday())
    weeks = {week.week: week for week in result.weeks}
    assert (weeks[this_week].escalations, weeks[this_week].timeouts) == (2, 1)
    t0 = timezone.localtime(T0).date()
    opened_week = weeks[t0 - timedelta(days=t0.weekday())]
    assert opened_week.opened == 8
    assert sum(week.opened for week in result.weeks) == 8
    assert sum(week.decided for week in result.weeks) == 5
    assert the_metrics(workflow="parallel_approval").workflows[0].escalations == 1


def test_staff_see_the_page_with_the_figures_and_the_chart(figures: dict[str, Any], staff: User):
    response = client_for(staff).get(reverse("approvals:metrics"))

    assert response.status_code == 200
    assert '<a href="/metrics/">Metrics</a>' in response.text
    row = re.search(r'<tr id="workflow-expense_approval">(.*?)</tr>', response.text, re.S)
    assert row
    cells = re.findall(r"<td>(.*?)</td>", row.group(1))
    assert cells == ["Expense approval", "7", "4", "3 min / 7 min", "2 h 30 min / 7 h 54 min", "1", "0", "0"]
    svg = re.search(r"<svg id=\"weekly-chart\".*?</svg>", response.text, re.S)
    assert svg
    tree = ET.fromstring(svg.group(0))
    bars = tree.findall("{http://www.w3.org/2000/svg}rect")
    assert len(bars) == 2 * len(the_metrics().weeks)
    # The busiest week's opened bar fills the chart's height; others are scaled to it.
    assert max(float(bar.get("height", 0)) for bar in bars) == 160
    assert sorted(bar.findtext("{http://www.w3.org/2000/svg}title") for bar in bars)[-1] == "opened: 8"


def test_the_htmx_request_gets_the_results_only(staff: User):
    response = client_for(staff).get(reverse("approvals:metrics"), **HX)

    assert response.status_code == 200
    assert response.text.lstrip().startswith('<div id="results"')
    assert response["Vary"] == "HX-Request, Cookie"


def test_only_active_staff_may_open_the_page(reviewer: User, staff: User, admin: User):
    url = reverse("approvals:metrics")
    gone = make_user("gus", staff=True)
    gone.is_active = False
    gone.save()

    anonymous = client_for(None).get(url)

    assert anonymous.status_code == 302
    assert anonymous["Location"].startswith(reverse("login"))
    assert client_for(reviewer).get(url).status_code == 403
    assert "Metrics</a>" not in client_for(reviewer).get(reverse("approvals:queue")).text
    assert client_for(staff).get(url).status_code == 200
    assert client_for(admin).get(url).status_code == 200


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"since": "2026-13-01"}, "“since” must be a date as YYYY-MM-DD, not &#x27;2026-13-01&#x27;"),
        ({"until": "yesterday"}, "“until” must be a date as YYYY-MM-DD"),
        (
            {"since": "2026-03-02", "until": "2026-03-01"},
            "“since” (2026-03-02) is after “until” (2026-03-01)",
        ),
        (
            {"since": "2024-01-01", "until": "2026-01-01"},
            "The range is 732 days; at most 366 are shown at once",
        ),
        ({"workflow": "payroll"}, "There is no workflow named &#x27;payroll&#x27;"),
    ],
)
def test_a_bad_range_is_refused_with_the_reason_and_the_form_kept(
    staff: User, query: dict[str, str], message: str
):
    response = client_for(staff).get(reverse("approvals:metrics"), query)

    assert response.status_code == 422
    assert message in response.text
    assert "weekly-chart" not in response.text
    for value in query.values():
        if value != "payroll":
            assert f'value="{value}"' in response.text


def test_the_range_includes_both_days():
    filters = metrics.MetricsFilters.from_query(QueryDict("since=2026-03-02&until=2026-03-02"))

    assert filters.end - filters.start == timedelta(days=1)
    default = metrics.MetricsFilters.from_query(QueryDict(""), today=date(2026, 3, 31))
    assert (default.since, default.until) == (date(2026, 2, 4), date(2026, 3, 31))


def test_durations_read_as_people_read_them():
    assert [
        metrics.duration(s) for s in (None, 45, 720, 3 * HOUR, 3 * HOUR + 20 * MINUTE, 52 * HOUR, 48 * HOUR)
    ] == [
        "–",
        "45 s",
        "12 min",
        "3 h",
        "3 h 20 min",
        "2 d 4 h",
        "2 d",
    ]


@pytest.mark.django_db(transaction=True)
def test_the_first_claim_is_kept_through_a_release_and_a_second_claim(review: Review, reviewer: User):
    assert review.first_claimed_at is None

    services.claim_review(review=review, actor=reviewer)
    review.refresh_from_db()
    first = review.first_claimed_at
    services.release_review(review=review, actor=reviewer)
    services.claim_review(review=review, actor=reviewer)

    review.refresh_from_db()
    assert first is not None
    assert review.created_at <= first <= timezone.now()
    assert review.first_claimed_at == first


def test_the_migration_backfills_the_first_claim_from_the_audit_trail(staff: User, reviewer: User):
    thread = made_thread(staff)
    review = made_review(thread, opened=T0)
    other = made_review(thread, opened=T0)
    for pk in (review.pk, review.pk, 999_999):
        with transaction.atomic(durable=True):
            engine_services.record_event(
                action="review.claimed", actor=reviewer, thread=thread, data={"review": pk}
            )  # type: ignore[arg-type]
    first = AuditEvent.objects.filter(action="review.claimed").order_by("id").first()
    assert first is not None

    importlib.import_module("approvals.migrations.0006_metrics").backfill(apps, None)

    review.refresh_from_db()
    other.refresh_from_db()
    assert review.first_claimed_at == first.created_at
    assert other.first_claimed_at is None
