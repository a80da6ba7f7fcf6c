"""Run's state transitions (workflows.models.Run): the one place a run's status and lease
change. They set fields and name them; the services save them under the thread's lock."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from workflows.models import Run

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def claimed() -> Run:
    run = Run(kind=Run.Kind.START)
    run.claim(token=uuid.uuid4(), holder="host:scope:1", now=NOW, lease_seconds=30)
    return run


def test_a_claim_gives_a_fresh_lease_and_counts_the_attempt():
    run = Run(kind=Run.Kind.START)
    token = uuid.uuid4()

    fields = run.claim(token=token, holder="host:scope:1", now=NOW, lease_seconds=30)

    assert (run.status, run.lease_token, run.lease_holder, run.attempts) == (
        "running",
        token,
        "host:scope:1",
        1,
    )
    assert run.lease_expires_at == NOW + timedelta(seconds=30)
    assert run.started_at == NOW
    assert set(fields) == {
        "status",
        "lease_token",
        "lease_expires_at",
        "lease_holder",
        "attempts",
        "started_at",
    }


def test_a_second_claim_keeps_when_the_run_first_started():
    run = claimed()

    run.claim(token=uuid.uuid4(), holder="host:scope:2", now=NOW + timedelta(minutes=5), lease_seconds=30)

    assert run.started_at == NOW
    assert run.attempts == 2


def test_closing_a_run_takes_its_lease_away():
    run = claimed()

    fields = run.close(Run.Status.FAILED, now=NOW, error="boom")

    assert (run.status, run.error, run.lease_token, run.lease_expires_at) == ("failed", "boom", None, None)
    assert run.finished_at == NOW
    assert set(fields) == {"status", "error", "lease_token", "lease_expires_at", "finished_at"}


def test_a_requeued_run_holds_no_lease_and_keeps_its_error_unless_given_one():
    run = claimed()
    run.error = "earlier"

    fields = run.requeue(now=NOW)

    assert (run.status, run.lease_token, run.lease_expires_at, run.enqueued_at) == ("queued", None, None, NOW)
    assert run.error == "earlier"
    assert "error" not in fields
    assert "error" in run.requeue(now=NOW, error="the database went away")
    assert run.error == "the database went away"


def test_a_run_that_used_up_its_attempts_says_so():
    run = Run(kind=Run.Kind.START, attempts=3)

    assert run.gave_up_error() == (
        "gave up after 3 attempts: the worker running it died or lost its lease each time"
    )
