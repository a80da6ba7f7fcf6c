"""Public services are durable transactions: one called inside another transaction by mistake
raises, and nothing is written. A service that makes another's change as part of its own calls
the `*_in_transaction` helper, which refuses to run outside a transaction."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.db import transaction

from approvals import services as approvals
from tests.factories import EXPENSE, make_thread, open_review, row_counts
from workflows import registry, services
from workflows.models import Thread

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("doorbell")]

NESTED = "A durable atomic block cannot be nested within another atomic block."


def nested(call: object) -> None:
    with transaction.atomic():
        call()  # type: ignore[operator]


def test_a_workflow_service_called_inside_another_transaction_raises_and_writes_nothing(
    expense: Thread, admin: User
):
    before = row_counts()

    with pytest.raises(RuntimeError, match=NESTED):
        nested(lambda: services.cancel_thread(thread=expense, actor=admin, reason="nested"))

    assert row_counts() == before
    expense.refresh_from_db()
    assert expense.status == Thread.Status.INTERRUPTED


def test_a_decision_called_inside_another_transaction_raises_and_writes_nothing(
    expense: Thread, reviewer: User
):
    review = open_review(expense)
    before = row_counts()

    with pytest.raises(RuntimeError, match=NESTED):
        nested(
            lambda: approvals.decide(
                review=review, actor=reviewer, action="approve", checkpoint_id=review.checkpoint_id
            )
        )

    assert row_counts() == before


def test_the_workers_services_and_start_thread_are_durable_too(staff: User):
    thread = make_thread("expense_approval", EXPENSE, staff)
    run = thread.runs.get()

    with pytest.raises(RuntimeError, match=NESTED):
        nested(lambda: services.claim_run(run_id=run.pk, holder=services.lease_holder()))
    with pytest.raises(RuntimeError, match=NESTED):
        nested(lambda: services.start_thread(workflow="expense_approval", input=EXPENSE, actor=staff))


def test_the_in_transaction_helpers_refuse_to_run_outside_one(expense: Thread, admin: User):
    with pytest.raises(RuntimeError, match="runs inside the caller's transaction"):
        services.cancel_in_transaction(thread=expense, actor=admin)
    with pytest.raises(RuntimeError, match="runs inside the caller's transaction"):
        services.resume_in_transaction(
            thread=expense, spec=registry.get(expense.workflow), actor=admin, proceed=True
        )

    expense.refresh_from_db()
    assert expense.status == Thread.Status.INTERRUPTED


@pytest.mark.django_db(transaction=False)
def test_inside_a_tests_own_transaction_the_services_still_run(staff: User):
    # pytest-django's `db` wraps a test in django.test.TestCase's atomic blocks, which a durable
    # block is allowed inside (Django marks them), so such tests can call the services.
    thread = services.start_thread(workflow="expense_approval", input=EXPENSE, actor=staff)

    assert thread.runs.count() == 1
