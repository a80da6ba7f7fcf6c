"""Claims moved by others (issue 12, item 5): a lead or an admin takes over or reassigns a
claimed review; the holder hands it to a colleague of the review's group."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from approvals import services
from approvals.models import Decision, Review
from approvals.signals import review_reassigned
from tests.factories import decide, make_user, row_counts
from tests.html import form_fields
from tests.pages import HX, client_for, expense_thread, review_url
from tests.races import race
from workflows import registry
from workflows.models import AuditEvent

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("doorbell", "led")]


@pytest.fixture
def led() -> Iterator[registry.Workflow]:
    """expense_approval with a lead group, `finance-leads`, for the test."""
    original = registry.get("expense_approval")
    registry.remove(original.name)
    registry.add(dataclasses.replace(original, lead_group="finance-leads"))
    try:
        yield registry.get(original.name)
    finally:
        registry.remove(original.name)
        registry.add(original)


@pytest.fixture
def lead() -> User:
    """Lee, a finance reviewer who leads the team."""
    return make_user("lee", groups=["finance", "finance-leads"])


@pytest.fixture
def outsider() -> User:
    return make_user("uma", groups=["editors"])


@pytest.fixture
def moves() -> Iterator[list[dict[str, Any]]]:
    """What review_reassigned was sent with."""
    seen: list[dict[str, Any]] = []

    def receive(**kwargs: Any) -> None:
        seen.append(kwargs)

    review_reassigned.connect(receive, dispatch_uid="test-moves")
    yield seen
    review_reassigned.disconnect(dispatch_uid="test-moves")


def claimed_by(review: Review, user: User) -> Review:
    return services.claim_review(review=review, actor=user)


def last_event(review: Review) -> AuditEvent:
    event = AuditEvent.objects.filter(thread=review.thread).order_by("-id").first()
    assert event is not None
    return event


def test_a_lead_takes_over_a_claimed_review_and_the_holder_is_told(
    review: Review, reviewer: User, lead: User, moves: list[dict[str, Any]]
):
    claimed_by(review, reviewer)

    services.take_over_review(review=review, actor=lead)

    review.refresh_from_db()
    assert review.claimed_by == lead
    event = last_event(review)
    assert event.action == "review.taken_over"
    assert event.actor == lead
    assert event.data["from"] == "rita"
    assert event.data["to"] == "lee"
    assert [(m["previous_holder"], m["new_holder"], m["actor"]) for m in moves] == [(reviewer, lead, lead)]
    assert moves[0]["review"].pk == review.pk


def test_an_admin_reassigns_to_a_colleague_who_can_then_decide_while_the_old_holder_cannot(
    review: Review, reviewer: User, other_reviewer: User, admin: User, moves: list[dict[str, Any]]
):
    claimed_by(review, reviewer)

    services.reassign_review(review=review, actor=admin, to="oscar")

    review.refresh_from_db()
    assert review.claimed_by == other_reviewer
    assert last_event(review).action == "review.reassigned"
    assert moves[0]["previous_holder"] == reviewer
    assert moves[0]["new_holder"] == other_reviewer
    with pytest.raises(services.ReviewClaimed, match="being reviewed by oscar"):
        decide(review, reviewer, "approve")
    assert decide(review, other_reviewer, "approve").actor == other_reviewer


def test_the_holder_hands_the_review_to_a_named_colleague(
    review: Review, reviewer: User, other_reviewer: User, moves: list[dict[str, Any]]
):
    claimed_by(review, reviewer)

    services.hand_review(review=review, actor=reviewer, to=other_reviewer)

    review.refresh_from_db()
    assert review.claimed_by == other_reviewer
    event = last_event(review)
    assert (event.action, event.data["from"], event.data["to"]) == ("review.handed_on", "rita", "oscar")
    assert moves[0]["actor"] == reviewer


@pytest.mark.parametrize(
    ("who", "call", "refusal", "message"),
    [
        ("oscar", "take_over", services.NotAllowed, "Only an administrator or a lead"),
        ("oscar", "reassign", services.NotAllowed, "Only an administrator or a lead"),
        ("oscar", "hand", services.NotAllowed, "Only the reviewer who holds this review"),
        ("rita", "hand:uma", services.BadColleague, "uma is not in this review's group (finance)"),
        ("rita", "hand:ivy", services.BadColleague, "ivy cannot take reviews: their account is inactive"),
        ("rita", "hand:nobody", services.BadColleague, "There is no user named 'nobody'"),
        ("rita", "hand:", services.BadColleague, "Name the colleague"),
        ("rita", "hand:rita", services.BadColleague, "name a colleague"),
        ("lee", "reassign:rita", services.BadColleague, "rita already holds this review"),
        ("lee", "reassign:uma", services.BadColleague, "not in this review's group"),
        ("rita", "take_over_self", services.NotAllowed, "Only an administrator or a lead"),
    ],
)
def test_a_move_that_is_not_allowed_or_names_the_wrong_colleague_is_refused_and_writes_nothing(
    review: Review,
    reviewer: User,
    other_reviewer: User,
    lead: User,
    outsider: User,
    who: str,
    call: str,
    refusal: type[Exception],
    message: str,
):
    ivy = make_user("ivy", groups=["finance"])
    ivy.is_active = False
    ivy.save()
    claimed_by(review, reviewer)
    before = row_counts()
    actor = User.objects.get(username=who)
    kind, named, to = call.partition(":")

    with pytest.raises(refusal, match=re.escape(message)):
        _move(kind, review, actor, to if named else None)

    assert row_counts() == before
    review.refresh_from_db()
    assert review.claimed_by == reviewer


def _move(kind: str, review: Review, actor: User, to: str | None) -> Review:
    if kind in ("take_over", "take_over_self"):
        return services.take_over_review(review=review, actor=actor)
    if kind == "reassign":
        return services.reassign_review(review=review, actor=actor, to="oscar" if to is None else to)
    return services.hand_review(review=review, actor=actor, to="rita" if to is None else to)


def test_a_lead_who_does_not_review_the_workflow_may_reassign_but_not_take_over(
    review: Review, reviewer: User, other_reviewer: User
):
    manager = make_user("max", groups=["finance-leads"])
    claimed_by(review, reviewer)

    with pytest.raises(services.NotAllowed, match="you cannot hold its reviews; reassign it instead"):
        services.take_over_review(review=review, actor=manager)
    services.reassign_review(review=review, actor=manager, to="oscar")

    review.refresh_from_db()
    assert review.claimed_by == other_reviewer


def test_a_lead_who_does_not_review_the_workflow_reassigns_from_the_review_page_but_cannot_decide(
    review: Review, reviewer: User, other_reviewer: User
):
    manager = make_user("max", groups=["finance-leads"])
    claimed_by(review, reviewer)
    max_ = client_for(manager)

    page = max_.get(review_url(review))

    assert page.status_code == 200
    assert "Reassign" in page.text
    assert "Take over this review" not in page.text
    assert "Only the reviewers of this workflow decide its reviews." in page.text
    assert 'id="decision-form"' not in page.text
    assert f"review-{review.pk}" not in max_.get(reverse("approvals:queue")).text
    assert max_.get(reverse("approvals:thread", args=[review.thread.public_id])).status_code == 200

    data = form_fields(page.text, "reassign-form")
    response = max_.post(reverse("approvals:reassign", args=[review.pk]), {**data, "to": "oscar"})

    assert response.status_code == 302
    review.refresh_from_db()
    assert review.claimed_by == other_reviewer
    before = row_counts()
    refused = max_.post(
        reverse("approvals:decide", args=[review.pk]),
        {"action": "approve", "checkpoint_id": review.checkpoint_id},
    )
    assert refused.status_code in (403, 409, 422)
    assert row_counts() == before
    assert not Decision.objects.filter(review=review).exists()


def test_an_unclaimed_review_cannot_be_taken_over_but_can_be_assigned(
    review: Review, lead: User, other_reviewer: User
):
    before = row_counts()
    with pytest.raises(services.ClaimRefused, match="Nobody holds this review; claim it instead"):
        services.take_over_review(review=review, actor=lead)
    assert row_counts() == before

    services.reassign_review(review=review, actor=lead, to="oscar")

    review.refresh_from_db()
    assert review.claimed_by == other_reviewer
    assert last_event(review).data["from"] is None


def test_a_decided_review_cannot_be_taken_over_and_the_refusal_names_who_decided(
    review: Review, reviewer: User, lead: User
):
    claimed_by(review, reviewer)
    decide(review, reviewer, "approve")
    before = row_counts()

    with pytest.raises(services.ClaimRefused, match="nothing to take over: This review was already decided"):
        services.take_over_review(review=review, actor=lead)
    with pytest.raises(services.ClaimRefused, match="by rita"):
        services.reassign_review(review=review, actor=lead, to="oscar")

    assert row_counts() == before


# -- the review page -------------------------------------------------------------------------


def claim_box(client: Client, review: Review) -> str:
    page = client.get(review_url(review)).text
    match = re.search(r'<div id="claim".*?</div>', page, re.S)
    assert match
    return match.group(0)


def test_the_forms_show_only_to_who_may_use_them(
    review: Review, reviewer: User, other_reviewer: User, lead: User, admin: User
):
    claimed_by(review, reviewer)

    holder = claim_box(client_for(reviewer), review)
    colleague = claim_box(client_for(other_reviewer), review)
    leader = claim_box(client_for(lead), review)
    superuser = claim_box(client_for(admin), review)

    assert "Hand on" in holder
    assert "Take over" not in holder
    assert "Reassign" not in holder
    assert '<option value="oscar"' in holder
    assert '<option value="rita">' not in holder
    assert "Hand on" not in colleague
    assert "Take over" not in colleague
    assert "Reassign" not in colleague
    assert "Take over this review" in leader
    assert "Reassign" in leader
    assert "Hand on" not in leader
    assert '<option value="lee"' in leader
    assert '<option value="rita">' not in leader
    assert "Take over this review" in superuser
    assert "Reassign" in superuser


def test_taking_over_from_the_page_without_javascript_shows_the_new_holder_in_the_queue(
    review: Review, reviewer: User, lead: User
):
    claimed_by(review, reviewer)
    lee = client_for(lead)

    response = lee.post(reverse("approvals:take_over", args=[review.pk]))

    assert response.status_code == 302
    assert response["Location"] == review_url(review)
    page = lee.get(response["Location"]).text
    assert "The review is now held by lee." in page
    assert "You are reviewing this" in page
    row = client_for(reviewer).get(reverse("approvals:queue")).text
    assert re.search(rf'<tr id="review-{review.pk}">.*?<td>lee</td>', row, re.S)


def test_handing_on_with_the_rendered_form_and_htmx_returns_the_claim_box(
    review: Review, reviewer: User, other_reviewer: User
):
    claimed_by(review, reviewer)
    rita = client_for(reviewer)
    data = form_fields(rita.get(review_url(review)).text, "hand-on-form")
    assert data["to"] == "oscar"

    response = rita.post(reverse("approvals:hand_on", args=[review.pk]), data, **HX)

    assert response.status_code == 200
    assert response.text.lstrip().startswith('<div id="claim"')
    assert "Being reviewed by <strong>oscar</strong>" in response.text
    review.refresh_from_db()
    assert review.claimed_by == other_reviewer


@pytest.mark.parametrize(
    ("who", "url", "to", "status", "message"),
    [
        ("oscar", "approvals:take_over", "", 403, "Only an administrator or a lead"),
        ("oscar", "approvals:hand_on", "rita", 403, "Only the reviewer who holds this review"),
        ("rita", "approvals:hand_on", "uma", 422, "is not in this review&#x27;s group"),
        ("lee", "approvals:reassign", "", 422, "Name the colleague"),
    ],
)
def test_a_refused_move_over_http_says_why_and_writes_nothing(
    review: Review,
    reviewer: User,
    other_reviewer: User,
    lead: User,
    outsider: User,
    who: str,
    url: str,
    to: str,
    status: int,
    message: str,
):
    claimed_by(review, reviewer)
    before = row_counts()
    client = client_for(User.objects.get(username=who))

    response = client.post(reverse(url, args=[review.pk]), {"to": to})

    assert response.status_code == status
    assert message in response.text
    assert row_counts() == before


def test_a_reviewer_of_another_workflow_gets_a_404(review: Review, reviewer: User, outsider: User):
    claimed_by(review, reviewer)

    response = client_for(outsider).post(reverse("approvals:take_over", args=[review.pk]))

    assert response.status_code == 404


# -- a take-over racing the holder's decision (PostgreSQL) -----------------------------------


@pytest.mark.postgres
def test_a_take_over_racing_the_holders_decision_ends_with_one_winner_and_a_clear_refusal(
    staff: User, reviewer: User, lead: User
):
    outcomes: list[str] = []
    for round_ in range(4):
        review = Review.objects.get(thread=expense_thread(staff, f"Race {round_}"), status=Review.Status.OPEN)
        claimed_by(review, reviewer)
        decided, took = race(
            lambda r=review: decide(r, reviewer, "approve"),
            lambda r=review: services.take_over_review(review=r, actor=lead),
        )
        review.refresh_from_db()
        if isinstance(decided, Decision):
            assert isinstance(took, services.ClaimRefused)
            assert "already decided (approve) by rita" in str(took)
            assert review.status == Review.Status.DECIDED
            outcomes.append("decided")
        else:
            assert isinstance(took, Review), (decided, took)
            assert isinstance(decided, services.ReviewClaimed)
            assert "being reviewed by lee" in str(decided)
            assert review.status == Review.Status.OPEN
            assert review.claimed_by == lead
            assert not Decision.objects.filter(review=review).exists()
            outcomes.append("taken")
        actions = list(
            AuditEvent.objects.filter(
                thread=review.thread, action__in=("review.decided", "review.taken_over")
            ).values_list("action", flat=True)
        )
        assert actions == (["review.decided"] if outcomes[-1] == "decided" else ["review.taken_over"])
    assert len(outcomes) == 4
