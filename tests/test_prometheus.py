"""The Prometheus endpoint (api/prometheus.py): the token rule, and the figures read from the
database, checked by parsing the text with prometheus_client's own parser."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from api.models import WebhookDelivery
from approvals.models import Decision, Review
from tests.factories import EXPENSE, decide, make_user, open_review, run_queued
from workflows import services as engine_services
from workflows.models import Run, Thread
from workflows.timings import WriteTimings

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("doorbell")]

URL = "/prometheus/metrics"
TOKEN = "s3cret-scrape-token"


@pytest.fixture
def token(settings: Any) -> str:
    settings.SIGNOFF_METRICS_TOKEN = TOKEN
    return TOKEN


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_without_a_token_configured_the_endpoint_is_not_there(settings: Any):
    settings.SIGNOFF_METRICS_TOKEN = ""

    assert Client().get(URL, HTTP_AUTHORIZATION="Bearer anything").status_code == 404


@pytest.mark.parametrize(
    ("header", "status"),
    [(None, 401), ("Basic c2FtOnB3", 401), ("Bearer", 401), ("Bearer wrong", 403), (f"Bearer {TOKEN}x", 403)],
)
def test_a_missing_or_wrong_token_is_refused(token: str, header: str | None, status: int):
    extra = {"HTTP_AUTHORIZATION": header} if header else {}

    response = Client().get(URL, **extra)

    assert response.status_code == status
    assert b"signoff_" not in response.content


def test_a_signed_in_staff_member_without_the_token_is_refused_too(token: str):
    client = Client()
    client.force_login(make_user("sue", staff=True, superuser=True))

    assert client.get(URL).status_code == 401


def test_the_figures_come_from_the_database(token: str, staff: Any, reviewer: Any):
    now = timezone.now()
    thread = engine_services.start_thread(workflow="expense_approval", input=EXPENSE, actor=staff)
    for age, status in ((3 * 3600, "open"), (60, "open"), (7200, "decided")):
        review = Review.objects.create(
            thread=thread,
            workflow="expense_approval",
            interrupt_id=uuid.uuid4().hex,
            kind="breakpoint",
            node="pay",
        )
        Review.objects.filter(pk=review.pk).update(created_at=now - timedelta(seconds=age), status=status)
        if status == "decided":
            Decision.objects.create(review=review, actor=reviewer, action="reject", checkpoint_id="x")
    run = Run.objects.get(thread=thread)
    Run.objects.filter(pk=run.pk).update(
        status="succeeded", started_at=now - timedelta(seconds=2), finished_at=now
    )
    for status, attempts in (("failed", 5), ("pending", 2), ("succeeded", 1)):
        WebhookDelivery.objects.create(
            message_id=uuid.uuid4().hex,
            event="run_ended",
            thread=thread,
            url="https://hooks.example.com/x",
            body="{}",
            status=status,
            attempts=attempts,
        )
    Thread.objects.filter(pk=thread.pk).update(status="completed")

    response = Client().get(URL, HTTP_AUTHORIZATION=f"Bearer {TOKEN}")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    figures = samples(response.text)
    assert figures[("signoff_open_reviews", (("workflow", "expense_approval"),))] == 2
    oldest = figures[("signoff_oldest_open_review_age_seconds", (("workflow", "expense_approval"),))]
    assert 3 * 3600 <= oldest < 3 * 3600 + 60
    assert figures[("signoff_runs", (("status", "succeeded"),))] == 1
    assert figures[("signoff_runs", (("status", "queued"),))] == 0
    assert figures[("signoff_run_duration_seconds_count", ())] == 1
    assert figures[("signoff_run_duration_seconds_bucket", (("le", "1.0"),))] == 0
    assert figures[("signoff_run_duration_seconds_bucket", (("le", "5.0"),))] == 1
    assert figures[("signoff_run_duration_seconds_sum", ())] == pytest.approx(2)
    assert figures[("signoff_decisions_total", (("action", "reject"),))] == 1
    assert figures[("signoff_webhook_failures_total", ())] == 1
    assert figures[("signoff_webhook_retrying", ())] == 1
    assert figures[("signoff_email_failures_total", ())] == 0


@pytest.mark.django_db(transaction=True)  # the run's checkpoint writes commit on their own connections
def test_checkpoint_writes_are_timed_by_the_run_that_made_them(token: str, staff: Any, reviewer: Any):
    thread = engine_services.start_thread(workflow="expense_approval", input=EXPENSE, actor=staff)
    run_queued(thread)
    first = Run.objects.get(thread=thread)
    writes = first.checkpoint_writes
    # Input, the draft step and the pause at the review: a put and put_writes each, at least.
    assert writes["count"] >= 3
    assert writes["seconds"] > 0
    assert sum(writes["buckets"]) == writes["count"]
    decide(open_review(thread), reviewer, "approve")
    run_queued(thread)
    resumed = Run.objects.exclude(pk=first.pk).get(thread=thread)
    total = writes["count"] + resumed.checkpoint_writes["count"]

    figures = samples(Client().get(URL, HTTP_AUTHORIZATION=f"Bearer {TOKEN}").text)

    labels = (("workflow", "expense_approval"),)
    assert figures[("signoff_checkpoint_write_seconds_count", labels)] == total
    assert figures[("signoff_checkpoint_write_seconds_sum", labels)] == pytest.approx(
        writes["seconds"] + resumed.checkpoint_writes["seconds"]
    )
    assert figures[("signoff_checkpoint_write_seconds_bucket", (("le", "+Inf"), *labels))] == total
    bounds = [key for key in figures if key[0] == "signoff_checkpoint_write_seconds_bucket"]
    counts = [figures[key] for key in sorted(bounds, key=lambda key: float(dict(key[1])["le"]))]
    assert counts == sorted(counts), "buckets are cumulative"


def test_a_write_is_counted_in_the_bucket_of_its_duration():
    timed = WriteTimings()
    for seconds in (0.0005, 0.001, 0.003, 2.0):
        timed.observe(seconds)

    assert timed.count == 4
    assert timed.buckets[:3] == [2, 0, 1]
    assert timed.buckets[-1] == 1
    assert WriteTimings.from_json(timed.as_json()) == timed
    # A tally stored with other buckets (an older release) is not mixed into these.
    assert WriteTimings.from_json({"count": 3, "seconds": 1.0, "buckets": [3]}) == WriteTimings()


def test_a_run_that_failed_keeps_the_time_of_the_writes_it_made(staff: Any):
    thread = engine_services.start_thread(workflow="expense_approval", input=EXPENSE, actor=staff)
    run = Run.objects.get(thread=thread)
    claim = engine_services.claim_run(run_id=run.pk, holder=engine_services.lease_holder())
    assert claim.token is not None
    timed = WriteTimings()
    timed.observe(0.004)

    assert engine_services.fail_run(run_id=run.pk, token=claim.token, error="boom", writes=timed)

    run.refresh_from_db()
    assert run.status == Run.Status.FAILED
    assert WriteTimings.from_json(run.checkpoint_writes) == timed
