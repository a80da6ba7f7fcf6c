"""Bulk approve (`approvals.views.bulk_approve`): a confirmation step, then one result per ticked
review; never a review whose state its row did not show (tests/test_inbox.py has the rest)."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from approvals.models import Decision, Review
from tests.factories import decide, head, run_queued
from tests.pages import HX, bulk_form, opened, queue_ids
from workflows import services
from workflows.models import AuditEvent

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("doorbell")]


def test_bulk_approve_reports_a_result_per_review(
    rita: Client, reviewer: User, other_reviewer: User, mixed: dict[str, Review]
):
    opened(reviewer, mixed["lyon"])
    earlier = decide(mixed["laptop"], other_reviewer, "approve")
    picked = [mixed["lyon"], mixed["laptop"], mixed["legal"]]

    response = rita.post(reverse("approvals:bulk_approve"), bulk_form(*picked), **HX)

    assert response.status_code == 200
    assert "<html" not in response.text
    assert response["HX-Trigger"] == "queue-changed"  # the queue refreshes without the approved rows
    items = re.findall(r"<li>(.*?)</li>", response.text, re.S)
    assert "Train to Lyon" in items[0]
    assert "<strong>approved</strong>" in items[0]
    when = timezone.localtime(earlier.created_at).strftime("%Y-%m-%d %H:%M")
    assert "New laptop" in items[1]
    assert f"already decided by oscar at {when}" in items[1]
    assert "Acme contract" in items[2]
    assert "needs input" in items[2]
    lyon = Decision.objects.get(review=mixed["lyon"])
    assert (lyon.actor, lyon.action) == (reviewer, "approve")
    assert Decision.objects.get(review=mixed["laptop"]).actor == other_reviewer
    assert not Decision.objects.filter(review=mixed["legal"]).exists()


def test_bulk_approve_without_htmx_redirects_to_the_queue_with_messages(
    rita: Client, reviewer: User, mixed: dict[str, Review]
):
    opened(reviewer, mixed["lyon"])
    response = rita.post(
        reverse("approvals:bulk_approve"), bulk_form(mixed["lyon"], mixed["finance"]), follow=True
    )

    assert response.redirect_chain == [(reverse("approvals:queue"), 302)]
    assert "Train to Lyon: approved" in response.text
    assert "Acme contract: needs input" in response.text
    assert mixed["lyon"].pk not in queue_ids(response.text)


def test_bulk_approving_an_expense_claim_pays_it(rita: Client, reviewer: User, review: Review):
    opened(reviewer, review)
    rita.post(reverse("approvals:bulk_approve"), bulk_form(review))
    run_queued(review.thread)

    assert head(review.thread).values["outcome"] == "paid 120.00"


def test_bulk_approve_with_nothing_ticked_says_to_tick_some_first(rita: Client, review: Review):
    events = AuditEvent.objects.count()

    fragment = rita.post(reverse("approvals:bulk_approve"), {}, **HX)
    page = rita.post(reverse("approvals:bulk_approve"), {}, follow=True)

    assert fragment.status_code == 200
    assert "<html" not in fragment.text
    assert "Tick the reviews to approve first." in fragment.text
    assert page.redirect_chain == [(reverse("approvals:queue"), 302)]
    assert "Tick the reviews to approve first." in page.text
    assert AuditEvent.objects.count() == events


def test_bulk_approve_of_a_decided_review_that_needs_input_says_who_decided_it(
    rita: Client, other_reviewer: User, mixed: dict[str, Review]
):
    earlier = decide(mixed["legal"], other_reviewer, "approve")

    response = rita.post(reverse("approvals:bulk_approve"), bulk_form(mixed["legal"]), **HX)

    when = timezone.localtime(earlier.created_at).strftime("%Y-%m-%d %H:%M")
    assert f"<strong>already decided by oscar at {when}</strong>" in response.text
    assert "needs input" not in response.text
    assert Decision.objects.get(review=mixed["legal"]).actor == other_reviewer


def test_bulk_approve_of_a_withdrawn_review_says_it_no_longer_applies(
    rita: Client, admin: User, mixed: dict[str, Review]
):
    services.cancel_thread(thread=mixed["legal"].thread, actor=admin)

    response = rita.post(reverse("approvals:bulk_approve"), bulk_form(mixed["legal"]), **HX)

    assert "This review was withdrawn" in response.text
    assert "needs input" not in response.text
    assert not Decision.objects.filter(review=mixed["legal"]).exists()
