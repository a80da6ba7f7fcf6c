"""Deciding reviews (approvals.services.decide): what a decision does, and what it refuses."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from approvals import queries
from approvals.models import Decision, Review
from approvals.services import AlreadyDecided, InvalidDecision, StaleReview
from tests.factories import (
    active_run,
    dead_holder,
    decide,
    head,
    make_thread,
    make_user,
    open_review,
    open_reviews,
    paused,
    row_counts,
    run_queued,
)
from tests.fake_workflows import build_two_gates
from tests.pages import expense_thread
from workflows import registry, services
from workflows.models import Run, Thread

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("doorbell")]


@pytest.fixture
def expense(staff: User) -> Thread:
    """An expense claim paused before `pay`, its review open."""
    return expense_thread(staff, title="")


@pytest.fixture
def post(staff: User) -> Thread:
    """A drafted post waiting in the Agent Inbox."""
    thread = make_thread("content_review", {"topic": "release notes", "audience": "admins"}, staff)
    run_queued(thread)
    assert thread.status == Thread.Status.INTERRUPTED
    return thread


@pytest.fixture
def contract(staff: User) -> Thread:
    """A contract waiting on legal and finance at once."""
    thread = make_thread("parallel_approval", {"counterparty": "Acme", "value": 5000.0}, staff)
    run_queued(thread)
    assert thread.status == Thread.Status.INTERRUPTED
    return thread


# -- breakpoints: expense_approval ------------------------------------------------------------


def test_approving_with_edits_pays_the_edited_amount(expense: Thread, reviewer: User):
    decision = decide(open_review(expense), reviewer, "approve", updates={"amount": 99.5, "approved": True})
    run_queued(expense)

    decision.refresh_from_db()
    assert decision.applied_at is not None
    assert expense.status == Thread.Status.COMPLETED
    assert head(expense).values["outcome"] == "paid 99.50"


def test_second_decision_is_refused_naming_who_decided_and_when(
    expense: Thread, reviewer: User, other_reviewer: User
):
    review = open_review(expense)
    first = decide(review, reviewer, "approve", updates={"approved": True})
    before = row_counts()

    with pytest.raises(AlreadyDecided) as refused:
        decide(review, other_reviewer, "reject")

    when = timezone.localtime(first.created_at).strftime("%Y-%m-%d %H:%M:%S")
    assert "by rita at " in str(refused.value)
    assert when in str(refused.value)
    assert row_counts() == before


def test_a_decision_rendered_from_another_checkpoint_is_refused(expense: Thread, reviewer: User):
    review = open_review(expense)
    earlier = next(
        s
        for s in services.engine.graph_for("expense_approval").get_state_history(
            services.engine.config_for(expense.thread_id)
        )
        if s.next == ("draft",)
    )
    before = row_counts()

    with pytest.raises(StaleReview, match="moved on"):
        decide(review, reviewer, "approve", checkpoint_id=services.engine.checkpoint_id_of(earlier))

    assert row_counts() == before
    review.refresh_from_db()
    assert review.status == Review.Status.OPEN


@pytest.mark.parametrize("field", ["description", "salary"])
def test_editing_a_field_that_is_not_editable_is_refused_and_writes_nothing(
    expense: Thread, reviewer: User, field: str
):
    before, state = row_counts(), head(expense).values

    with pytest.raises(InvalidDecision, match=f"{field}: this field cannot be edited"):
        decide(open_review(expense), reviewer, "approve", updates={field: "x", "approved": True})

    assert row_counts() == before
    assert head(expense).values == state


def test_an_edit_of_the_wrong_type_is_refused_and_writes_nothing(expense: Thread, reviewer: User):
    before, state = row_counts(), head(expense).values

    with pytest.raises(InvalidDecision):
        decide(open_review(expense), reviewer, "approve", updates={"amount": "lots", "approved": True})

    assert row_counts() == before
    assert head(expense).values == state


def test_a_user_outside_the_reviewer_group_is_refused(expense: Thread):
    editor = make_user("eddie", groups=["editors"])
    before = row_counts()

    with pytest.raises(InvalidDecision, match="not a reviewer of this workflow"):
        decide(open_review(expense), editor, "approve")

    assert row_counts() == before


def test_rejecting_an_expense_takes_the_reject_branch_even_if_approved_was_ticked(
    expense: Thread, reviewer: User
):
    decide(open_review(expense), reviewer, "reject", updates={"approved": True}, comment="not a trip")
    run_queued(expense)

    assert expense.status == Thread.Status.COMPLETED
    assert head(expense).values["approved"] is False
    assert head(expense).values["outcome"] == "rejected"


@pytest.fixture
def two_gates(staff: User) -> Iterator[Thread]:
    """A thread stopped at two breakpoints at once (interrupt_before two parallel nodes)."""
    workflow = registry.Workflow(
        name="two_gates",
        title="Two gates",
        builder=build_two_gates,
        reviewer_group="finance",
        interrupt_before=("ship", "bill"),
    )
    with paused(workflow, {}, staff) as thread:
        assert [review.node for review in open_reviews(thread)] == ["bill", "ship"]
        yield thread


def test_rejecting_at_a_breakpoint_of_a_workflow_without_on_reject_cancels_the_thread(
    two_gates: Thread, reviewer: User
):
    decide(open_review(two_gates, "ship"), reviewer, "reject", comment="not this week")

    two_gates.refresh_from_db()
    assert two_gates.status == Thread.Status.CANCELLED
    assert active_run(two_gates) is None
    assert set(head(two_gates).next) == {"ship", "bill"}


def test_rejecting_one_breakpoint_withdraws_the_other_open_reviews(two_gates: Thread, reviewer: User):
    decide(open_review(two_gates, "ship"), reviewer, "reject")

    two_gates.refresh_from_db()
    assert two_gates.status == Thread.Status.CANCELLED
    assert open_reviews(two_gates) == []
    assert Review.objects.get(thread=two_gates, node="bill").status == Review.Status.CANCELLED


def test_a_review_whose_pause_was_passed_does_not_stay_open(two_gates: Thread, reviewer: User):
    decide(open_review(two_gates, "ship"), reviewer, "approve")
    run_queued(two_gates)
    assert two_gates.status == Thread.Status.COMPLETED

    leftover = Review.objects.get(thread=two_gates, node="bill")
    assert leftover.status == Review.Status.CANCELLED
    with pytest.raises(StaleReview):
        decide(leftover, reviewer, "approve")


# -- Agent Inbox: content_review ----------------------------------------------------------------


def test_accept_publishes_the_draft(post: Thread, reviewer: User):
    draft = head(post).values["draft"]

    decide(open_review(post), reviewer, "approve")
    run_queued(post)

    assert post.status == Thread.Status.COMPLETED
    assert head(post).values["published"] == draft
    assert head(post).values["status"] == "published"


def test_edit_publishes_the_edited_body(post: Thread, reviewer: User):
    decide(open_review(post), reviewer, "edit", response={"title": "Notes", "body": "Shorter, please."})
    run_queued(post)

    assert head(post).values["published"] == "Shorter, please."
    assert head(post).values["status"] == "published"


def test_the_history_credits_worker_steps_to_the_worker_and_edits_to_the_reviewer(
    post: Thread, reviewer: User, admin: User
):
    decide(open_review(post), reviewer, "respond", response="name the version", updates={"audience": "all"})
    run_queued(post)
    first_step = min(
        (entry for entry in queries.history(post) if entry.source == "loop" and entry.step is not None),
        key=lambda entry: entry.step or 0,
    )
    services.rollback_thread(
        thread=post,
        actor=admin,
        checkpoint_id=first_step.checkpoint_id,
        reason="audience",
        updates={"audience": "admins"},
    )

    people = {(entry.source, entry.actor) for entry in queries.history(post)}

    workers = {actor for source, actor in people if source in ("loop", "input")}
    assert workers == {"worker", f"worker, with edits by {reviewer.username}"}
    assert ("fork", admin.username) in people
    assert ("update", admin.username) in people


def test_respond_rewrites_the_draft_and_opens_a_new_review(post: Thread, reviewer: User):
    first = open_review(post)

    decide(first, reviewer, "respond", response="name the version")
    run_queued(post)

    second = open_review(post)
    assert post.status == Thread.Status.INTERRUPTED
    assert second.pk != first.pk
    assert second.checkpoint_id != first.checkpoint_id
    assert second.value[0]["action_request"]["args"]["body"].endswith("(Revised: name the version)")
    assert head(post).values["revision"] == 2


def test_ignore_ends_the_thread_as_ignored(post: Thread, reviewer: User):
    decide(open_review(post), reviewer, "ignore")
    run_queued(post)

    assert post.status == Thread.Status.COMPLETED
    assert head(post).values["status"] == "ignored"
    assert "published" not in head(post).values


def test_respond_is_refused_once_the_draft_has_had_its_last_revision(post: Thread, reviewer: User):
    for note in ("one", "two"):
        decide(open_review(post), reviewer, "respond", response=note)
        run_queued(post)
    last = open_review(post)
    assert last.value[0]["config"]["allow_respond"] is False
    before = row_counts()

    with pytest.raises(InvalidDecision, match="'respond' is not allowed here"):
        decide(last, reviewer, "respond", response="three")

    assert row_counts() == before


# -- parallel interrupts: parallel_approval -----------------------------------------------------


def test_both_parallel_reviews_are_open_at_once(contract: Thread):
    reviews = open_reviews(contract)

    assert [review.node for review in reviews] == ["finance", "legal"]
    assert reviews[0].checkpoint_id == reviews[1].checkpoint_id
    assert reviews[0].interrupt_id != reviews[1].interrupt_id


def test_two_decisions_in_a_row_resume_the_thread_once_with_both_answers(
    contract: Thread, reviewer: User, other_reviewer: User
):
    decide(open_review(contract, "legal"), reviewer, "approve")
    decide(open_review(contract, "finance"), other_reviewer, "approve")

    resumes = list(contract.runs.filter(kind=Run.Kind.RESUME))
    assert len(resumes) == 1
    assert len(resumes[0].command["resume"]) == 2

    run_queued(contract)

    assert contract.status == Thread.Status.COMPLETED
    assert head(contract).values["outcome"] == "signed"
    assert contract.runs.filter(kind=Run.Kind.RESUME).count() == 1


def test_a_second_answer_editing_a_field_the_first_changed_at_this_pause_is_refused(
    contract: Thread, reviewer: User, other_reviewer: User
):
    decide(open_review(contract, "legal"), reviewer, "approve", updates={"value": 9000.0})
    run_queued(contract)  # legal's edit now waits on the head as a pending write; finance is open
    finance = open_review(contract, "finance")
    before = row_counts()

    with pytest.raises(StaleReview, match="Value was already changed at this pause by another answer"):
        decide(finance, other_reviewer, "approve", updates={"value": 4000.0})

    assert row_counts() == before
    decide(finance, other_reviewer, "approve")
    run_queued(contract)
    assert contract.status == Thread.Status.COMPLETED
    assert (head(contract).values["value"], head(contract).values["outcome"]) == (9000.0, "signed")


def test_a_second_answer_editing_a_field_the_queued_run_carries_is_refused(
    contract: Thread, reviewer: User, other_reviewer: User
):
    decide(open_review(contract, "legal"), reviewer, "approve", updates={"value": 9000.0})

    with pytest.raises(StaleReview, match="Value was already changed"):
        decide(open_review(contract, "finance"), other_reviewer, "approve", updates={"value": 4000.0})

    decide(open_review(contract, "finance"), other_reviewer, "approve", updates={"value": 9000.0})
    run_queued(contract)
    assert contract.status == Thread.Status.COMPLETED
    assert head(contract).values["value"] == 9000.0


def test_a_decision_made_while_a_run_is_running_is_applied_when_it_pauses(
    contract: Thread, reviewer: User, other_reviewer: User
):
    decide(open_review(contract, "legal"), reviewer, "approve")
    running = active_run(contract)
    assert running is not None
    # A worker took the resume run and died; its lease still looks live.
    services.claim_run(run_id=running.pk, holder=dead_holder())

    late = decide(open_review(contract, "finance"), other_reviewer, "approve")
    assert late.applied_at is None
    assert contract.runs.filter(kind=Run.Kind.RESUME).count() == 1

    run_queued(contract)  # the redelivered run pauses on finance, whose answer is waiting

    late.refresh_from_db()
    assert late.applied_at is not None
    assert contract.status == Thread.Status.QUEUED
    assert open_reviews(contract) == []
    waiting = active_run(contract)
    assert waiting is not None
    assert list(waiting.command["resume"]) == [late.review.interrupt_id]

    run_queued(contract)

    assert contract.status == Thread.Status.COMPLETED
    assert head(contract).values["outcome"] == "signed"
    assert Decision.objects.filter(review__thread=contract, applied_at__isnull=True).count() == 0
