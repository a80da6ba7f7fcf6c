"""The deadline sweep racing a reviewer on PostgreSQL, with real transactions (issue 12,
item 7): an escalation or a default decision at the same moment as a reviewer's decision wins
or loses cleanly, never both; a sweep never waits on a thread someone holds."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.utils import timezone

from approvals import deadlines
from approvals import services as approvals
from approvals.models import Decision, Review
from tests.factories import make_user, open_review, paused, run_queued
from tests.fake_workflows import build_ask
from tests.races import race
from workflows import registry
from workflows import services as engine_services
from workflows.models import AuditEvent, Thread

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]

ROUNDS = 4


def workflow(on_due: dict[str, Any]) -> registry.Workflow:
    return registry.Workflow(
        name="due_race", title="Race", builder=build_ask, reviewer_group="finance", on_due=on_due
    )


def past_due(review: Review) -> None:
    Review.objects.filter(pk=review.pk).update(due_at=timezone.now() - timedelta(seconds=1))


def test_an_escalation_racing_a_decision_never_does_both(staff: User, reviewer: User):
    make_user("max", groups=["managers"])
    outcomes = set()
    with paused(workflow({"escalate": "managers"}), {"title": "first"}, staff) as first:
        threads = [first] + [
            engine_services.start_thread(workflow="due_race", input={"title": f"t{n}"}, actor=staff)
            for n in range(ROUNDS - 1)
        ]
        for thread in threads[1:]:
            run_queued(thread)
        for thread in threads:
            review = open_review(thread)
            past_due(review)

            sweep, decided = race(
                deadlines.sweep_deadlines,
                lambda review=review: approvals.decide(
                    review=review.pk, actor=reviewer, action="approve", checkpoint_id=review.checkpoint_id
                ),
            )

            review.refresh_from_db()
            escalated = AuditEvent.objects.filter(thread=thread, action="review.escalated").count()
            decisions = Decision.objects.filter(review=review).count()
            assert not isinstance(sweep, Exception), sweep
            if isinstance(decided, Decision):
                # The reviewer won: the sweep skipped it, or came after and found it decided.
                outcomes.add("decision")
                assert (escalated, decisions) == (0, 1)
                assert review.status == Review.Status.DECIDED
                assert review.escalated_at is None
                assert sweep.escalated == 0
            else:
                # The sweep won: the reviewer's answer is refused with what happened (a 409).
                outcomes.add("escalation")
                assert isinstance(decided, approvals.ReviewEscalated), decided
                assert (escalated, decisions) == (1, 0)
                assert review.status == Review.Status.OPEN
                assert review.reviewer_group == "managers"
            # Whoever lost, a later sweep changes nothing.
            assert deadlines.sweep_deadlines() == deadlines.DeadlineSweep()
    assert outcomes


def test_a_timeout_racing_a_decision_records_one_decision(staff: User, reviewer: User):
    with paused(workflow({"decide": "reject"}), {"title": "first"}, staff) as first:
        threads = [first]
        for n in range(ROUNDS - 1):
            thread = engine_services.start_thread(workflow="due_race", input={"title": f"t{n}"}, actor=staff)
            run_queued(thread)
            threads.append(thread)
        for thread in threads:
            review = open_review(thread)
            past_due(review)

            sweep, decided = race(
                deadlines.sweep_deadlines,
                lambda review=review: approvals.decide(
                    review=review.pk, actor=reviewer, action="approve", checkpoint_id=review.checkpoint_id
                ),
            )

            assert not isinstance(sweep, Exception), sweep
            [decision] = Decision.objects.filter(review=review)
            events = AuditEvent.objects.filter(thread=thread, action="review.decided")
            assert events.count() == 1
            assert thread.runs.filter(kind="resume").count() == 1
            if isinstance(decided, Decision):
                assert (decision.actor, decision.action, sweep.timed_out) == (reviewer, "approve", 0)
                assert events.get().actor_label == "rita"
            else:
                assert isinstance(decided, approvals.AlreadyDecided), decided
                assert "by timeout at" in str(decided)
                assert (decision.actor_label, decision.action, sweep.timed_out) == ("timeout", "reject", 1)
                assert events.get().actor_label == "timeout"
            assert deadlines.sweep_deadlines() == deadlines.DeadlineSweep()


def test_the_sweep_skips_a_review_whose_thread_is_locked_and_acts_once_it_is_free(staff: User):
    with paused(workflow({"escalate": "managers"}), {"title": "Q3"}, staff) as thread:
        review = open_review(thread)
        past_due(review)
        holding = threading.Event()
        release = threading.Event()

        def hold_the_thread() -> None:
            try:
                with transaction.atomic():
                    engine_services.lock_thread(thread.pk)
                    holding.set()
                    release.wait(timeout=30)
            finally:
                connection.close()

        holder = threading.Thread(target=hold_the_thread)
        holder.start()
        try:
            assert holding.wait(timeout=30)
            busy = deadlines.sweep_deadlines()
        finally:
            release.set()
            holder.join()

        free = deadlines.sweep_deadlines()

    assert (busy.skipped, busy.escalated) == (1, 0)
    assert (free.skipped, free.escalated) == (0, 1)
    assert Thread.objects.get(pk=thread.pk).status == Thread.Status.INTERRUPTED
