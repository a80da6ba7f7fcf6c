"""The reviewer's pages over HTTP: accounts, who sees what, CSRF, the queue, bulk approve,
the review page, claims, deciding, and bad input (issue 4, items 1-6)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any, Literal, NotRequired, TypedDict

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from langgraph.graph import END, START, StateGraph
from langgraph.types import interrupt

from approvals.forms import sign_pin
from approvals.models import Decision, Review
from tests.factories import (
    EXPENSE,
    decide,
    head,
    make_user,
    open_review,
    open_reviews,
    registered,
    row_counts,
    run_queued,
)
from tests.html import form_fields as html_form_fields
from workflows import engine, registry, services
from workflows.models import AuditEvent, Thread

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("doorbell")]

HX = {"HTTP_HX_REQUEST": "true"}
LOGIN = reverse("login")


# -- helpers ---------------------------------------------------------------------------------


def form_fields(html: str, form_id: str = "decision-form") -> dict[str, str]:
    return html_form_fields(html, form_id)


def client_for(user: User | None, **kwargs: Any) -> Client:
    client = Client(**kwargs)
    if user is not None:
        client.force_login(user)
    return client


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


def review_header(html: str) -> str:
    start = html.index('<header class="review-head">')
    return html[start : html.index("</header>", start)]


def queue_ids(html: str) -> list[int]:
    return [int(pk) for pk in re.findall(r'<tr id="review-(\d+)"', html)]


def counts(html: str) -> dict[str, int]:
    return {scope: int(n) for scope, n in re.findall(r'data-scope="(\w+)">(\d+)<', html)}


def snapshot(thread: Thread) -> tuple[dict[str, int], dict[str, Any], str]:
    """Everything a refused request must leave alone."""
    state = head(thread)
    return row_counts(), dict(state.values), engine.checkpoint_id_of(state)


def expense_thread(actor: User, title: str = "Train to Lyon", **input: Any) -> Thread:
    thread = services.start_thread(
        workflow="expense_approval", input={**EXPENSE, **input}, actor=actor, title=title
    )
    run_queued(thread)
    assert thread.status == Thread.Status.INTERRUPTED
    return thread


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def editor() -> User:
    """A reviewer of content_review only: expense_approval is another group's workflow."""
    return make_user("eddie", groups=["editors"])


@pytest.fixture
def expense(staff: User) -> Thread:
    return expense_thread(staff)


@pytest.fixture
def review(expense: Thread) -> Review:
    return open_review(expense)


@pytest.fixture
def contract(staff: User) -> Thread:
    thread = services.start_thread(
        workflow="parallel_approval",
        input={"counterparty": "Acme", "value": 5000.0},
        actor=staff,
        title="Acme contract",
    )
    run_queued(thread)
    return thread


@pytest.fixture
def rita(reviewer: User) -> Client:
    return client_for(reviewer)


@pytest.fixture
def oscar(other_reviewer: User) -> Client:
    return client_for(other_reviewer)


# -- accounts --------------------------------------------------------------------------------


def test_the_login_page_renders_and_logs_in_with_username_and_password(reviewer: User):
    client = Client()
    page = client.get(LOGIN)
    assert page.status_code == 200
    assert 'name="username"' in page.text
    assert 'name="password"' in page.text

    response = client.post(LOGIN, {"username": "rita", "password": "password"})

    assert response.status_code == 302
    assert response["Location"] == reverse("approvals:queue")
    assert client.get(reverse("approvals:queue")).status_code == 200


def test_a_wrong_password_does_not_log_in(reviewer: User):
    client = Client()
    response = client.post(LOGIN, {"username": "rita", "password": "guess"})

    assert response.status_code == 200
    assert "Please enter a correct username and password" in response.text
    assert client.get(reverse("approvals:queue")).status_code == 302


def test_logout_is_post_only_and_logs_out(rita: Client):
    assert rita.get(reverse("logout")).status_code == 405
    assert rita.get(reverse("approvals:queue")).status_code == 200

    response = rita.post(reverse("logout"))

    assert response.status_code == 302
    assert rita.get(reverse("approvals:queue")).status_code == 302


# -- who sees what (invariant 10) ------------------------------------------------------------

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


# -- CSRF ------------------------------------------------------------------------------------


def _csrf_posts(review: Review) -> dict[str, tuple[str, dict[str, Any]]]:
    form = {"pin": sign_pin(review), "action": "approve", "state__amount": "99", "state__category": "travel"}
    return {
        "decide": (decide_url(review), form),
        "claim": (reverse("approvals:claim", args=[review.pk]), {}),
        "release": (reverse("approvals:release", args=[review.pk]), {}),
        "preview": (reverse("approvals:preview", args=[review.pk]), form),
        "bulk approve": (reverse("approvals:bulk_approve"), {"review": [review.pk]}),
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


# -- the queue -------------------------------------------------------------------------------


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
    assert " ago</time>" in row
    assert "oscar" in row
    assert timezone.localtime(review.due_at).strftime("%b %-d, %H:%M") in row


@pytest.fixture
def mixed(staff: User, contract: Thread) -> dict[str, Any]:
    """Two expense claims and a contract (two parallel reviews): four open reviews."""
    lyon = expense_thread(staff, "Train to Lyon")
    laptop = expense_thread(staff, "New laptop", description="A laptop", category="equipment", amount=1500.0)
    return {
        "lyon": open_review(lyon),
        "laptop": open_review(laptop),
        "legal": open_review(contract, "legal"),
        "finance": open_review(contract, "finance"),
    }


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
    for part in ("workflow=expense_approval", "q=lyon", "sort=newest", "per_page=10", "page=2"):
        assert part in following
    assert "Page 2 of 2" in second


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


# -- bulk approve ----------------------------------------------------------------------------


def test_bulk_approve_reports_a_result_per_review(
    rita: Client, reviewer: User, other_reviewer: User, mixed: dict[str, Review]
):
    earlier = decide(mixed["laptop"], other_reviewer, "approve")
    picked = [mixed["lyon"].pk, mixed["laptop"].pk, mixed["legal"].pk]

    response = rita.post(reverse("approvals:bulk_approve"), {"review": picked}, **HX)

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
    rita: Client, mixed: dict[str, Review]
):
    response = rita.post(
        reverse("approvals:bulk_approve"), {"review": [mixed["lyon"].pk, mixed["finance"].pk]}, follow=True
    )

    assert response.redirect_chain == [(reverse("approvals:queue"), 302)]
    assert "Train to Lyon: approved" in response.text
    assert "Acme contract: needs input" in response.text
    assert mixed["lyon"].pk not in queue_ids(response.text)


def test_bulk_approving_an_expense_claim_pays_it(rita: Client, review: Review):
    rita.post(reverse("approvals:bulk_approve"), {"review": [review.pk]})
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

    response = rita.post(reverse("approvals:bulk_approve"), {"review": [mixed["legal"].pk]}, **HX)

    when = timezone.localtime(earlier.created_at).strftime("%Y-%m-%d %H:%M")
    assert f"<strong>already decided by oscar at {when}</strong>" in response.text
    assert "needs input" not in response.text
    assert Decision.objects.get(review=mixed["legal"]).actor == other_reviewer


def test_bulk_approve_of_a_withdrawn_review_says_it_no_longer_applies(
    rita: Client, admin: User, mixed: dict[str, Review]
):
    services.cancel_thread(thread=mixed["legal"].thread, actor=admin)

    response = rita.post(reverse("approvals:bulk_approve"), {"review": [mixed["legal"].pk]}, **HX)

    assert "This review was withdrawn" in response.text
    assert "needs input" not in response.text
    assert not Decision.objects.filter(review=mixed["legal"]).exists()


# -- the review page -------------------------------------------------------------------------

HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(2)>"


class InboxState(TypedDict):
    to: str
    note: NotRequired[str]


def build_inbox(allow_edit: bool = False) -> StateGraph[InboxState]:
    def ask(state: InboxState) -> dict[str, Any]:
        request = {
            "action_request": {"action": "send_mail", "args": {"to": state["to"], "subject": "Q3 numbers"}},
            "config": {
                "allow_accept": True,
                "allow_edit": allow_edit,
                "allow_respond": True,
                "allow_ignore": False,
            },
            "description": (
                "Send **the figures**? <script>alert(1)</script> <img src=x onerror=alert(2)> "
                "[click me](javascript:alert(3))"
            ),
        }
        answer = interrupt([request])[0]
        return {"note": str(answer.get("type"))}

    builder = StateGraph(InboxState)
    builder.add_node("ask", ask)
    builder.add_edge(START, "ask")
    builder.add_edge("ask", END)
    return builder


@pytest.fixture
def inbox(staff: User) -> Iterator[Thread]:
    workflow = registry.Workflow(
        name="hostile_inbox", title="Hostile inbox", builder=build_inbox, reviewer_group="finance"
    )
    with registered(workflow):
        thread = services.start_thread(workflow="hostile_inbox", input={"to": HOSTILE}, actor=staff)
        run_queued(thread)
        assert thread.status == Thread.Status.INTERRUPTED
        yield thread


def test_the_description_is_rendered_from_markdown_without_anything_that_runs(rita: Client, inbox: Thread):
    html = rita.get(review_url(open_review(inbox))).text

    description = html[html.index('<div class="description">') :]
    description = description[: description.index("</div>")]
    assert "<strong>the figures</strong>" in description
    assert "<script" not in description
    assert "onerror" not in description
    assert "javascript:" not in description
    assert "click me" in description


def test_saved_state_and_payload_are_shown_only_escaped(rita: Client, inbox: Thread):
    html = rita.get(review_url(open_review(inbox))).text

    assert "alert(1)" in html
    assert html.count("<script") == 1  # htmx, and nothing from the graph
    assert "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;" in html
    assert "Requested action: <code>send_mail</code>" in html
    assert "Q3 numbers" in html


def test_an_agent_inbox_review_offers_only_the_actions_its_config_allows(rita: Client, inbox: Thread):
    html = rita.get(review_url(open_review(inbox))).text

    offered = re.findall(r'name="action" value="(\w+)"', html)
    assert offered == ["approve", "respond"]
    assert 'name="response"' in html
    assert 'name="args"' not in html


class TypedState(TypedDict):
    flag: bool
    ratio: float
    level: Literal["low", "high"]
    label: str
    tags: list[str]
    limits: dict[str, int]


def build_typed() -> StateGraph[TypedState]:
    builder = StateGraph(TypedState)
    builder.add_node("prepare", lambda state: {"label": state["label"].strip()})
    builder.add_node("finish", lambda state: {})
    builder.add_edge(START, "prepare")
    builder.add_edge("prepare", "finish")
    builder.add_edge("finish", END)
    return builder


TYPED_INPUT = {"flag": True, "ratio": 0.5, "level": "low", "label": "Q3", "tags": ["a"], "limits": {"x": 1}}


@pytest.fixture
def typed(staff: User) -> Iterator[Thread]:
    workflow = registry.Workflow(
        name="typed_fields",
        title="Typed fields",
        builder=build_typed,
        reviewer_group="finance",
        editable=tuple(TYPED_INPUT),
        interrupt_before=("finish",),
    )
    with registered(workflow):
        thread = services.start_thread(workflow="typed_fields", input=TYPED_INPUT, actor=staff)
        run_queued(thread)
        assert thread.status == Thread.Status.INTERRUPTED
        yield thread


def _widget(html: str, name: str) -> str:
    found = re.search(rf'<(input|select|textarea)[^>]*name="state__{name}"[^>]*>', html)
    assert found is not None, name
    return found.group(0)


def test_editable_fields_get_the_widget_of_their_type(rita: Client, typed: Thread):
    html = rita.get(review_url(open_review(typed))).text

    assert 'type="checkbox"' in _widget(html, "flag")
    assert "checked" in _widget(html, "flag")
    assert 'type="number"' in _widget(html, "ratio")
    assert 'step="any"' in _widget(html, "ratio")
    assert _widget(html, "level").startswith("<select")
    options = re.findall(r'<option value="(\w+)"', html[html.index('name="state__level"') :])
    assert options[:2] == ["low", "high"]
    assert 'type="text"' in _widget(html, "label")
    assert 'value="Q3"' in _widget(html, "label")
    assert _widget(html, "tags").startswith("<textarea")
    assert 'class="json"' in _widget(html, "tags")
    assert _widget(html, "limits").startswith("<textarea")
    fields = form_fields(html)
    assert fields["state__tags"] == '["a"]'
    assert fields["state__limits"] == '{"x": 1}'


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


def test_the_review_page_shows_the_history_with_a_diff_between_checkpoints(rita: Client, review: Review):
    html = rita.get(review_url(review)).text

    history = html[html.index('<ol class="timeline">') :]
    assert '<span class="node">draft</span>' in history
    assert re.search(r'<tr class="added"><td>summary</td><td></td><td><ins>Ada claims 120.00', history)
    assert re.search(r'<tr class="added"><td>approved</td><td></td><td><ins>false</ins>', history)


def test_a_decided_review_says_who_decided_it_and_when_instead_of_waiting(
    rita: Client, other_reviewer: User, review: Review
):
    assert f"Waiting at <strong>{review.node}</strong>" in rita.get(review_url(review)).text
    decision = decide(review, other_reviewer, "approve")

    html = rita.get(review_url(review)).text

    head = review_header(html)
    when = timezone.localtime(decision.created_at).strftime("%b %-d, %H:%M")
    assert "Waiting at" not in head
    assert f"Decided at <strong>{review.node}</strong>" in head
    assert f"<strong>approve</strong> by oscar at {when}" in head


def test_a_withdrawn_review_says_so_instead_of_waiting(rita: Client, admin: User, review: Review):
    services.cancel_thread(thread=review.thread, actor=admin)

    html = rita.get(review_url(review)).text

    head = review_header(html)
    assert "Waiting at" not in head
    assert f"Withdrawn at <strong>{review.node}</strong>" in head


class TickState(TypedDict):
    count: int


def build_ticks() -> StateGraph[TickState]:
    """`tick` runs 30 times (30 checkpoints and more), then a breakpoint before `finish`."""
    builder = StateGraph(TickState)
    builder.add_node("tick", lambda state: {"count": state["count"] + 1})
    builder.add_node("finish", lambda state: {})
    builder.add_edge(START, "tick")
    builder.add_conditional_edges("tick", lambda state: "finish" if state["count"] >= 30 else "tick")
    builder.add_edge("finish", END)
    return builder


@pytest.fixture
def long_review(staff: User) -> Iterator[Review]:
    workflow = registry.Workflow(
        name="ticks",
        title="Ticks",
        builder=build_ticks,
        reviewer_group="finance",
        interrupt_before=("finish",),
    )
    with registered(workflow):
        thread = services.start_thread(workflow="ticks", input={"count": 0}, actor=staff)
        run_queued(thread)
        yield open_review(thread)


def shown_steps(html: str) -> list[int]:
    return [int(step) for step in re.findall(r'<span class="step">step (-?\d+)</span>', html)]


@pytest.mark.parametrize("page", ["review", "thread"])
def test_a_long_history_shows_its_newest_checkpoints_and_the_rest_on_asking(
    rita: Client, long_review: Review, page: str
):
    url = (
        review_url(long_review)
        if page == "review"
        else reverse("approvals:thread", args=[long_review.thread.public_id])
    )

    first = rita.get(url).text
    everything = rita.get(f"{url}?history=all").text
    fragment = rita.get(f"{url}?history=all", **HX).text

    assert shown_steps(first) == list(range(30, 10, -1))
    assert 'href="?history=all#history"' in first
    assert shown_steps(everything) == list(range(30, -2, -1))
    assert "Show older checkpoints" not in everything
    assert fragment.strip().startswith('<section class="history" id="history">')
    assert "<html" not in fragment
    assert shown_steps(fragment) == shown_steps(everything)


def test_the_thread_page_shows_a_reviewers_edit_as_a_change_by_them(rita: Client, review: Review):
    rita.post(decide_url(review), review_form(rita, review, state__amount="99.5", state__approved="on"))
    run_queued(review.thread)

    html = rita.get(reverse("approvals:thread", args=[review.thread.public_id])).text

    edit = re.search(r'<span class="node">edit</span>\s*<span class="by">by rita</span>', html)
    assert edit is not None
    assert re.search(r'<tr class="changed"><td>amount</td><td><del>120.0</del></td><td><ins>99.5</ins>', html)


def test_preview_shows_the_reviewers_changes_and_writes_nothing(rita: Client, review: Review):
    data = review_form(rita, review, state__amount="99.5")
    before = snapshot(review.thread)

    page = rita.post(reverse("approvals:preview", args=[review.pk]), data)
    fragment = rita.post(reverse("approvals:preview", args=[review.pk]), data, **HX)

    assert page.status_code == fragment.status_code == 200
    assert "<html" in page.text
    assert "<html" not in fragment.text
    for html in (page.text, fragment.text):
        assert "<td>amount</td><td><del>120.0</del></td><td><ins>99.5</ins></td>" in html
    assert snapshot(review.thread) == before


# -- claims ----------------------------------------------------------------------------------


def test_claiming_a_review_shows_the_claimer_in_the_queue(rita: Client, reviewer: User, review: Review):
    assert rita.get(review_url(review)).status_code == 200

    response = rita.post(reverse("approvals:claim", args=[review.pk]))

    assert response.status_code == 302
    review.refresh_from_db()
    assert review.claimed_by == reviewer
    row = rita.get(reverse("approvals:queue")).text
    assert re.search(rf'<tr id="review-{review.pk}">.*?<td>rita</td>', row, re.S)
    assert "You are reviewing this" in rita.get(review_url(review)).text


def test_claiming_with_htmx_returns_the_claim_fragment(rita: Client, review: Review):
    response = rita.post(reverse("approvals:claim", args=[review.pk]), **HX)

    assert response.status_code == 200
    assert response.text.lstrip().startswith('<div id="claim"')
    assert "Release it to the queue" in response.text


def test_another_reviewer_sees_the_claim_and_cannot_claim_or_decide(
    rita: Client, oscar: Client, reviewer: User, review: Review
):
    data = review_form(oscar, review, state__amount="1")
    rita.post(reverse("approvals:claim", args=[review.pk]))
    before = snapshot(review.thread)

    page = oscar.get(review_url(review)).text
    claim = oscar.post(reverse("approvals:claim", args=[review.pk]))
    decision = oscar.post(decide_url(review), data)
    htmx = oscar.post(decide_url(review), data, **HX)

    assert "Being reviewed by <strong>rita</strong>" in page
    assert claim.status_code == decision.status_code == htmx.status_code == 409
    assert "being reviewed by rita" in decision.text
    assert htmx["HX-Retarget"] == "#decision"
    assert snapshot(review.thread) == before
    review.refresh_from_db()
    assert review.claimed_by == reviewer


def test_releasing_returns_the_review_to_the_queue(rita: Client, oscar: Client, review: Review):
    rita.post(reverse("approvals:claim", args=[review.pk]))

    response = rita.post(reverse("approvals:release", args=[review.pk]))

    assert response.status_code == 302
    assert response["Location"] == reverse("approvals:queue")
    review.refresh_from_db()
    assert review.claimed_by is None
    assert counts(oscar.get(reverse("approvals:queue")).text)["unclaimed"] == 1
    assert oscar.post(reverse("approvals:claim", args=[review.pk])).status_code == 302


def test_opening_a_review_claims_it_on_load_but_releasing_it_does_not_claim_it_back(
    rita: Client, review: Review
):
    page = rita.get(review_url(review)).text
    rita.post(reverse("approvals:claim", args=[review.pk]), **HX)

    released = rita.post(reverse("approvals:release", args=[review.pk]), **HX)

    assert 'hx-trigger="load, submit"' in page
    assert released.status_code == 200
    assert released.text.lstrip().startswith('<div id="claim"')
    assert "Claim this review" in released.text
    assert "hx-trigger" not in released.text
    assert not re.search(r"\bload\b", released.text)
    review.refresh_from_db()
    assert review.claimed_by is None


def test_another_reviewer_cannot_release_someone_elses_claim(rita: Client, oscar: Client, review: Review):
    rita.post(reverse("approvals:claim", args=[review.pk]))

    assert oscar.post(reverse("approvals:release", args=[review.pk])).status_code == 409


def test_an_expired_claim_lets_another_reviewer_claim(
    rita: Client, oscar: Client, other_reviewer: User, review: Review
):
    rita.post(reverse("approvals:claim", args=[review.pk]))
    Review.objects.filter(pk=review.pk).update(claim_expires_at=timezone.now() - timedelta(seconds=1))

    assert "Being reviewed by" not in oscar.get(review_url(review)).text
    assert counts(oscar.get(reverse("approvals:queue")).text)["unclaimed"] == 1
    response = oscar.post(reverse("approvals:claim", args=[review.pk]))

    assert response.status_code == 302
    review.refresh_from_db()
    assert review.claimed_by == other_reviewer


# -- deciding (invariant 6) ------------------------------------------------------------------


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


def test_the_last_poll_of_the_thread_page_also_replaces_its_history(rita: Client, review: Review):
    thread_url = reverse("approvals:thread", args=[review.thread.public_id])
    rita.post(decide_url(review), review_form(rita, review, state__amount="99.5"))

    queued = rita.get(thread_url, **HX).text
    run_queued(review.thread)
    done = rita.get(thread_url, **HX).text
    page = rita.get(thread_url).text

    assert 'hx-trigger="every 2s"' in queued
    assert 'id="history"' not in queued
    assert "hx-swap-oob" not in queued
    assert done.lstrip().startswith('<section id="status"')
    history = done[done.index("</section>") :]
    assert '<section class="history" id="history" hx-swap-oob="true">' in history
    assert re.search(r'<span class="node">edit</span>\s*<span class="by">by rita</span>', history)
    assert "<html" not in done
    assert 'id="history"' in page
    assert "hx-swap-oob" not in page


def test_without_javascript_the_thread_page_reloads_itself_until_the_run_ends(rita: Client, review: Review):
    thread_url = reverse("approvals:thread", args=[review.thread.public_id])
    refresh = '<noscript><meta http-equiv="refresh" content="3"></noscript>'
    rita.post(decide_url(review), review_form(rita, review))

    queued = rita.get(thread_url).text
    run_queued(review.thread)
    done = rita.get(thread_url).text

    assert refresh in queued[: queued.index("</head>")]
    assert "this page updates itself until the run ends" in queued
    assert refresh not in done
    assert "updates itself" not in done


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


# -- bad input (invariant 7) -----------------------------------------------------------------


def _refused_with(client: Client, review: Review, data: dict[str, str], message: str, **extra: Any) -> str:
    events = AuditEvent.objects.count()
    before = snapshot(review.thread)

    response = client.post(decide_url(review), data, **extra)

    assert response.status_code == 422, response.status_code
    assert message in response.text
    assert snapshot(review.thread) == before
    assert AuditEvent.objects.count() == events
    review.refresh_from_db()
    assert review.status == Review.Status.OPEN
    return response.text


def test_a_wrong_type_is_a_field_error_on_the_page_and_in_the_fragment(rita: Client, review: Review):
    data = review_form(rita, review, state__amount="lots")

    page = _refused_with(rita, review, data, "Enter a number.")
    fragment = _refused_with(rita, review, data, "Enter a number.", **HX)

    assert "<html" in page
    assert "<html" not in fragment
    assert re.search(r'<div class="row invalid">\s*<label for="id_state__amount">', fragment)
    assert 'value="lots"' in fragment  # what the reviewer typed is kept


def test_a_value_outside_a_literal_is_refused(rita: Client, review: Review):
    _refused_with(rita, review, review_form(rita, review, state__category="bribes"), "Select a valid choice")


def test_json_that_does_not_parse_is_refused(rita: Client, typed: Thread):
    review = open_review(typed)
    _refused_with(rita, review, review_form(rita, review, state__tags='["a", '), "This is not valid JSON.")


def test_json_of_the_wrong_shape_is_refused(rita: Client, typed: Thread):
    review = open_review(typed)
    _refused_with(
        rita, review, review_form(rita, review, state__limits='{"x": "many"}'), "Some edits do not fit"
    )


@pytest.fixture
def editable_inbox(staff: User) -> Iterator[Review]:
    def build() -> StateGraph[InboxState]:
        return build_inbox(allow_edit=True)

    workflow = registry.Workflow(
        name="edit_inbox", title="Edit inbox", builder=build, reviewer_group="finance"
    )
    with registered(workflow):
        thread = services.start_thread(workflow="edit_inbox", input={"to": "ada@example.com"}, actor=staff)
        run_queued(thread)
        yield open_review(thread)


def test_edited_arguments_that_do_not_parse_get_one_error_not_two(rita: Client, editable_inbox: Review):
    data = review_form(rita, editable_inbox, action="edit", args='{"to": ')

    for extra in ({}, HX):
        html = _refused_with(rita, editable_inbox, data, "This is not valid JSON.", **extra)

        assert html.count("This is not valid JSON.") == 1
        assert "must be a JSON object" not in html


def test_edited_arguments_that_are_not_an_object_are_refused(rita: Client, editable_inbox: Review):
    data = review_form(rita, editable_inbox, action="edit", args='["to"]')

    html = _refused_with(rita, editable_inbox, data, "The edited arguments must be a JSON object.")

    assert "not valid JSON" not in html


def test_unknown_fields_are_refused(rita: Client, review: Review):
    data = review_form(rita, review, state__employee="Eve", is_admin="1")
    _refused_with(rita, review, data, "Unknown fields: is_admin, state__employee.")


def test_a_tampered_pin_is_refused(rita: Client, review: Review):
    data = review_form(rita, review)
    data["pin"] = data["pin"][:-2] + ("AA" if not data["pin"].endswith("AA") else "BB")
    _refused_with(rita, review, data, "This form was altered")


def test_a_missing_pin_is_refused(rita: Client, review: Review):
    _refused_with(rita, review, review_form(rita, review, pin=None), "This field is required.")


def test_a_pin_from_another_review_is_refused(rita: Client, staff: User, review: Review):
    other = open_review(expense_thread(staff, "Another claim"))
    data = review_form(rita, review, pin=sign_pin(other))
    _refused_with(rita, review, data, "This form belongs to another review")


def test_an_oversized_submission_is_refused_with_413(rita: Client, review: Review, settings: Any):
    data = review_form(rita, review, comment="x" * 5000)
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2000
    before = snapshot(review.thread)

    response = rita.post(decide_url(review), data)

    assert response.status_code == 413
    assert "The submission is too large" in response.text
    assert snapshot(review.thread) == before


def test_an_oversized_submission_is_refused_with_413_when_csrf_is_checked(
    reviewer: User, review: Review, settings: Any
):
    client = client_for(reviewer, enforce_csrf_checks=True)
    data = review_form(client, review, comment="x" * 5000)
    data["csrfmiddlewaretoken"] = client.cookies["csrftoken"].value
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2000

    response = client.post(decide_url(review), data)

    assert response.status_code == 413


def test_a_select_or_checkbox_the_graph_has_not_set_is_no_edit_when_left_alone(rita: Client, staff: User):
    workflow = registry.Workflow(
        name="typed_fields",
        title="Typed fields",
        builder=build_typed,
        reviewer_group="finance",
        editable=("flag", "level", "label"),
        interrupt_before=("finish",),
    )
    with registered(workflow):
        thread = services.start_thread(workflow="typed_fields", input={"label": "Q3"}, actor=staff)
        run_queued(thread)
        review = open_review(thread)
        data = review_form(rita, review)
        # A browser sends a select's first option and reads an unticked box as False: unset
        # fields offer "not set" / "unknown" instead, which leave them unset.
        assert data["state__level"] == ""
        assert data["state__flag"] == "unknown"

        response = rita.post(decide_url(review), data)

        assert response.status_code == 302
        assert Decision.objects.get(review=review).updates == {}


def test_leaving_a_field_the_graph_has_not_set_empty_is_not_an_edit(rita: Client, staff: User):
    post = services.start_thread(workflow="content_review", input={"topic": "release notes"}, actor=staff)
    run_queued(post)
    review = open_review(post)
    data = review_form(rita, review)
    assert data["state__audience"] == ""

    response = rita.post(decide_url(review), data)

    assert response.status_code == 302
    assert Decision.objects.get(review=review).updates == {}
    run_queued(post)
    assert "audience" not in head(post).values
