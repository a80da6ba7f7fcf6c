"""Deciding over HTTP (`approvals.views.review_decide`, invariant 6): a stale or second decision is a 409."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from approvals.forms import sign_pin
from approvals.models import Decision, Review
from tests.factories import head, open_review, open_reviews, run_queued
from tests.pages import HX, decide_url, review_form, snapshot
from workflows import engine, services
from workflows.models import Thread

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("doorbell")]


def test_typed_edits_reach_the_state_with_their_types(rita: Client, typed: Thread):
    review = open_review(typed)
    data = review_form(
        rita,
        review,
        state__flag=None,
        state__ratio="0.75",
        state__level="high",
        state__tags='["a", "b"]',
        state__limits='{"x": 2}',
    )

    response = rita.post(decide_url(review), data)

    assert response.status_code == 302
    run_queued(typed)
    values = head(typed).values
    assert (values["flag"], values["ratio"], values["level"]) == (False, 0.75, "high")
    assert (values["tags"], values["limits"], values["label"]) == (["a", "b"], {"x": 2}, "Q3")


def test_a_valid_decision_redirects_to_the_thread_which_follows_the_run(rita: Client, review: Review):
    thread = review.thread
    data = review_form(rita, review, state__amount="99.5", state__approved="on")

    response = rita.post(decide_url(review), data)

    thread_url = reverse("approvals:thread", args=[thread.public_id])
    assert response.status_code == 302
    assert response["Location"] == thread_url
    review.refresh_from_db()
    assert review.status == Review.Status.DECIDED
    status = rita.get(thread_url, **HX).text
    assert 'data-status="queued"' in status
    assert f'hx-get="{thread_url}" hx-trigger="every 2s"' in status

    run_queued(thread)

    done = rita.get(thread_url, **HX).text
    assert 'data-status="completed"' in done
    assert "hx-trigger" not in done
    assert "paid 99.50" in done


def test_a_valid_htmx_decision_answers_204_with_a_redirect_header(rita: Client, review: Review):
    response = rita.post(decide_url(review), review_form(rita, review), **HX)

    assert response.status_code == 204
    assert response["HX-Redirect"] == reverse("approvals:thread", args=[review.thread.public_id])


def test_a_second_decision_gets_a_409_naming_who_decided_and_when(
    rita: Client, oscar: Client, review: Review
):
    data = review_form(oscar, review)
    rita.post(decide_url(review), review_form(rita, review))
    decision = Decision.objects.get(review=review)
    before = snapshot(review.thread)

    page = oscar.post(decide_url(review), data)
    fragment = oscar.post(decide_url(review), data, **HX)

    when = timezone.localtime(decision.created_at).strftime("%Y-%m-%d %H:%M:%S")
    for response in (page, fragment):
        assert response.status_code == 409
        assert f"already decided (approve) by rita at {when}" in response.text
    assert "<html" in page.text
    assert "<html" not in fragment.text
    assert fragment["HX-Retarget"] == "#decision"
    assert snapshot(review.thread) == before


def test_a_decision_on_a_withdrawn_review_gets_a_409(rita: Client, admin: User, review: Review):
    data = review_form(rita, review)
    services.cancel_thread(thread=review.thread, actor=admin)
    before = snapshot(review.thread)

    response = rita.post(decide_url(review), data)

    assert response.status_code == 409
    assert "withdrawn" in response.text
    assert snapshot(review.thread) == before


def test_a_decision_rendered_before_the_thread_moved_on_gets_a_409(rita: Client, review: Review):
    earlier = next(
        snapshot_
        for snapshot_ in engine.graph_for("expense_approval").get_state_history(
            engine.config_for(review.thread.thread_id)
        )
        if snapshot_.next == ("draft",)
    )
    shown_then = Review(
        pk=review.pk, checkpoint_id=engine.checkpoint_id_of(earlier), interrupt_id=review.interrupt_id
    )
    data = review_form(rita, review, pin=sign_pin(shown_then))
    before = snapshot(review.thread)

    response = rita.post(decide_url(review), data)

    assert response.status_code == 409
    assert "moved on" in response.text
    assert snapshot(review.thread) == before


def test_a_rolled_back_thread_refuses_the_old_form(rita: Client, admin: User, review: Review):
    thread = review.thread
    data = review_form(rita, review)
    start = next(
        s
        for s in engine.graph_for("expense_approval").get_state_history(engine.config_for(thread.thread_id))
        if s.next == ("draft",)
    )
    services.rollback_thread(
        thread=thread, actor=admin, checkpoint_id=engine.checkpoint_id_of(start), reason="redo"
    )
    run_queued(thread)
    (fresh,) = open_reviews(thread)
    before = snapshot(thread)

    old = rita.post(decide_url(review), data)
    crossed = rita.post(decide_url(fresh), data)

    assert old.status_code == 409
    assert crossed.status_code == 422
    assert "belongs to another review" in crossed.text
    assert snapshot(thread) == before
