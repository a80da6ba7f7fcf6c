"""The live-claim rule has one home, the Review model (issue 10, item 4): the row check, the
queryset filter, the claim service and the queue page agree on every edge, the expiry instant
included."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from approvals import queries, services
from approvals.models import Review
from tests.factories import EXPENSE, open_review, run_queued
from workflows import services as engine_services

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("doorbell")]

NOW = timezone.make_aware(datetime(2026, 3, 1, 12, 0))


def _claim(review: Review, holder: User | None, expires: datetime | None) -> Review:
    Review.objects.filter(pk=review.pk).update(claimed_by=holder, claim_expires_at=expires)
    return Review.objects.select_related("claimed_by").get(pk=review.pk)


@pytest.mark.parametrize(
    ("has_holder", "expires", "live"),
    [
        (False, None, False),
        (False, NOW + timedelta(minutes=5), False),
        (True, None, False),
        (True, NOW - timedelta(seconds=1), False),
        # Expiring at this very instant it holds nothing: the claim service may hand it on.
        (True, NOW, False),
        (True, NOW + timedelta(seconds=1), True),
    ],
    ids=["free", "no-holder", "no-expiry", "expired", "expiring-now", "live"],
)
def test_the_row_the_queryset_and_the_service_agree(
    review: Review, reviewer: User, has_holder: bool, expires: datetime | None, live: bool
):
    claimed = _claim(review, reviewer if has_holder else None, expires)

    assert claimed.claim_is_live(NOW) is live
    assert Review.objects.filter(Review.live_claim(NOW), pk=review.pk).exists() is live
    assert Review.objects.exclude(Review.live_claim(NOW)).filter(pk=review.pk).exists() is not live
    assert claimed.claim_holder(NOW) == (reviewer if live else None)
    assert services.claim_holder(claimed, now=NOW) == claimed.claim_holder(NOW)


def test_the_queue_flags_each_row_by_the_same_rule(review: Review, reviewer: User, staff: User):
    thread = engine_services.start_thread(
        workflow="expense_approval", input=EXPENSE, actor=staff, title="Nice"
    )
    run_queued(thread)
    expired = _claim(open_review(thread), reviewer, timezone.now() - timedelta(minutes=1))
    live = _claim(review, reviewer, timezone.now() + timedelta(minutes=10))

    rows = {row.pk: row.claim_live for row in queries.queue(reviewer, queries.QueueFilters()).page}

    assert rows[live.pk] is True
    assert rows[expired.pk] is False


def test_the_queue_page_names_only_a_live_holder(review: Review, reviewer: User, rita: Client):
    _claim(review, reviewer, timezone.now() - timedelta(minutes=1))
    expired = rita.get(reverse("approvals:queue")).text
    _claim(review, reviewer, timezone.now() + timedelta(minutes=10))
    live = rita.get(reverse("approvals:queue")).text

    def claimed_by(html: str) -> str:
        row = html[html.index(f'<tr id="review-{review.pk}"') :]
        return row[: row.index("</tr>")]

    assert '<span class="muted">nobody</span>' in claimed_by(expired)
    assert "<td>rita</td>" in claimed_by(live)
