"""The audit trail (invariant 5): written with the change it records, hash-chained, and on
PostgreSQL impossible to update, delete or truncate."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import DatabaseError, Error, connection, transaction

from approvals.models import Decision, Review
from tests.factories import (
    EXPENSE,
    audit_actions,
    decide,
    make_thread,
    open_review,
    replica_role,
    row_counts,
    run_queued,
)
from workflows import services
from workflows.models import AuditEvent, Thread

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("doorbell")]


@pytest.fixture
def paused_expense(staff: User) -> Thread:
    thread = make_thread("expense_approval", EXPENSE, staff)
    run_queued(thread)
    return thread


class AuditDown(Exception):
    pass


def break_audit(monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on every audit write fails, as a full disk or a broken trigger would make it."""

    def refuse(**kwargs: Any) -> None:
        raise AuditDown(kwargs["action"])

    monkeypatch.setattr(services, "record_event", refuse)


def test_a_decided_expense_leaves_one_event_per_change(paused_expense: Thread, reviewer: User):
    decide(open_review(paused_expense), reviewer, "approve", updates={"approved": True})
    run_queued(paused_expense)

    assert audit_actions(paused_expense) == [
        "thread.started",
        "run.started",
        "review.opened",
        "run.interrupted",
        "thread.resumed",
        # Written last in its transaction: the audit lock is the last lock decide takes.
        "review.decided",
        "run.started",
        "run.completed",
    ]
    decided = AuditEvent.objects.get(thread=paused_expense, action="review.decided")
    assert (decided.actor_id, decided.actor_label) == (reviewer.pk, "rita")
    assert decided.data["updates"] == {"approved": True}


def test_an_audit_event_cannot_be_written_outside_a_transaction(staff: User):
    with pytest.raises(RuntimeError, match="inside the transaction"):
        services.record_event(action="thread.started", actor=staff)

    assert AuditEvent.objects.count() == 0


def test_a_start_whose_audit_event_fails_leaves_no_thread(staff: User, monkeypatch: pytest.MonkeyPatch):
    before = row_counts()
    break_audit(monkeypatch)

    with pytest.raises(AuditDown):
        services.start_thread(workflow="expense_approval", input=EXPENSE, actor=staff)

    assert row_counts() == before


def test_a_decision_whose_audit_event_fails_changes_nothing(
    paused_expense: Thread, reviewer: User, monkeypatch: pytest.MonkeyPatch
):
    review = open_review(paused_expense)
    before = row_counts()
    break_audit(monkeypatch)

    with pytest.raises(AuditDown):
        decide(review, reviewer, "approve", updates={"amount": 1.0, "approved": True})

    review.refresh_from_db()
    paused_expense.refresh_from_db()
    assert row_counts() == before
    assert review.status == Review.Status.OPEN
    assert paused_expense.status == Thread.Status.INTERRUPTED
    assert Decision.objects.count() == 0
    assert services.engine.head("expense_approval", paused_expense.thread_id).values["amount"] == 120.0


@pytest.mark.parametrize(
    ("workflow", "input", "change"),
    [
        pytest.param(
            "seed_demo",
            {"count": 0},
            lambda thread, user: services.retry_thread(thread=thread, actor=user),
            id="retry",
        ),
        pytest.param(
            "seed_demo",
            {"count": 0},
            lambda thread, user: services.cancel_thread(thread=thread, actor=user),
            id="cancel",
        ),
        pytest.param(
            "expense_approval",
            EXPENSE,
            lambda thread, user: services.resume_thread(thread=thread, actor=user, proceed=True),
            id="resume",
        ),
    ],
)
def test_a_thread_change_whose_audit_event_fails_is_rolled_back(
    staff: User,
    monkeypatch: pytest.MonkeyPatch,
    workflow: str,
    input: dict[str, Any],
    change: Callable[[Thread, User], Any],
):
    thread = make_thread(workflow, input, staff)
    run_queued(thread)  # seed_demo fails, expense_approval pauses
    status, before = thread.status, row_counts()
    break_audit(monkeypatch)

    with pytest.raises(AuditDown):
        change(thread, staff)

    thread.refresh_from_db()
    assert thread.status == status
    assert row_counts() == before


def test_the_chain_of_a_whole_workflow_verifies(paused_expense: Thread, reviewer: User):
    decide(open_review(paused_expense), reviewer, "approve", updates={"approved": True})
    run_queued(paused_expense)

    checked, broken = services.verify_audit_chain(batch=3)

    assert broken is None
    assert checked == AuditEvent.objects.count() == 8


def test_an_event_changed_behind_the_apps_back_is_reported_by_id(paused_expense: Thread):
    tampered = AuditEvent.objects.get(thread=paused_expense, action="run.started")
    with replica_role():
        AuditEvent.objects.filter(pk=tampered.pk).update(data={"attempt": 1, "holder": "nobody"})

    checked, broken = services.verify_audit_chain()

    assert broken is not None
    assert broken.event_id == tampered.pk
    assert "do not match its hash" in broken.reason
    assert checked == AuditEvent.objects.filter(pk__lt=tampered.pk).count()


def test_an_event_deleted_behind_the_apps_back_breaks_the_chain_at_the_next(paused_expense: Thread):
    events = list(AuditEvent.objects.filter(thread=paused_expense).order_by("id"))
    with replica_role():
        AuditEvent.objects.filter(pk=events[1].pk).delete()

    _, broken = services.verify_audit_chain()

    assert broken is not None
    assert broken.event_id == events[2].pk
    assert "prev_hash" in broken.reason


def test_a_rewritten_and_rehashed_event_still_breaks_the_chain_after_it(paused_expense: Thread):
    events = list(AuditEvent.objects.filter(thread=paused_expense).order_by("id"))
    forged = events[1]
    forged.actor_label = "mallory"
    forged.hash = services.event_hash(
        prev_hash=forged.prev_hash,
        actor_label=forged.actor_label,
        actor_id=forged.actor_id,
        action=forged.action,
        thread_id=forged.thread_id,
        run_id=forged.run_id,
        data=forged.data,
        created_at=forged.created_at,
    )
    with replica_role():
        AuditEvent.objects.filter(pk=forged.pk).update(actor_label=forged.actor_label, hash=forged.hash)

    _, broken = services.verify_audit_chain()

    assert broken is not None
    assert broken.event_id == events[2].pk


def _raw(sql: str) -> Callable[[], Any]:
    def execute() -> None:
        with connection.cursor() as cursor:
            cursor.execute(sql)

    return execute


@pytest.mark.postgres
@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda: AuditEvent.objects.update(actor_label="mallory"), id="orm-update"),
        pytest.param(lambda: AuditEvent.objects.all().delete(), id="orm-delete"),
        pytest.param(lambda: AuditEvent.objects.first().save(), id="orm-save"),
        pytest.param(_raw("UPDATE workflows_auditevent SET actor_label = 'mallory'"), id="sql-update"),
        pytest.param(_raw("DELETE FROM workflows_auditevent"), id="sql-delete"),
        pytest.param(_raw("TRUNCATE workflows_auditevent"), id="sql-truncate"),
    ],
)
def test_postgres_refuses_to_change_or_remove_audit_events(paused_expense: Thread, tamper: Callable[[], Any]):
    before = list(AuditEvent.objects.values_list("id", "actor_label", "hash"))

    with pytest.raises(Error) as refused, transaction.atomic():
        tamper()

    assert isinstance(refused.value, DatabaseError)
    assert "append-only" in str(refused.value)
    assert list(AuditEvent.objects.values_list("id", "actor_label", "hash")) == before
    assert services.verify_audit_chain() == (len(before), None)
