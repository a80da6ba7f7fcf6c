"""Each demo workflow, end to end: started, run by the worker's own code, decided, finished."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from approvals import deadlines
from approvals import services as approvals
from approvals.models import Approval
from tests.factories import decide, head, make_thread, make_user, open_review, run_queued
from workflows import services
from workflows.models import Thread

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("doorbell")]


def test_seed_demo_fails_at_step_3_then_a_retry_finishes_with_count_3(staff: User):
    thread = make_thread("seed_demo", {"count": 0}, staff)
    run_queued(thread)
    assert thread.status == Thread.Status.FAILED
    # What the admin's retry page and the thread page show: the exception, not LangGraph's notes.
    assert thread.error_summary.endswith(
        "SimulatedCrash: Simulated crash in step 3 (it fails on the thread's first run only)"
    )

    services.retry_thread(thread=thread, actor=staff)
    run_queued(thread)

    assert thread.status == Thread.Status.COMPLETED
    assert head(thread).values == {"count": 3}


def paused_expense(staff: User, description: str, amount: float) -> Thread:
    thread = make_thread(
        "expense_approval",
        {"employee": "Ada", "description": description, "amount": amount, "category": "travel"},
        staff,
    )
    run_queued(thread)
    assert thread.status == Thread.Status.INTERRUPTED
    return thread


def test_expense_approval_pays_the_amount_the_reviewer_approved(staff: User):
    finance = make_user("fiona", groups=["finance"])
    thread = paused_expense(staff, "Train to Lyon", 120.0)
    assert head(thread).values["summary"] == "Ada claims 120.00 for travel: Train to Lyon."

    decide(open_review(thread, "pay"), finance, "approve", updates={"approved": True, "amount": 99.5})
    run_queued(thread)

    assert thread.status == Thread.Status.COMPLETED
    assert head(thread).values["outcome"] == "paid 99.50"


@pytest.mark.parametrize(
    ("action", "outcome"),
    [("approve", "paid 30.00"), ("reject", "rejected")],
)
def test_expense_approval_follows_the_button_without_the_box_being_ticked(
    staff: User, action: str, outcome: str
):
    finance = make_user("fiona", groups=["finance"])
    thread = paused_expense(staff, "Lunch", 30.0)

    decide(open_review(thread, "pay"), finance, action, comment="checked")
    run_queued(thread)

    assert thread.status == Thread.Status.COMPLETED
    assert head(thread).values["outcome"] == outcome


def test_content_review_publishes_the_draft_after_one_rewrite(staff: User):
    editor = make_user("eddie", groups=["editors"])
    thread = make_thread("content_review", {"topic": "release notes", "audience": "admins"}, staff)
    run_queued(thread)

    decide(open_review(thread, "review"), editor, "respond", response="mention the upgrade steps")
    run_queued(thread)
    decide(open_review(thread, "review"), editor, "approve")
    run_queued(thread)

    values = head(thread).values
    assert thread.status == Thread.Status.COMPLETED
    assert values["status"] == "published"
    assert values["revision"] == 2
    assert values["published"] == (
        "Release notes: what admins should know. (Revised: mention the upgrade steps)"
    )


def test_parallel_approval_is_signed_when_legal_and_finance_both_approve(staff: User):
    signer = make_user("cora", groups=["contracts"])
    thread = make_thread("parallel_approval", {"counterparty": "Acme", "value": 5000.0}, staff)
    run_queued(thread)

    decide(open_review(thread, "legal"), signer, "approve")
    run_queued(thread)
    decide(open_review(thread, "finance"), signer, "approve")
    run_queued(thread)

    values = head(thread).values
    assert thread.status == Thread.Status.COMPLETED
    assert values["outcome"] == "signed"
    assert sorted(values["signoffs"]) == ["finance:approved", "legal:approved"]


def test_parallel_approval_is_declined_when_either_team_rejects(staff: User):
    signer = make_user("cora", groups=["contracts"])
    thread = make_thread("parallel_approval", {"counterparty": "Acme", "value": 5000.0}, staff)
    run_queued(thread)

    decide(open_review(thread, "legal"), signer, "reject")
    decide(open_review(thread, "finance"), signer, "approve")
    run_queued(thread)

    values = head(thread).values
    assert thread.status == Thread.Status.COMPLETED
    assert values["outcome"] == "declined"
    assert sorted(values["signoffs"]) == ["finance:approved", "legal:rejected"]


ORDER = {"supplier": "Northwind", "item": "12 monitors", "amount": 3480.0}


def test_purchase_order_is_placed_after_two_different_purchasing_approvals(staff: User):
    buyer = make_user("bea", groups=["purchasing"])
    second = make_user("ben", groups=["purchasing"])
    thread = make_thread("purchase_order", ORDER, buyer)
    run_queued(thread)
    review = open_review(thread)

    # Bea raised it, so she may not approve it (segregation of duties).
    with pytest.raises(approvals.DecisionRefused):
        decide(review, buyer, "approve")
    outsider = make_user("carl", groups=["purchasing"])
    assert isinstance(decide(review, outsider, "approve"), Approval)
    assert thread.runs.count() == 1
    decide(review, second, "approve")
    run_queued(thread)

    assert thread.status == Thread.Status.COMPLETED
    assert head(thread).values["outcome"] == "ordered from Northwind for 3480.00"


def test_purchase_order_goes_to_finance_when_a_day_passes(staff: User):
    thread = make_thread("purchase_order", ORDER, staff)
    run_queued(thread)
    review = open_review(thread)

    deadlines.sweep_deadlines(now=timezone.now() + timedelta(hours=24, minutes=1))

    review.refresh_from_db()
    assert review.responsible_group == "finance"
    assert review.escalated_from == "purchasing"
