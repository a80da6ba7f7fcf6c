"""The queue view (`approvals.views.queue`): columns, filters, scopes, search, sorting, pages."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from approvals.models import Review
from tests.factories import open_review
from tests.pages import HX, counts, expense_thread, queue_ids

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("doorbell")]


def test_the_queue_shows_workflow_title_node_waiting_since_claimer_and_due(
    rita: Client, review: Review, other_reviewer: User
):
    from approvals import services as approvals

    approvals.claim_review(review=review, actor=other_reviewer)

    html = rita.get(reverse("approvals:queue")).text

    row = html[html.index(f'<tr id="review-{review.pk}"') :]
    row = row[: row.index("</tr>")]
    assert "Train to Lyon" in row
    assert "Expense approval" in row
    assert "<td>pay</td>" in row
    assert ">just now</time>" in row  # opened a moment ago
    assert "oscar" in row
    assert timezone.localtime(review.due_at).strftime("%b %-d, %H:%M") in row


def test_the_queue_filters_by_workflow(rita: Client, mixed: dict[str, Review]):
    html = rita.get(reverse("approvals:queue"), {"workflow": "expense_approval"}).text

    assert sorted(queue_ids(html)) == sorted([mixed["lyon"].pk, mixed["laptop"].pk])
    assert counts(html) == {"all": 2, "mine": 0, "unclaimed": 2}


def test_the_queue_scopes_count_all_mine_and_unclaimed(
    rita: Client, reviewer: User, other_reviewer: User, mixed: dict[str, Review]
):
    from approvals import services as approvals

    approvals.claim_review(review=mixed["lyon"], actor=reviewer)
    approvals.claim_review(review=mixed["legal"], actor=other_reviewer)
    queue = reverse("approvals:queue")

    everything = rita.get(queue).text
    mine = rita.get(queue, {"scope": "mine"}).text
    unclaimed = rita.get(queue, {"scope": "unclaimed"}).text

    assert counts(everything) == counts(mine) == counts(unclaimed) == {"all": 4, "mine": 1, "unclaimed": 2}
    assert len(queue_ids(everything)) == 4
    assert queue_ids(mine) == [mixed["lyon"].pk]
    assert sorted(queue_ids(unclaimed)) == sorted([mixed["laptop"].pk, mixed["finance"].pk])


@pytest.mark.parametrize(
    ("q", "found"),
    [
        ("laptop", ["laptop"]),  # the thread's title
        ("acme", ["legal", "finance"]),  # the thread's input
        ("within budget", ["finance"]),  # the interrupt's payload
        ("nothing like this", []),
    ],
)
def test_the_queue_searches_title_and_state(rita: Client, mixed: dict[str, Review], q: str, found: list[str]):
    html = rita.get(reverse("approvals:queue"), {"q": q}).text

    assert sorted(queue_ids(html)) == sorted(mixed[name].pk for name in found)
    assert counts(html)["all"] == len(found)


def test_the_queue_sorts(rita: Client, mixed: dict[str, Review]):
    queue = reverse("approvals:queue")
    oldest_first = queue_ids(rita.get(queue).text)
    by_title = queue_ids(rita.get(queue, {"sort": "title"}).text)

    assert oldest_first == sorted(oldest_first)
    assert queue_ids(rita.get(queue, {"sort": "newest"}).text) == oldest_first[::-1]
    assert by_title[0] in (mixed["legal"].pk, mixed["finance"].pk)  # "Acme contract"
    assert by_title[-1] == mixed["lyon"].pk  # "Train to Lyon"


def _more_reviews(review: Review, n: int, **fields: Any) -> list[Review]:
    """Open reviews cloned from one real review: no graph needs to run for a queue."""
    return Review.objects.bulk_create(
        Review(
            thread=review.thread,
            workflow=review.workflow,
            search_text=review.search_text,
            run=review.run,
            interrupt_id=f"extra-{uuid.uuid4()}",
            kind=review.kind,
            node=review.node,
            checkpoint_id=review.checkpoint_id,
            value=review.value,
            due_at=review.due_at,
            **fields,
        )
        for i in range(n)
    )


def test_the_queue_paginates_with_links_that_keep_the_filters(rita: Client, review: Review):
    _more_reviews(review, 11)  # 12 in all
    queue = reverse("approvals:queue")
    params = {"workflow": "expense_approval", "q": "lyon", "sort": "newest", "per_page": "10"}

    first = rita.get(queue, params).text
    links = re.findall(r'href="/\?([^"]+)" rel="(prev|next)"', first)
    assert [rel for _, rel in links] == ["next"]
    following = links[0][0].replace("&amp;", "&")
    second = rita.get(f"{queue}?{following}").text

    assert len(queue_ids(first)) == 10
    assert len(queue_ids(second)) == 2
    assert set(queue_ids(first)).isdisjoint(queue_ids(second))
    for part in ("workflow=expense_approval", "q=lyon", "sort=newest", "per_page=10", "after="):
        assert part in following
    assert "Showing 2 of 12 reviews" in second


def test_the_htmx_queue_is_only_the_results_and_its_poll_keeps_the_filters(rita: Client, review: Review):
    response = rita.get(
        reverse("approvals:queue"), {"workflow": "expense_approval", "scope": "unclaimed"}, **HX
    )

    assert response.status_code == 200
    assert "<html" not in response.text
    assert response.text.lstrip().startswith('<div id="results"')
    poll = re.search(r'<div id="results" hx-get="([^"]+)" hx-trigger="every', response.text)
    assert poll is not None
    assert "workflow=expense_approval" in poll.group(1)
    assert "scope=unclaimed" in poll.group(1)
    assert queue_ids(response.text) == [review.pk]


def test_the_results_carry_scope_and_page_size_into_the_filter_form(rita: Client, review: Review):
    # The filter form sits outside #results; its scope and page size are refreshed with them.
    html = rita.get(reverse("approvals:queue"), {"scope": "unclaimed", "per_page": "10"}, **HX).text

    assert '<input type="hidden" name="scope" value="unclaimed" form="filters">' in html
    assert '<input type="hidden" name="per_page" value="10" form="filters">' in html
    assert 'id="filters"' in rita.get(reverse("approvals:queue")).text


def test_the_queue_search_finds_text_beyond_ascii(rita: Client, staff: User):
    thread = expense_thread(staff, "Dinner", employee="Zoë", description="Café in Köln")

    html = rita.get(reverse("approvals:queue"), {"q": "café"}).text

    assert queue_ids(html) == [open_review(thread).pk]


def test_the_queue_varies_on_hx_request(rita: Client, review: Review):
    for response in (rita.get("/"), rita.get("/", **HX)):
        assert "HX-Request" in response["Vary"]


def test_the_scope_tabs_keep_the_other_filters(rita: Client, review: Review):
    html = rita.get(reverse("approvals:queue"), {"workflow": "expense_approval", "q": "lyon"}).text

    tabs = re.findall(r'href="/(\?[^"]*)" hx-get', html)
    assert len(tabs) == 3
    for tab in tabs:
        assert "workflow=expense_approval" in tab
        assert "q=lyon" in tab


@pytest.mark.parametrize("per_page", [10, 100])
def test_the_queue_page_takes_the_same_few_queries_whatever_its_size(
    rita: Client, review: Review, other_reviewer: User, per_page: int, django_assert_max_num_queries: Any
):
    _more_reviews(review, 60)
    _more_reviews(review, 59, claimed_by=other_reviewer, claim_expires_at=timezone.now() + timedelta(hours=1))

    with django_assert_max_num_queries(8):
        response = rita.get(reverse("approvals:queue"), {"per_page": per_page})

    assert len(queue_ids(response.text)) == per_page
    assert counts(response.text)["all"] == 120
