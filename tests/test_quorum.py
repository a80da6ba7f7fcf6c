"""Four-eyes and quorum (issue 12, item 2): a workflow that needs several approvals keeps its
review open, pinned to its checkpoint, until enough distinct reviewers approved; any reject
ends it; a later approver who changes the edits restarts the count; the person who started a
thread may not approve it. On SQLite and PostgreSQL; the race on PostgreSQL only."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ImproperlyConfigured
from django.urls import reverse

from api import services as keys
from approvals import services as approvals
from approvals.models import Approval, Decision, Review
from tests.factories import (
    EXPENSE,
    audit_actions,
    make_thread,
    make_user,
    open_review,
    row_counts,
    run_queued,
)
from tests.fake_workflows import four_eyes
from tests.html import form_fields
from tests.pages import bulk_form, client_for, opened
from tests.races import race
from workflows import registry
from workflows.models import AuditEvent, Run, Thread

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("doorbell")]


@pytest.fixture
def fred() -> User:
    """A third reviewer, in finance like Quinn."""
    return make_user("fred", groups=["quorum", "quorum_finance"])


@pytest.fixture
def claim(staff: User) -> Thread:
    """An expense claim of the two-approver workflow, started by Sam (who reviews nothing)."""
    thread = make_thread("test_four_eyes", EXPENSE, staff)
    run_queued(thread)
    assert thread.status == Thread.Status.INTERRUPTED
    return thread


def approve(review: Review, actor: User, **kwargs: Any) -> Decision | Approval:
    kwargs.setdefault("checkpoint_id", review.checkpoint_id)
    return approvals.decide(review=review, actor=actor, action="approve", **kwargs)


def events(thread: Thread, action: str) -> list[dict[str, Any]]:
    return [event.data for event in AuditEvent.objects.filter(thread=thread, action=action).order_by("id")]


# -- registration ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ({"approvals_required": 0}, "must be 1 or more, not 0"),
        ({"approvals_required": -2}, "must be 1 or more, not -2"),
        ({"approvals_required": True}, "whole number of approvals"),
        ({"approvals_required": "two"}, "whole number of approvals"),
        ({"approvals_required": 2.5}, "whole number of approvals"),
        ({"approvals_required": "all"}, 'approvals_required="all" needs approval_groups'),
        ({"approvals_required": "all", "approval_groups": ("a", "a")}, "names a more than once"),
        ({"approvals_required": "all", "approval_groups": ("a", "")}, "non-empty group names"),
        ({"approvals_required": "all", "approval_groups": "legal"}, "not the string 'legal'"),
        ({"approvals_required": 2, "approval_groups": ("a",)}, 'only for approvals_required="all"'),
        ({"starter_may_approve": "no"}, "starter_may_approve must be True or False"),
    ],
)
def test_a_quorum_that_cannot_be_met_is_refused_at_registration(rules: dict[str, Any], message: str):
    workflow = registry.Workflow(
        name="test_bad_quorum", title="Bad", builder=four_eyes, reviewer_group="quorum", **rules
    )
    with pytest.raises(ImproperlyConfigured, match="test_bad_quorum") as refused:
        registry.add(workflow)
    assert message in str(refused.value)
    with pytest.raises(LookupError):
        registry.get("test_bad_quorum")


def test_all_of_the_groups_needs_a_reviewer_group_to_show_the_reviews_to():
    workflow = registry.Workflow(
        name="test_bad_quorum",
        title="Bad",
        builder=four_eyes,
        approvals_required="all",
        approval_groups=("a",),
    )
    with pytest.raises(ImproperlyConfigured, match="needs a reviewer_group"):
        registry.add(workflow)


def test_a_workflow_needs_one_approval_and_forbids_the_starter_by_default():
    spec = registry.get("expense_approval")
    assert (spec.approvals_required, spec.approvals_needed, spec.needs_quorum) == (1, 1, False)
    assert spec.starter_may_approve is False
    assert registry.get("test_all_groups").approvals_needed == 2


# -- two approvers -----------------------------------------------------------------------------


def test_the_first_approval_keeps_the_review_open_and_the_second_resumes_the_thread_once(
    claim: Thread, quinn: User, fred: User
):
    review = open_review(claim)
    approvals.claim_review(review=review, actor=quinn)

    first = approve(review, quinn, comment="looks right")

    assert isinstance(first, Approval)
    review.refresh_from_db()
    assert review.status == Review.Status.OPEN
    assert review.claimed_by is None, "the approver's claim ends with their approval"
    assert review.checkpoint_id == first.checkpoint_id
    claim.refresh_from_db()
    assert claim.status == Thread.Status.INTERRUPTED
    assert not claim.runs.filter(kind=Run.Kind.RESUME).exists()
    assert not Decision.objects.filter(review=review).exists()
    [approved] = events(claim, "review.approved")
    assert (approved["progress"], approved["given"], approved["needed"]) == ("1 of 2", 1, 2)
    assert approved["comment"] == "looks right"

    final = approve(review, fred)

    assert isinstance(final, Decision)
    assert (final.actor, final.action) == (fred, "approve")
    review.refresh_from_db()
    assert review.status == Review.Status.DECIDED
    assert claim.runs.filter(kind=Run.Kind.RESUME).count() == 1
    assert [data["progress"] for data in events(claim, "review.approved")] == ["1 of 2", "2 of 2"]
    [decided] = events(claim, "review.decided")
    assert decided["approved_by"] == ["quinn", "fred"]
    assert audit_actions(claim)[-3:] == ["thread.resumed", "review.approved", "review.decided"]
    run_queued(claim)
    assert claim.status == Thread.Status.COMPLETED
    assert approvals_state(claim)["outcome"] == "paid 120.00"


def approvals_state(thread: Thread) -> dict[str, Any]:
    from tests.factories import head

    values = head(thread).values
    assert isinstance(values, dict)
    return values


def test_the_same_reviewer_cannot_approve_twice(claim: Thread, quinn: User):
    review = open_review(claim)
    approve(review, quinn)
    before = row_counts()

    with pytest.raises(approvals.InvalidDecision, match=r"You already approved this review .* \(1 of 2\)"):
        approve(review, quinn)

    assert row_counts() == before
    assert Approval.objects.filter(review=review).count() == 1


def test_a_reject_after_one_approval_ends_the_review_at_once(claim: Thread, quinn: User, fred: User):
    review = open_review(claim)
    approve(review, quinn)

    decision = approvals.decide(
        review=review, actor=fred, action="reject", checkpoint_id=review.checkpoint_id, comment="no receipt"
    )

    assert decision.action == "reject"
    review.refresh_from_db()
    assert review.status == Review.Status.DECIDED
    run_queued(claim)
    assert approvals_state(claim)["outcome"] == "rejected"
    with pytest.raises(approvals.AlreadyDecided, match="reject"):
        approve(review, make_user("third", groups=["quorum"]))


def test_only_approve_and_reject_are_offered_when_approvals_are_counted(claim: Thread):
    assert approvals.allowed_actions(open_review(claim)) == ["approve", "reject"]


# -- edits: shown to the next approver, and a change restarts the count ------------------------


def test_the_next_approver_sees_the_first_approvers_edits_as_a_diff_and_approves_them(
    claim: Thread, quinn: User, fred: User
):
    review = open_review(claim)
    approve(review, quinn, updates={"amount": 99.5})

    page = client_for(fred).get(reverse("approvals:review", args=[review.pk]))

    html = page.content.decode()
    assert page.status_code == 200
    assert "1 of 2" in html
    assert "it still needs 1 more approval" in html
    row = html[html.index('data-approver="quinn"') :]
    row = row[: row.index("</li>")]
    assert "amount" in row
    assert "<del>120.0</del>" in row
    assert "<ins>99.5</ins>" in row
    # The form starts from the edits approved so far: leaving it as shown is no edit.
    fields = form_fields(html, "decision-form")
    assert fields["state__amount"] == "99.5"

    response = client_for(fred).post(
        reverse("approvals:decide", args=[review.pk]), {**fields, "action": "approve"}
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    decision = Decision.objects.get(review=review)
    assert decision.actor == fred
    assert decision.updates == {"after": {"amount": 99.5, "approved": True}}
    run_queued(claim)
    assert approvals_state(claim)["outcome"] == "paid 99.50"


def test_a_later_approver_who_changes_the_edits_restarts_the_count(claim: Thread, quinn: User, fred: User):
    review = open_review(claim)
    first = approve(review, quinn, updates={"amount": 99.5})
    assert isinstance(first, Approval)

    second = approve(review, fred, updates={"amount": 90.0, "category": "meals"})

    assert isinstance(second, Approval), "a changed edit is the first approval of a new count"
    first.refresh_from_db()
    assert first.superseded_at is not None
    assert first.superseded_by == second
    assert second.edited
    assert second.updates == {"after": {"amount": 90.0, "category": "meals"}}
    assert approvals.quorum_of(review, spec=registry.get("test_four_eyes")).progress == "1 of 2"
    [reset] = events(claim, "review.approvals_reset")
    assert reset["superseded_approvers"] == ["quinn"]
    assert [data["progress"] for data in events(claim, "review.approved")] == ["1 of 2", "1 of 2"]

    # Quinn's approval no longer counts, so she may approve again: the new edits, as shown.
    decision = approve(review, quinn, updates={"amount": 90.0})

    assert isinstance(decision, Decision)
    assert decision.updates == {"after": {"amount": 90.0, "category": "meals", "approved": True}}
    assert claim.runs.filter(kind=Run.Kind.RESUME).count() == 1
    run_queued(claim)
    state = approvals_state(claim)
    assert (state["amount"], state["category"], state["outcome"]) == (90.0, "meals", "paid 90.00")


def test_setting_a_field_back_to_the_saved_value_is_a_change_too(claim: Thread, quinn: User, fred: User):
    review = open_review(claim)
    approve(review, quinn, updates={"amount": 99.5})

    undo = approve(review, fred, updates={"amount": 120.0})

    assert isinstance(undo, Approval)
    assert undo.edited
    assert undo.updates == {"after": {"amount": 120.0}}
    assert approvals.quorum_of(review, spec=registry.get("test_four_eyes")).given == 1


# -- segregation of duties ---------------------------------------------------------------------


def test_the_starter_may_not_approve_their_own_thread_but_may_reject_it(quinn: User, fred: User):
    thread = make_thread("test_four_eyes", EXPENSE, quinn)
    run_queued(thread)
    review = open_review(thread)
    before = row_counts()

    with pytest.raises(approvals.InvalidDecision, match="You started this thread"):
        approve(review, quinn)

    assert row_counts() == before
    decision = approvals.decide(
        review=review, actor=quinn, action="reject", checkpoint_id=review.checkpoint_id
    )
    assert decision.action == "reject"


def test_segregation_of_duties_applies_to_a_workflow_that_needs_one_approval(
    reviewer: User, other_reviewer: User
):
    thread = make_thread("expense_approval", EXPENSE, reviewer)
    run_queued(thread)
    review = open_review(thread)

    with pytest.raises(approvals.InvalidDecision, match="segregation of duties"):
        approvals.decide(review=review, actor=reviewer, action="approve", checkpoint_id=review.checkpoint_id)

    decision = approvals.decide(
        review=review, actor=other_reviewer, action="approve", checkpoint_id=review.checkpoint_id
    )
    assert isinstance(decision, Decision)


def test_a_workflow_may_let_the_starter_approve(reviewer: User):
    workflow = registry.Workflow(
        name="test_self_approval",
        title="Self-approved expenses",
        builder=four_eyes,
        reviewer_group="finance",
        editable=("approved",),
        interrupt_before=("pay",),
        on_approve={"approved": True},
        starter_may_approve=True,
    )
    from tests.factories import registered

    with registered(workflow):
        thread = make_thread("test_self_approval", EXPENSE, reviewer)
        run_queued(thread)
        review = open_review(thread)
        decision = approvals.decide(
            review=review, actor=reviewer, action="approve", checkpoint_id=review.checkpoint_id
        )
    assert isinstance(decision, Decision)


def test_the_starter_sees_approve_disabled_with_the_reason_and_a_forged_approve_is_refused(quinn: User):
    thread = make_thread("test_four_eyes", EXPENSE, quinn)
    run_queued(thread)
    review = open_review(thread)
    client = client_for(quinn)

    html = client.get(reverse("approvals:review", args=[review.pk])).content.decode()

    assert 'id="approve-refusal"' in html
    assert "You started this thread, so you may not approve it" in html
    approve_input = next(tag for tag in html.split("<input") if 'value="approve"' in tag)
    assert "disabled" in approve_input
    reject_input = next(tag for tag in html.split("<input") if 'value="reject"' in tag)
    assert "disabled" not in reject_input
    assert "checked" in reject_input

    fields = form_fields(html, "decision-form")
    response = client.post(reverse("approvals:decide", args=[review.pk]), {**fields, "action": "approve"})

    assert response.status_code == 422
    assert "You started this thread" in response.content.decode()
    assert not Approval.objects.filter(review=review).exists()
    assert not Decision.objects.filter(review=review).exists()


def test_bulk_approve_records_partial_approvals_and_skips_what_the_user_may_not_approve(
    claim: Thread, quinn: User
):
    own = make_thread("test_four_eyes", {**EXPENSE, "employee": "Quinn"}, quinn)
    run_queued(own)
    theirs, mine = open_review(claim), open_review(own)
    opened(quinn, theirs, mine)

    response = client_for(quinn).post(
        reverse("approvals:bulk_approve"), bulk_form(theirs, mine), headers={"HX-Request": "true"}
    )

    html = response.content.decode()
    assert "approval recorded (1 of 2); it still needs 1 more approval" in html
    assert "not approved: You started this thread" in html
    assert Approval.objects.filter(review=theirs, actor=quinn).count() == 1
    assert not Approval.objects.filter(review=mine).exists()


# -- one approval from each group ---------------------------------------------------------------


def test_all_of_the_groups_needs_a_member_of_each(staff: User, quinn: User, fred: User, lena: User):
    thread = make_thread("test_all_groups", EXPENSE, staff)
    run_queued(thread)
    review = open_review(thread)
    first = approve(review, quinn)
    assert isinstance(first, Approval)
    assert first.group == "quorum_finance"

    with pytest.raises(approvals.InvalidDecision, match="needs an approval from a member of “quorum_legal”"):
        approve(review, fred)

    decision = approve(review, lena)
    assert isinstance(decision, Decision)
    assert Approval.objects.get(review=review, actor=lena).group == "quorum_legal"
    assert events(thread, "review.decided")[0]["approved_by"] == ["quinn", "lena"]


def test_a_member_of_both_groups_stands_for_one_of_them_only(staff: User, lena: User):
    both = make_user("bo", groups=["quorum", "quorum_finance", "quorum_legal"])
    thread = make_thread("test_all_groups", EXPENSE, staff)
    run_queued(thread)
    review = open_review(thread)

    first = approve(review, both)

    assert isinstance(first, Approval)
    assert first.group == "quorum_finance"
    with pytest.raises(approvals.InvalidDecision, match="already approved"):
        approve(review, both)
    assert isinstance(approve(review, lena), Decision)


# -- the queue and the API ------------------------------------------------------------------------


def test_the_queue_row_shows_how_many_approvals_count(claim: Thread, quinn: User, fred: User):
    review = open_review(claim)
    row = f'id="review-{review.pk}"'

    def row_html() -> str:
        html = client_for(fred).get(reverse("approvals:queue")).content.decode()
        part = html[html.index(row) :]
        return part[: part.index("</tr>")]

    assert "0 of 2 approvals" in row_html()
    approve(review, quinn)
    assert "1 of 2 approvals" in row_html()


def test_a_partial_approval_through_the_api_is_a_202_that_creates_no_run(
    claim: Thread, quinn: User, fred: User
):
    from django.test import Client

    def resume(user: User) -> Any:
        secret = keys.create_api_key(user=user, name="tests", actor=None).secret
        return Client().post(
            f"/api/threads/{claim.public_id}/runs",
            json.dumps({"assistant_id": "test_four_eyes", "command": {"resume": "approve"}}),
            content_type="application/json",
            headers={"x-api-key": secret},
        )

    runs_before = claim.runs.count()
    response = resume(quinn)

    assert response.status_code == 202, response.content
    body = response.json()
    assert body["run_id"] is None
    assert body["status"] == "awaiting_approvals"
    assert body["detail"].startswith("approval recorded (1 of 2)")
    assert body["approvals"] == [
        {
            "interrupt_id": open_review(claim).interrupt_id,
            "given": 1,
            "needed": 2,
            "approved_by": ["quinn"],
            "missing_groups": [],
        }
    ]
    assert claim.runs.count() == runs_before

    again = resume(quinn)
    assert again.status_code == 422
    assert "already approved" in again.content.decode()

    final = resume(fred)
    assert final.status_code == 200, final.content
    assert final.json()["run_id"] == str(claim.runs.get(kind=Run.Kind.RESUME).public_id)


# -- two approvers at the same moment ----------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize("rounds", range(3))
def test_two_approvers_at_the_same_moment_resume_the_thread_exactly_once(
    claim: Thread, quinn: User, fred: User, rounds: int
):
    review = open_review(claim)

    results = race(lambda: approve(review, quinn), lambda: approve(review, fred))

    assert sorted(type(result).__name__ for result in results) == ["Approval", "Decision"], results
    assert Approval.objects.filter(review=review, superseded_at__isnull=True).count() == 2
    assert claim.runs.filter(kind=Run.Kind.RESUME).count() == 1
    assert Decision.objects.filter(review=review).count() == 1
    assert [data["progress"] for data in events(claim, "review.approved")] == ["1 of 2", "2 of 2"]


@pytest.mark.postgres
def test_three_approvers_at_the_same_moment_one_resume_and_one_clean_refusal(
    claim: Thread, quinn: User, fred: User, lena: User
):
    review = open_review(claim)

    results = race(
        lambda: approve(review, quinn), lambda: approve(review, fred), lambda: approve(review, lena)
    )

    kinds = sorted(type(result).__name__ for result in results)
    assert kinds == ["AlreadyDecided", "Approval", "Decision"], results
    assert claim.runs.filter(kind=Run.Kind.RESUME).count() == 1
    assert Approval.objects.filter(review=review).count() == 2


def test_the_admin_shows_a_reviews_approvals_read_only(claim: Thread, quinn: User, admin: User):
    review = open_review(claim)
    approve(review, quinn, comment="fine by me")

    page = client_for(admin).get(reverse("admin:approvals_review_change", args=[review.pk]))

    html = page.content.decode()
    assert page.status_code == 200
    assert "Approvals" in html
    assert "quinn" in html
    assert "fine by me" in html
    assert 'name="approvals-0-comment"' not in html, "approvals are not editable in the admin"
