"""Driving the reviewer's pages over HTTP in tests: clients, URLs, the decision form as
rendered, what a page lists, and the snapshot a refused request must leave alone."""

from __future__ import annotations

import re
from typing import Any

from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse

from approvals.models import Review
from tests.factories import EXPENSE, head, row_counts, run_queued
from tests.html import form_fields as html_form_fields
from workflows import engine, services
from workflows.models import AuditEvent, Thread

HX = {"HTTP_HX_REQUEST": "true"}
LOGIN = reverse("login")


def form_fields(html: str, form_id: str = "decision-form") -> dict[str, str]:
    return html_form_fields(html, form_id)


def client_for(user: User | None, **kwargs: Any) -> Client:
    client = Client(**kwargs)
    if user is not None:
        client.force_login(user)
    return client


def grant(user: User, *codenames: str) -> User:
    """`user` again, holding these permissions of the workflows app (view_auditevent: the audit trail)."""
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="workflows", codename__in=codenames)
    )
    # has_perm caches a user's permissions on the object: hand back a fresh one.
    return User.objects.get(pk=user.pk)


def review_form(client: Client, review: Review, **changes: str | None) -> dict[str, str]:
    """The decision form as the review page renders it, with some fields changed (None drops one)."""
    response = client.get(reverse("approvals:review", args=[review.pk]))
    assert response.status_code == 200
    fields = form_fields(response.text)
    assert "pin" in fields
    fields.update({key: value for key, value in changes.items() if value is not None})
    return {key: value for key, value in fields.items() if changes.get(key, "") is not None}


def decide_url(review: Review) -> str:
    return reverse("approvals:decide", args=[review.pk])


def review_url(review: Review) -> str:
    return reverse("approvals:review", args=[review.pk])


def queue_ids(html: str) -> list[int]:
    return [int(pk) for pk in re.findall(r'<tr id="review-(\d+)"', html)]


def counts(html: str) -> dict[str, int]:
    return {scope: int(n) for scope, n in re.findall(r'data-scope="(\w+)">(\d+)<', html)}


def snapshot(thread: Thread) -> tuple[dict[str, int], dict[str, Any], str]:
    """Everything a refused request must leave alone."""
    state = head(thread)
    return row_counts(), dict(state.values), engine.checkpoint_id_of(state)


def refused(
    client: Client,
    review: Review,
    data: dict[str, str],
    message: str,
    url: str = "approvals:decide",
    **extra: Any,
) -> str:
    """POST `data` to the review's `url`: refused with 422 and `message`, nothing written, the
    review still open. The response's HTML."""
    events = AuditEvent.objects.count()
    before = snapshot(review.thread)

    response = client.post(reverse(url, args=[review.pk]), data, **extra)

    assert response.status_code == 422, response.status_code
    assert message in response.text
    assert snapshot(review.thread) == before
    assert AuditEvent.objects.count() == events
    review.refresh_from_db()
    assert review.status == Review.Status.OPEN
    return response.text


def expense_thread(actor: User, title: str = "Train to Lyon", **input: Any) -> Thread:
    """An expense claim paused before `pay`, its review open; title "" keeps the workflow's own."""
    thread = services.start_thread(
        workflow="expense_approval", input={**EXPENSE, **input}, actor=actor, title=title
    )
    run_queued(thread)
    assert thread.status == Thread.Status.INTERRUPTED
    return thread


def bulk_form(*reviews: Review, confirm: bool = True) -> dict[str, Any]:
    """Bulk approve's form with these reviews ticked, each with the checkpoint its queue row
    showed; `confirm` as the confirmation step's Confirm button posts it."""
    form: dict[str, Any] = {"review": [str(review.pk) for review in reviews]}
    form.update({f"checkpoint-{review.pk}": review.checkpoint_id for review in reviews})
    return {**form, "confirm": "yes"} if confirm else form


def opened(user: User, *reviews: Review) -> None:
    """The user opened these reviews (their page claims them on load), so bulk approve counts
    their state as shown."""
    from approvals import services as approvals

    for review in reviews:
        approvals.claim_review(review=review, actor=user)
