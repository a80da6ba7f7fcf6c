"""The review page (`approvals.views.review_detail`) and its preview: what a reviewer is shown."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from approvals.models import Review
from tests.factories import decide, open_review, paused
from tests.fake_workflows import build_inbox, ticks_workflow
from tests.pages import HX, form_fields, review_form, review_url, snapshot
from workflows import registry, services
from workflows.models import Thread

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("doorbell")]


def review_header(html: str) -> str:
    start = html.index('<header class="review-head">')
    return html[start : html.index("</header>", start)]


HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(2)>"


@pytest.fixture
def inbox(staff: User) -> Iterator[Thread]:
    workflow = registry.Workflow(
        name="hostile_inbox", title="Hostile inbox", builder=build_inbox, reviewer_group="finance"
    )
    with paused(workflow, {"to": HOSTILE}, staff) as thread:
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


@pytest.fixture
def long_review(staff: User) -> Iterator[Review]:
    with paused(ticks_workflow(), {"count": 0}, staff) as thread:
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
