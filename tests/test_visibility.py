"""Who sees what (invariant 10): which persona may open, list or act on a review."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from approvals.forms import sign_pin
from approvals.models import Review
from tests.factories import make_user
from tests.pages import HX, LOGIN, client_for, counts, queue_ids, review_url, snapshot

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("doorbell")]


@pytest.fixture
def editor() -> User:
    """A reviewer of content_review only: expense_approval is another group's workflow."""
    return make_user("eddie", groups=["editors"])


PERSONAS = {"anonymous": 302, "editor": 404, "staff": 404, "reviewer": 200, "admin": 200}


def _persona(request: pytest.FixtureRequest, name: str) -> User | None:
    return None if name == "anonymous" else request.getfixturevalue(name)


@pytest.mark.parametrize("page", ["review", "thread"])
@pytest.mark.parametrize(("persona", "status"), PERSONAS.items())
def test_who_may_open_a_review_and_its_thread(
    request: pytest.FixtureRequest, review: Review, page: str, persona: str, status: int
):
    client = client_for(_persona(request, persona))
    url = (
        review_url(review)
        if page == "review"
        else reverse("approvals:thread", args=[review.thread.public_id])
    )

    response = client.get(url)

    assert response.status_code == status
    if status == 302:
        assert response["Location"] == f"{LOGIN}?next={url}"


@pytest.mark.parametrize("endpoint", ["claim", "release", "preview", "decide"])
@pytest.mark.parametrize("persona", ["anonymous", "editor", "staff"])
def test_who_may_not_act_on_a_review_changes_nothing(
    request: pytest.FixtureRequest, review: Review, endpoint: str, persona: str
):
    client = client_for(_persona(request, persona))
    data = {"pin": sign_pin(review), "action": "approve", "state__amount": "1", "state__category": "travel"}
    before = snapshot(review.thread)

    response = client.post(reverse(f"approvals:{endpoint}", args=[review.pk]), data)

    assert response.status_code == PERSONAS[persona]
    if persona == "anonymous":
        assert response["Location"].startswith(f"{LOGIN}?next=")
    assert snapshot(review.thread) == before


@pytest.mark.parametrize(
    ("persona", "listed"), [("editor", False), ("staff", False), ("reviewer", True), ("admin", True)]
)
def test_the_queue_lists_a_review_only_to_who_may_decide_it(
    request: pytest.FixtureRequest, review: Review, persona: str, listed: bool
):
    response = client_for(_persona(request, persona)).get(reverse("approvals:queue"))

    assert response.status_code == 200
    assert (review.pk in queue_ids(response.text)) is listed
    assert counts(response.text)["all"] == int(listed)


def test_bulk_approve_of_another_groups_review_finds_nothing(editor: User, review: Review):
    before = snapshot(review.thread)

    response = client_for(editor).post(reverse("approvals:bulk_approve"), {"review": [review.pk]}, **HX)

    assert response.status_code == 200
    assert "not found" in response.text
    assert snapshot(review.thread) == before


@pytest.mark.parametrize("url", ["/", "/reviews/1/", "/threads/8b0f0c1e-1111-4c1e-9d1e-000000000000/"])
def test_anonymous_users_are_sent_to_log_in_from_every_page(url: str):
    response = Client().get(url)

    assert response.status_code == 302
    assert response["Location"] == f"{LOGIN}?next={url}"
