"""The queue's key fields (a workflow's `summary_fields`), its sorts, keyset pages and saved filters."""

from __future__ import annotations

import base64
import re
import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from approvals import services as approvals
from approvals.models import Review, SavedFilter
from tests.factories import make_user, open_review, run_queued
from tests.pages import HX, client_for, expense_thread, queue_ids
from workflows import engine
from workflows import services as engine_services
from workflows.models import AuditEvent

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("doorbell")]

QUEUE = reverse("approvals:queue")
KEY = b"k" * 32


def row(html: str, review: Review) -> str:
    start = html.index(f'<tr id="review-{review.pk}"')
    return html[start : html.index("</tr>", start)]


def header(html: str) -> str:
    return html[html.index("<thead>") : html.index("</thead>")]


def link(html: str, rel: str) -> str | None:
    found = re.search(rf'href="/(\?[^"]*)" rel="{rel}"', html)
    return found.group(1).replace("&amp;", "&") if found else None


def clones(review: Review, amounts: list[Decimal | None]) -> list[Review]:
    """Open reviews cloned from one real review, one per amount, each opened a minute after
    the one before: no graph needs to run for a queue."""
    made = Review.objects.bulk_create(
        Review(
            thread=review.thread,
            workflow=review.workflow,
            search_text=review.search_text,
            interrupt_id=f"clone-{uuid.uuid4()}",
            kind=review.kind,
            node=review.node,
            checkpoint_id=review.checkpoint_id,
            value=review.value,
            # Due times that tie and some that are empty, for the due sorts' keyset.
            due_at=review.due_at + timedelta(hours=n % 4) if review.due_at and n % 6 else None,
            summary=review.summary,
            summary_amount=amount,
        )
        for n, amount in enumerate(amounts)
    )
    start = timezone.now() - timedelta(days=1)
    for n, clone in enumerate(made):
        Review.objects.filter(pk=clone.pk).update(created_at=start + timedelta(minutes=n))
    return made


def walk(client: Client, first: str, *, between: Any = None) -> list[list[int]]:
    """The ids of every page from `first` on, following the next links; `between(n)` runs
    after page n is read."""
    pages: list[list[int]] = []
    url: str | None = first
    while url is not None:
        html = client.get(QUEUE + url).text
        pages.append(queue_ids(html))
        if between is not None:
            between(len(pages))
        url = link(html, "next")
        assert len(pages) < 50, "the next links never end"
    return pages


# -- the columns ------------------------------------------------------------------------------


def test_a_workflows_summary_fields_are_the_columns_of_its_queue(rita: Client, mixed: dict[str, Review]):
    html = rita.get(QUEUE, {"workflow": "expense_approval"}).text

    assert [label for label in ("Employee", "Amount", "Category") if label in header(html)] == [
        "Employee",
        "Amount",
        "Category",
    ]
    laptop = row(html, mixed["laptop"])
    assert '<td class="key-field text">Ada</td>' in laptop
    assert '<td class="key-field money">1,500.00</td>' in laptop
    assert '<td class="key-field text">equipment</td>' in laptop


def test_without_a_workflow_each_row_shows_its_own_workflows_key_fields(
    rita: Client, mixed: dict[str, Review]
):
    html = rita.get(QUEUE).text

    assert "<dt>Counterparty</dt><dd>Acme</dd>" in row(html, mixed["legal"])
    assert "<dt>Value</dt><dd>5,000.00</dd>" in row(html, mixed["legal"])
    assert "<dt>Employee</dt><dd>Ada</dd>" in row(html, mixed["lyon"])
    assert "Counterparty" not in row(html, mixed["lyon"])


def test_the_review_keeps_the_summary_values_it_opened_with(mixed: dict[str, Review]):
    laptop = Review.objects.get(pk=mixed["laptop"].pk)
    legal = Review.objects.get(pk=mixed["legal"].pk)

    assert laptop.summary == {"employee": "Ada", "amount": 1500.0, "category": "equipment"}
    assert laptop.summary_amount == Decimal("1500")
    assert legal.summary == {"counterparty": "Acme", "value": 5000.0}
    assert legal.summary_amount == Decimal("5000")


def test_a_field_the_workflow_does_not_declare_is_never_shown(rita: Client, review: Review):
    # As if the workflow had declared the description once: an open review keeps what it
    # stored, but the row shows only what is declared now.
    Review.objects.filter(pk=review.pk).update(summary={**review.summary, "description": "zq-hidden-7731"})

    for params in ({}, {"workflow": "expense_approval"}):
        html = rita.get(QUEUE, params).text
        assert "zq-hidden-7731" not in html
        assert "Ada" in row(html, review)


def test_a_reviewer_outside_the_workflows_group_sees_neither_its_rows_nor_their_fields(
    mixed: dict[str, Review],
):
    editor = client_for(make_user("eddie", groups=["editors"]))

    html = editor.get(QUEUE).text
    filtered = editor.get(QUEUE, {"workflow": "expense_approval", "q": "ada"}).text

    assert queue_ids(html) == []
    assert queue_ids(filtered) == []
    assert "Acme" not in html
    assert "1,500.00" not in filtered


def test_an_escalated_review_leaves_the_old_groups_queue_with_its_fields(
    rita: Client, mixed: dict[str, Review]
):
    Review.objects.filter(pk=mixed["laptop"].pk).update(
        escalated_at=timezone.now(), escalated_from="finance", reviewer_group="managers"
    )
    manager = client_for(make_user("mona", groups=["managers"]))

    assert mixed["laptop"].pk not in queue_ids(rita.get(QUEUE).text)
    assert "1,500.00" not in rita.get(QUEUE, {"workflow": "expense_approval"}).text
    assert "<dd>1,500.00</dd>" in row(manager.get(QUEUE).text, mixed["laptop"])


def test_with_a_key_a_secret_summary_field_is_sealed_and_not_sorted_but_still_shown(
    settings: Any, rita: Client, staff: User
):
    settings.SIGNOFF_ENCRYPTION_KEY = base64.urlsafe_b64decode(base64.urlsafe_b64encode(KEY))
    engine.forget_compiled()
    try:
        laptop = open_review(expense_thread(staff, "New laptop", amount=48213.57, category="equipment"))
        thread = engine_services.start_thread(
            workflow="parallel_approval", input={"counterparty": "Acme", "value": 5000.0}, actor=staff
        )
        run_queued(thread)
        legal = open_review(thread, "legal")
        with connection.cursor() as cursor:
            cursor.execute("SELECT summary, search_text FROM approvals_review WHERE id = %s", [laptop.pk])
            stored, search = cursor.fetchone()

        assert stored.startswith("sealed:v1:")
        assert "48213" not in stored + search
        assert "equipment" in search
        assert Review.objects.get(pk=laptop.pk).summary_amount is None
        # The contract's value is not declared secret: it sorts.
        assert Review.objects.get(pk=legal.pk).summary_amount == Decimal("5000")
        html = rita.get(QUEUE, {"workflow": "expense_approval"}).text
        assert '<td class="key-field money">48,213.57</td>' in row(html, laptop)
        assert queue_ids(rita.get(QUEUE, {"q": "48213"}).text) == []
    finally:
        engine.forget_compiled()


# -- search and sort -----------------------------------------------------------------------


@pytest.mark.parametrize(("q", "found"), [("equipment", ["laptop"]), ("acme", ["legal", "finance"])])
def test_the_search_finds_summary_values(rita: Client, mixed: dict[str, Review], q: str, found: list[str]):
    assert sorted(queue_ids(rita.get(QUEUE, {"q": q}).text)) == sorted(mixed[name].pk for name in found)


def test_the_amount_sort_orders_by_the_sort_field_with_the_empty_ones_last(
    rita: Client, mixed: dict[str, Review]
):
    (empty,) = clones(mixed["lyon"], [None])
    contract = sorted([mixed["legal"].pk, mixed["finance"].pk])

    highest = queue_ids(rita.get(QUEUE, {"sort": "-amount"}).text)
    lowest = queue_ids(rita.get(QUEUE, {"sort": "amount"}).text)

    assert highest == [*contract[::-1], mixed["laptop"].pk, mixed["lyon"].pk, empty.pk]
    assert lowest == [mixed["lyon"].pk, mixed["laptop"].pk, *contract, empty.pk]


def test_the_column_headers_are_links_that_turn_the_sort_round(rita: Client, mixed: dict[str, Review]):
    first = header(rita.get(QUEUE, {"workflow": "expense_approval"}).text)
    again = header(rita.get(QUEUE, {"workflow": "expense_approval", "sort": "-amount"}).text)

    assert 'href="/?workflow=expense_approval&amp;sort=-amount"' in first
    assert 'href="/?workflow=expense_approval&amp;sort=amount" aria-sort="descending"' in again
    assert 'href="/?workflow=expense_approval&amp;sort=newest">Waiting since' in first
    assert 'href="/?workflow=expense_approval&amp;sort=due">Due' in first


def test_the_filters_are_a_real_get_form(rita: Client, review: Review):
    html = rita.get(QUEUE).text
    form = html[html.index('<form id="filters"') : html.index("</form>", html.index('<form id="filters"'))]

    assert 'method="get" action="/"' in form
    for name in ('name="workflow"', 'name="q"', 'name="sort"', '<option value="-amount"'):
        assert name in form


# -- keyset pages ----------------------------------------------------------------------------


@pytest.mark.parametrize("sort", ["waiting", "-age", "-amount", "amount", "due", "-due", "title"])
def test_the_pages_hold_every_review_once(rita: Client, review: Review, sort: str):
    made = clones(review, [Decimal(n % 7) if n % 5 else None for n in range(34)])

    pages = walk(rita, f"?sort={sort}&per_page=10")
    seen = [pk for page in pages for pk in page]

    assert [len(page) for page in pages] == [10, 10, 10, 5]
    assert sorted(seen) == sorted([review.pk, *(clone.pk for clone in made)])


def test_reviews_opened_while_paging_neither_repeat_nor_push_others_out(rita: Client, review: Review):
    made = clones(review, [Decimal(n) for n in range(30)])
    added: list[Review] = []

    def open_more(page: int) -> None:
        # Some sort before the page just read, some after it.
        added.extend(clones(review, [Decimal(100 + page), Decimal(-page)]))

    seen = [pk for page in walk(rita, "?sort=-amount&per_page=10", between=open_more) for pk in page]

    assert len(seen) == len(set(seen))
    assert {clone.pk for clone in made} <= set(seen)


def test_previous_goes_back_to_the_same_page(rita: Client, review: Review):
    clones(review, [Decimal(n) for n in range(24)])
    first = rita.get(QUEUE, {"sort": "-amount", "per_page": 10}).text
    second = rita.get(QUEUE + str(link(first, "next"))).text
    back = rita.get(QUEUE + str(link(second, "prev"))).text

    assert link(first, "prev") is None
    assert queue_ids(back) == queue_ids(first)
    assert set(queue_ids(second)).isdisjoint(queue_ids(first))


def test_the_page_links_carry_an_opaque_cursor_and_no_offset(rita: Client, review: Review):
    clones(review, [Decimal(n) for n in range(12)])
    following = str(link(rita.get(QUEUE, {"per_page": 10}).text, "next"))

    with CaptureQueriesContext(connection) as queries:
        second = rita.get(QUEUE + following)

    assert "after=" in following
    assert not re.search(r"[?&]page=", following)
    assert len(queue_ids(second.text)) == 3
    assert not any("OFFSET" in query["sql"].upper() for query in queries.captured_queries)


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage",
        "WyJ3YWl0aW5nIixbIjIwMjYtMDEtMDFUMDA6MDA6MDArMDA6MDAiLDFdXQ:1abcde:forged",
        None,  # a real cursor with one character changed
        "other sort",  # a real cursor of another order
    ],
)
def test_a_tampered_cursor_is_a_clear_400_that_keeps_the_filters(
    rita: Client, review: Review, cursor: str | None
):
    clones(review, [Decimal(n) for n in range(12)])
    real = str(link(rita.get(QUEUE, {"per_page": 10, "workflow": "expense_approval"}).text, "next"))
    token = re.search(r"after=([^&]+)", real).group(1)  # type: ignore[union-attr]
    if cursor is None:
        cursor = token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:]
        params = {"after": cursor, "per_page": "10", "workflow": "expense_approval"}
    elif cursor == "other sort":
        params = {"after": token, "per_page": "10", "workflow": "expense_approval", "sort": "-amount"}
    else:
        params = {"after": cursor, "per_page": "10", "workflow": "expense_approval"}

    response = rita.get(QUEUE, params)
    fragment = rita.get(QUEUE, params, **HX)

    assert response.status_code == 400
    assert fragment.status_code == 400
    assert "Page: the page link" in response.text
    assert len(queue_ids(response.text)) == 10  # the first page of the same filters
    assert '<option value="expense_approval" selected>' in response.text


def test_a_page_past_the_last_review_offers_the_first_page(rita: Client, review: Review):
    made = clones(review, [Decimal(n) for n in range(11)])
    following = str(link(rita.get(QUEUE, {"per_page": 10}).text, "next"))
    # The clones opened a day ago, the real review now: page two held the last clone and it.
    Review.objects.filter(pk__in=[made[-1].pk, review.pk]).update(status=Review.Status.CANCELLED)

    html = rita.get(QUEUE + following).text

    assert queue_ids(html) == []
    assert "Back to the first page" in html


@pytest.mark.parametrize("params", [{"per_page": "100"}, {"sort": "-amount", "workflow": "expense_approval"}])
def test_a_queue_page_takes_a_bounded_number_of_queries(
    rita: Client, mixed: dict[str, Review], params: dict[str, str], django_assert_max_num_queries: Any
):
    clones(mixed["lyon"], [Decimal(n) for n in range(60)])
    clones(mixed["legal"], [Decimal(n) for n in range(60)])
    approvals.save_filter(user=User.objects.get(username="rita"), name="Mine", query="?scope=mine")
    following = str(link(rita.get(QUEUE, {**params, "per_page": "25"}).text, "next"))

    with django_assert_max_num_queries(9):
        first = rita.get(QUEUE, params)
    with django_assert_max_num_queries(9):
        later = rita.get(QUEUE + following)

    assert len(queue_ids(first.text)) == int(params.get("per_page", 25))
    assert len(queue_ids(later.text)) == 25


# -- saved filters -------------------------------------------------------------------------


def test_a_saved_filter_keeps_the_filters_without_the_page_and_is_listed(
    rita: Client, reviewer: User, review: Review
):
    response = rita.post(
        reverse("approvals:save_filter"),
        {"name": "  Big   claims ", "query": "?workflow=expense_approval&sort=-amount&after=xyz&junk=1"},
    )

    saved = SavedFilter.objects.get(user=reviewer)
    assert response.status_code == 302
    assert response["Location"] == "/?workflow=expense_approval&sort=-amount"
    assert (saved.name, saved.query) == ("Big claims", "?workflow=expense_approval&sort=-amount")
    assert '<a href="/?workflow=expense_approval&amp;sort=-amount">Big claims</a>' in rita.get(QUEUE).text
    event = AuditEvent.objects.get(action="filter.saved")
    assert event.actor == reviewer
    assert event.data["query"] == saved.query


def test_the_save_form_saves_the_filters_of_the_results_shown(rita: Client, review: Review):
    # The filter form swaps only the results: the query the save form sends comes with them.
    fragment = rita.get(QUEUE, {"workflow": "expense_approval", "sort": "-amount"}, **HX).text
    page = rita.get(QUEUE).text

    saved = 'name="query" value="?workflow=expense_approval&amp;sort=-amount" form="save-filter"'
    assert f'<input type="hidden" {saved}>' in fragment
    assert '<form method="post" action="/filters/" class="save-filter" id="save-filter">' in page


def test_saving_under_the_same_name_replaces_the_filter(rita: Client, reviewer: User):
    for query in ("?scope=mine", "?scope=unclaimed"):
        rita.post(reverse("approvals:save_filter"), {"name": "Todo", "query": query})

    assert list(SavedFilter.objects.filter(user=reviewer).values_list("name", "query")) == [
        ("Todo", "?scope=unclaimed")
    ]


def test_a_filter_without_a_name_is_refused_and_nothing_is_written(rita: Client, reviewer: User):
    events = AuditEvent.objects.count()

    response = rita.post(
        reverse("approvals:save_filter"), {"name": "  ", "query": "?scope=mine"}, follow=True
    )

    assert "The filter was not saved: give it a name" in response.text
    assert not SavedFilter.objects.exists()
    assert AuditEvent.objects.count() == events


def test_another_user_can_neither_see_nor_delete_my_saved_filter(
    rita: Client, oscar: Client, reviewer: User, review: Review
):
    mine = approvals.save_filter(user=reviewer, name="Rita's claims", query="?q=lyon")

    assert "Rita&#x27;s claims" not in oscar.get(QUEUE).text
    assert oscar.post(reverse("approvals:delete_filter", args=[mine.pk])).status_code == 404
    assert SavedFilter.objects.filter(pk=mine.pk).exists()
    assert "Rita&#x27;s claims" in rita.get(QUEUE).text


def test_deleting_my_saved_filter_removes_it_and_is_audited(rita: Client, reviewer: User):
    mine = approvals.save_filter(user=reviewer, name="Todo", query="?scope=mine")

    response = rita.post(reverse("approvals:delete_filter", args=[mine.pk]))

    assert response.status_code == 302
    assert not SavedFilter.objects.exists()
    event = AuditEvent.objects.get(action="filter.deleted")
    assert (event.actor, event.data["name"]) == (reviewer, "Todo")
