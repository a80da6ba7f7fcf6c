"""Claiming and releasing a review (`review_claim`, `review_release`)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from approvals.models import Review
from tests.pages import HX, counts, decide_url, review_form, review_url, snapshot

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("doorbell")]


def test_claiming_a_review_shows_the_claimer_in_the_queue(rita: Client, reviewer: User, review: Review):
    assert rita.get(review_url(review)).status_code == 200

    response = rita.post(reverse("approvals:claim", args=[review.pk]))

    assert response.status_code == 302
    review.refresh_from_db()
    assert review.claimed_by == reviewer
    row = rita.get(reverse("approvals:queue")).text
    assert re.search(rf'<tr id="review-{review.pk}">.*?<td>rita</td>', row, re.S)
    assert "You are reviewing this" in rita.get(review_url(review)).text


def test_claiming_with_htmx_returns_the_claim_fragment(rita: Client, review: Review):
    response = rita.post(reverse("approvals:claim", args=[review.pk]), **HX)

    assert response.status_code == 200
    assert response.text.lstrip().startswith('<div id="claim"')
    assert "Release it to the queue" in response.text


def test_another_reviewer_sees_the_claim_and_cannot_claim_or_decide(
    rita: Client, oscar: Client, reviewer: User, review: Review
):
    data = review_form(oscar, review, state__amount="1")
    rita.post(reverse("approvals:claim", args=[review.pk]))
    before = snapshot(review.thread)

    page = oscar.get(review_url(review)).text
    claim = oscar.post(reverse("approvals:claim", args=[review.pk]))
    decision = oscar.post(decide_url(review), data)
    htmx = oscar.post(decide_url(review), data, **HX)

    assert "Being reviewed by <strong>rita</strong>" in page
    assert claim.status_code == decision.status_code == htmx.status_code == 409
    assert "being reviewed by rita" in decision.text
    assert htmx["HX-Retarget"] == "#decision"
    assert snapshot(review.thread) == before
    review.refresh_from_db()
    assert review.claimed_by == reviewer


def test_releasing_returns_the_review_to_the_queue(rita: Client, oscar: Client, review: Review):
    rita.post(reverse("approvals:claim", args=[review.pk]))

    response = rita.post(reverse("approvals:release", args=[review.pk]))

    assert response.status_code == 302
    assert response["Location"] == reverse("approvals:queue")
    review.refresh_from_db()
    assert review.claimed_by is None
    assert counts(oscar.get(reverse("approvals:queue")).text)["unclaimed"] == 1
    assert oscar.post(reverse("approvals:claim", args=[review.pk])).status_code == 302


def test_opening_a_review_claims_it_on_load_but_releasing_it_does_not_claim_it_back(
    rita: Client, review: Review
):
    page = rita.get(review_url(review)).text
    rita.post(reverse("approvals:claim", args=[review.pk]), **HX)

    released = rita.post(reverse("approvals:release", args=[review.pk]), **HX)

    assert 'hx-trigger="load, submit"' in page
    assert released.status_code == 200
    assert released.text.lstrip().startswith('<div id="claim"')
    assert "Claim this review" in released.text
    assert "hx-trigger" not in released.text
    assert not re.search(r"\bload\b", released.text)
    review.refresh_from_db()
    assert review.claimed_by is None


def test_another_reviewer_cannot_release_someone_elses_claim(rita: Client, oscar: Client, review: Review):
    rita.post(reverse("approvals:claim", args=[review.pk]))

    assert oscar.post(reverse("approvals:release", args=[review.pk])).status_code == 409


def test_an_expired_claim_lets_another_reviewer_claim(
    rita: Client, oscar: Client, other_reviewer: User, review: Review
):
    rita.post(reverse("approvals:claim", args=[review.pk]))
    Review.objects.filter(pk=review.pk).update(claim_expires_at=timezone.now() - timedelta(seconds=1))

    assert "Being reviewed by" not in oscar.get(review_url(review)).text
    assert counts(oscar.get(reverse("approvals:queue")).text)["unclaimed"] == 1
    response = oscar.post(reverse("approvals:claim", args=[review.pk]))

    assert response.status_code == 302
    review.refresh_from_db()
    assert review.claimed_by == other_reviewer
