"""A decision or preview that fails validation reads the thread's head once, not once for the
form and again for the page around its errors (issue 10, item 5)."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from approvals import views
from approvals.models import Review
from tests.html import form_fields
from tests.pages import HX, review_form
from workflows import engine

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("doorbell")]


@pytest.fixture
def head_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    reads: list[str] = []
    real = engine.head

    def counted(workflow: str, thread_id: str) -> Any:
        reads.append(thread_id)
        return real(workflow, thread_id)

    monkeypatch.setattr(engine, "head", counted)
    return reads


@pytest.mark.parametrize("view", ["decide", "preview"])
@pytest.mark.parametrize("headers", [{}, HX], ids=["page", "htmx"])
def test_an_invalid_submission_reads_the_head_once(
    rita: Client, review: Review, head_reads: list[str], view: str, headers: dict[str, str]
):
    data = review_form(rita, review, state__amount="not a number")
    head_reads.clear()

    response = rita.post(reverse(f"approvals:{view}", args=[review.pk]), data, **headers)

    assert response.status_code == 422
    assert head_reads == [review.thread.thread_id]


def test_a_valid_preview_reads_the_head_once(rita: Client, review: Review, head_reads: list[str]):
    data = form_fields(rita.get(reverse("approvals:review", args=[review.pk])).text, "decision-form")
    head_reads.clear()

    response = rita.post(reverse("approvals:preview", args=[review.pk]), data, **HX)

    assert response.status_code == 200
    assert head_reads == [review.thread.thread_id]


def test_the_views_have_one_way_to_the_signed_in_user():
    from approvals import admin, http

    assert not hasattr(views, "_user")
    assert admin.request_user is http.request_user
    assert not hasattr(admin, "_actor")
