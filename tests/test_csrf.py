"""Every POST of the reviewer's pages is refused without the CSRF token and goes through with it."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

from approvals.forms import sign_pin
from approvals.models import Review
from tests.pages import bulk_form, client_for, decide_url, review_url, snapshot

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("doorbell")]


def _csrf_posts(review: Review) -> dict[str, tuple[str, dict[str, Any]]]:
    form = {"pin": sign_pin(review), "action": "approve", "state__amount": "99", "state__category": "travel"}
    return {
        "decide": (decide_url(review), form),
        "claim": (reverse("approvals:claim", args=[review.pk]), {}),
        "release": (reverse("approvals:release", args=[review.pk]), {}),
        "preview": (reverse("approvals:preview", args=[review.pk]), form),
        "bulk approve": (reverse("approvals:bulk_approve"), bulk_form(review)),
        "logout": (reverse("logout"), {}),
    }


@pytest.mark.parametrize("name", ["decide", "claim", "release", "preview", "bulk approve", "logout"])
def test_a_post_without_the_csrf_token_is_refused_and_writes_nothing(
    reviewer: User, review: Review, name: str
):
    client = client_for(reviewer, enforce_csrf_checks=True)
    services_claim = name == "release"
    if services_claim:
        from approvals import services as approvals

        approvals.claim_review(review=review, actor=reviewer)
    url, data = _csrf_posts(review)[name]
    before = snapshot(review.thread)

    response = client.post(url, data)

    assert response.status_code == 403
    assert snapshot(review.thread) == before
    assert client.get(reverse("approvals:queue")).status_code == 200  # still logged in


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("decide", 302),
        ("claim", 302),
        ("release", 302),
        ("preview", 200),
        ("bulk approve", 302),
        ("logout", 302),
    ],
)
def test_a_post_with_the_csrf_token_goes_through(reviewer: User, review: Review, name: str, status: int):
    client = client_for(reviewer, enforce_csrf_checks=True)
    client.get(review_url(review))  # sets the CSRF cookie, as the page does
    url, data = _csrf_posts(review)[name]

    response = client.post(url, {**data, "csrfmiddlewaretoken": client.cookies["csrftoken"].value})

    assert response.status_code == status
