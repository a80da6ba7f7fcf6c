"""Relative times that never say "0 minutes ago" and counts with the right plural
(approvals.templatetags.signoff: `ago`, `counted`), and the pages that use them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client
from django.urls import reverse

from approvals.models import Review
from approvals.templatetags.signoff import ago, approval_progress, counted
from tests.factories import open_review, registered
from tests.fake_workflows import four_eyes
from tests.pages import expense_thread
from workflows import registry

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def said(text: str) -> str:
    """Django's timesince keeps a number and its unit together with a no-break space."""
    return text.replace("\xa0", " ")


@pytest.mark.parametrize(
    ("before", "expected"),
    [
        (timedelta(0), "just now"),
        (timedelta(seconds=59), "just now"),
        (timedelta(seconds=60), "1 minute ago"),
        (timedelta(minutes=2, seconds=30), "2 minutes ago"),
        (timedelta(hours=1), "1 hour ago"),
        (timedelta(hours=3, minutes=1), "3 hours, 1 minute ago"),
        (timedelta(days=1), "1 day ago"),
        (timedelta(days=9), "1 week, 2 days ago"),
    ],
)
def test_a_past_moment_is_said_as_people_say_it(before: timedelta, expected: str):
    assert said(ago(NOW - before, NOW)) == expected


def test_a_moment_just_ahead_of_the_clock_is_just_now_and_one_further_ahead_is_in_some_time():
    assert ago(NOW + timedelta(seconds=20), NOW) == "just now"
    assert said(ago(NOW + timedelta(minutes=5), NOW)) == "in 5 minutes"


def test_no_moment_says_nothing():
    assert ago(None, NOW) == ""


@pytest.mark.parametrize(
    ("number", "noun", "expected"),
    [
        (0, "review", "0 reviews"),
        (1, "review", "1 review"),
        (2, "review", "2 reviews"),
        (None, "review", "0 reviews"),
        (1, "reply,replies", "1 reply"),
        (3, "reply,replies", "3 replies"),
    ],
)
def test_a_count_takes_the_plural_only_when_it_is_not_one(number: int | None, noun: str, expected: str):
    assert counted(number, noun) == expected


class _Row:
    def __init__(self, workflow: str, given: int) -> None:
        self.workflow = workflow
        self.approvals_given = given


def test_the_approval_progress_says_approvals_in_the_plural_only_when_needed_is_not_one():
    one_group = registry.Workflow(
        name="test_one_group_quorum",
        title="One approver from the one group",
        builder=four_eyes,
        reviewer_group="quorum_finance",
        approvals_required="all",
        approval_groups=("quorum_finance",),
    )
    with registered(one_group):
        assert approval_progress(_Row("test_one_group_quorum", 0)) == "0 of 1 approval"
    assert approval_progress(_Row("test_four_eyes", 1)) == "1 of 2 approvals"


def test_a_workflow_without_a_quorum_shows_no_progress():
    assert approval_progress(_Row("expense_approval", 0)) == ""
    assert approval_progress(_Row("no_such_workflow", 0)) == ""


# -- the queue page ------------------------------------------------------------------------------


def waiting_since(client: Client, review: Review) -> str:
    html = client.get(reverse("approvals:queue")).text
    row = html[html.index(f'<tr id="review-{review.pk}"') :]
    row = row[: row.index("</tr>")]
    cell = row[row.index("<time") :]
    return said(cell[cell.index(">") + 1 : cell.index("</time>")])


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("doorbell")
def test_the_queue_says_a_review_opened_a_moment_ago_was_opened_just_now(rita: Client, review: Review):
    assert waiting_since(rita, review) == "just now"
    assert "0 minutes" not in rita.get(reverse("approvals:queue")).text


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("doorbell")
def test_the_queue_says_one_minute_in_the_singular(rita: Client, staff):
    review = open_review(expense_thread(staff))
    Review.objects.filter(pk=review.pk).update(created_at=review.created_at - timedelta(seconds=90))

    assert waiting_since(rita, review) == "1 minute ago"
