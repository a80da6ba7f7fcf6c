"""The HX-* headers the reviewer's pages answer htmx with, byte for byte, now that they come from
django_htmx.http's helpers; and `request.htmx` set before anything of ours can answer."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from approvals.models import Review
from tests.factories import EXPENSE, registered, run_queued
from tests.pages import HX, bulk_form, client_for, decide_url, review_form
from workflows import registry, services

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("doorbell")]


def test_the_htmx_middleware_runs_before_every_middleware_of_ours():
    order = list(settings.MIDDLEWARE)
    htmx = order.index("django_htmx.middleware.HtmxMiddleware")

    ours = [i for i, name in enumerate(order) if name.startswith("approvals.")]

    assert ours
    assert htmx < min(ours)
    # ...and after the two whose headers every response must carry.
    assert htmx == 2


def test_a_valid_htmx_decision_is_a_bodiless_204_with_only_the_client_redirect(rita: Client, review: Review):
    response = rita.post(decide_url(review), review_form(rita, review), **HX)

    assert response.status_code == 204
    assert response["HX-Redirect"] == reverse("approvals:thread", args=[review.thread.public_id])
    assert "Location" not in response
    assert response.content == b""


def test_a_refused_htmx_decision_is_retargeted_at_the_decision_box(
    rita: Client, other_reviewer: User, review: Review
):
    data = review_form(rita, review)
    services_decide_first(review, other_reviewer)

    response = rita.post(decide_url(review), data, **HX)

    assert response.status_code == 409
    assert response["HX-Retarget"] == "#decision"
    assert response["HX-Reswap"] == "innerHTML"
    assert "HX-Redirect" not in response


def services_decide_first(review: Review, actor: User) -> None:
    from approvals import services as review_services

    review_services.decide(review=review, actor=actor, action="approve", checkpoint_id=review.checkpoint_id)


def test_an_htmx_page_that_cannot_be_shown_swaps_out_what_asked(admin: User, staff: User):
    workflow = dataclasses.replace(registry.get("expense_approval"), name="htmx_gone")
    with registered(workflow):
        thread = services.start_thread(workflow="htmx_gone", input=EXPENSE, actor=staff)
        run_queued(thread)
    client = client_for(admin)

    fragment = client.get(reverse("approvals:thread", args=[thread.public_id]), **HX)
    page = client.get(reverse("approvals:thread", args=[thread.public_id]))

    assert fragment.status_code == page.status_code == 404
    assert fragment["HX-Reswap"] == "outerHTML"
    assert "<html" not in fragment.text
    assert "HX-Reswap" not in page


def test_bulk_approve_names_the_event_plainly_not_as_json(rita: Client, review: Review):
    response = rita.post(reverse("approvals:bulk_approve"), bulk_form(review), **HX)

    assert response.status_code == 200
    assert response["HX-Trigger"] == "queue-changed"


def test_an_oversized_htmx_post_gets_the_413_message_alone(rita: Client, review: Review, settings: Any):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2000
    data = {**review_form(rita, review), "comment": "x" * 5000}

    fragment = rita.post(decide_url(review), data, **HX)
    page = rita.post(decide_url(review), data)

    assert fragment.status_code == page.status_code == 413
    assert "The submission is too large" in fragment.text
    assert "<html" not in fragment.text
    assert "<html" in page.text


def test_a_header_other_than_true_is_not_htmx(rita: Client, review: Review):
    # django-htmx's rule (htmx itself always sends "true"): the full page, not a fragment.
    response = rita.get(reverse("approvals:queue"), HTTP_HX_REQUEST="false")

    assert "<html" in response.text
