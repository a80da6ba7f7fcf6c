"""The review page shows the state once, with the editable fields as inputs in place; its
preview shows every change a decision makes, the action's own too; long values fold; the
thread page lists each review's decision and comment (issue 13, item 3)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from langgraph.graph import StateGraph

from approvals import queries
from approvals import services as approvals
from approvals.models import Approval, Decision, Review
from tests.factories import decide, make_thread, make_user, open_review, paused, run_queued
from tests.fake_workflows import InboxState, build_inbox, build_typed
from tests.pages import HX, client_for, decide_url, expense_thread, form_fields, review_form, review_url
from workflows import registry
from workflows.models import Thread

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("doorbell")]

EXPENSE_FIELDS = ["employee", "description", "amount", "category", "summary", "approved"]


def state_table(html: str) -> str:
    start = html.index('<table class="state-table">')
    return html[start : html.index("</table>", start)]


def rows(html: str) -> dict[str, str]:
    """Each row of the state table by its field's name, as HTML."""
    table = state_table(html)
    found = re.findall(r'<tr class="state-row[^"]*" data-field="(\w+)">(.*?)</tr>', table, re.S)
    return dict(found)


def test_every_field_is_shown_once_and_the_editable_ones_are_the_inputs(rita: Client, review: Review):
    html = rita.get(review_url(review)).text

    table = rows(html)
    assert sorted(table) == sorted(EXPENSE_FIELDS)
    assert html.count('<table class="state-table">') == 1
    for name in EXPENSE_FIELDS:
        assert state_table(html).count(f'data-field="{name}"') == 1, name
        assert html.count(f'name="state__{name}"') == (1 if name in ("amount", "category", "approved") else 0)
    assert 'name="state__amount"' in table["amount"]
    assert 'value="120.0"' in table["amount"]
    assert "<input" not in table["employee"]
    assert "<code>Ada</code>" in table["employee"]
    assert "Edit state" not in html
    assert "Saved state" not in html
    # The inputs in the table are the decision form's: a browser submits them with it.
    assert form_fields(html)["state__amount"] == "120.0"


def test_edited_values_reach_the_decision_typed_as_before(rita: Client, review: Review):
    data = review_form(rita, review, action="approve", state__amount="99.5", state__category="meals")

    response = rita.post(decide_url(review), data)

    assert response.status_code == 302
    decision = Decision.objects.get(review=review)
    assert decision.updates == {"after": {"amount": 99.5, "category": "meals", "approved": True}}


def test_a_field_error_shows_in_its_row_with_what_was_typed(rita: Client, review: Review):
    data = review_form(rita, review, state__amount="lots")

    fragment = rita.post(decide_url(review), data, **HX)

    assert fragment.status_code == 422
    amount = r'<tr class="state-row editable invalid" data-field="amount">(.*?)</tr>'
    row = re.search(amount, fragment.text, re.S)
    assert row is not None
    assert "Enter a number." in row.group(1)
    assert 'value="lots"' in row.group(1)
    assert fragment.text.count('data-field="amount"') == 1


def test_a_decided_review_shows_the_state_as_values_without_inputs(
    rita: Client, other_reviewer: User, review: Review
):
    decide(review, other_reviewer, "approve", updates={"amount": 99.5})

    html = rita.get(review_url(review)).text

    table = rows(html)
    assert sorted(table) == sorted(EXPENSE_FIELDS)
    assert 'name="state__' not in html
    assert 'id="decision-form"' not in html
    assert "editable" in table["amount"]


def preview_rows(html: str) -> dict[str, str]:
    preview = html[html.index('<div id="preview"') :]
    return dict(re.findall(r'<tr class="[^"]*" data-field="(\w+)">(.*?)</tr>', preview, re.S))


def test_the_preview_shows_what_the_action_sets_marked_as_the_actions(rita: Client, review: Review):
    data = review_form(rita, review, action="approve", state__amount="99.5")

    html = rita.post(reverse("approvals:preview", args=[review.pk]), data, **HX).text

    changes = preview_rows(html)
    assert sorted(changes) == ["amount", "approved"]
    assert 'data-set-by="approve"' in changes["approved"]
    assert "<del>false</del>" in changes["approved"]
    assert "<ins>true</ins>" in changes["approved"]
    assert "data-set-by" not in changes["amount"]
    assert "your edit" in changes["amount"]
    assert "The thread goes on from “pay”." in html


def test_the_preview_of_an_approve_without_edits_still_shows_the_actions_change(rita: Client, review: Review):
    data = review_form(rita, review, action="approve")

    html = rita.post(reverse("approvals:preview", args=[review.pk]), data).text

    assert "<html" in html
    changes = preview_rows(html)
    assert list(changes) == ["approved"]
    assert "set by approve" in changes["approved"]


def test_the_preview_says_when_the_action_overrides_the_reviewers_edit(rita: Client, review: Review):
    # Ticking approved and approving: the action's True is what is written, over the tick.
    data = review_form(rita, review, action="approve", state__approved="on")

    changes = preview_rows(rita.post(reverse("approvals:preview", args=[review.pk]), data, **HX).text)

    assert "over your edit" in changes["approved"]


def test_the_preview_of_a_reject_shows_no_change_the_action_does_not_make(rita: Client, review: Review):
    # The expense's on_reject sets approved=False, which it already is: nothing to show.
    data = review_form(rita, review, action="reject")

    html = rita.post(reverse("approvals:preview", args=[review.pk]), data, **HX).text

    assert preview_rows(html) == {}
    assert "No field changes" in html


LONG_LABEL = "word " * 80
MANY_TAGS = [f"tag-{n}" for n in range(20)]


@pytest.fixture
def long_values(staff: User) -> Iterator[Review]:
    workflow = registry.Workflow(
        name="long_values",
        title="Long values",
        builder=build_typed,
        reviewer_group="finance",
        editable=("label",),
        interrupt_before=("finish",),
    )
    state = {"flag": True, "ratio": 0.5, "level": "low", "label": LONG_LABEL, "tags": MANY_TAGS}
    state["limits"] = {"x": 1}
    with paused(workflow, state, staff) as thread:
        yield open_review(thread)


def test_long_values_and_many_items_fold_and_short_ones_do_not(rita: Client, long_values: Review):
    html = rita.get(review_url(long_values)).text

    table = rows(html)
    assert '<details class="fold"><summary>' in table["tags"]
    assert "(20 items)" in table["tags"]
    assert "tag-19" in table["tags"]  # folded, not cut: the whole value is in the page
    assert "<details" not in table["limits"]
    assert "<details" not in table["ratio"]
    # An input is never folded away: the reviewer must see what they submit.
    assert "<details" not in table["label"]
    assert "<textarea" in table["label"]


def test_a_long_value_folds_in_the_preview(rita: Client, long_values: Review):
    data = review_form(rita, long_values, action="approve", state__label="other " * 80)

    changes = preview_rows(rita.post(reverse("approvals:preview", args=[long_values.pk]), data, **HX).text)

    assert changes["label"].count('<details class="fold">') == 2
    assert "characters)" in changes["label"]


# -- the thread page's Decisions ---------------------------------------------------------------


def decisions_section(html: str) -> str:
    start = html.index('<section class="decisions" id="decisions">')
    return html[start : html.index("</section>", start)]


def thread_url(thread: Thread) -> str:
    return reverse("approvals:thread", args=[thread.public_id])


def test_the_thread_page_shows_each_decision_with_its_comment(rita: Client, reviewer: User, review: Review):
    decide(review, reviewer, "approve", comment="Receipt checked <b>twice</b>.")

    section = decisions_section(rita.get(thread_url(review.thread)).text)

    assert f'data-review="{review.pk}"' in section
    assert "<strong data-action>approve</strong> by <strong data-by>rita</strong>" in section
    assert "Receipt checked &lt;b&gt;twice&lt;/b&gt;." in section
    assert "editing approved" in section


def test_a_decision_by_the_deadline_says_timeout(rita: Client, review: Review):
    approvals.decide(
        review=review,
        actor=None,
        actor_label=approvals.TIMEOUT,
        action="reject",
        checkpoint_id=review.checkpoint_id,
    )

    section = decisions_section(rita.get(thread_url(review.thread)).text)

    assert "<strong data-action>reject</strong> by <strong data-by>timeout</strong>" in section


def test_an_open_review_is_listed_as_waiting(rita: Client, review: Review):
    section = decisions_section(rita.get(thread_url(review.thread)).text)

    assert f'data-review="{review.pk}"' in section
    assert "waiting since" in section


@pytest.fixture
def quorum_claim(staff: User) -> Thread:
    claim = {"employee": "Ada", "description": "Hotel", "amount": 300.0}
    thread = make_thread("test_four_eyes", claim, staff)
    run_queued(thread)
    return thread


def test_partial_approvals_of_a_quorum_review_show_with_their_comments(quorum_claim: Thread):
    quinn = make_user("quinn", groups=["quorum", "quorum_finance"])
    fred = make_user("fred", groups=["quorum", "quorum_finance"])
    review = open_review(quorum_claim)
    first = decide(review, quinn, "approve", comment="Fine by me.")
    assert isinstance(first, Approval)
    client = client_for(quinn)

    waiting = decisions_section(client.get(thread_url(quorum_claim)).text)
    decide(review, fred, "approve", comment="Agreed.")
    decided = decisions_section(client.get(thread_url(quorum_claim)).text)

    assert 'data-approver="quinn"' in waiting
    assert "Fine by me." in waiting
    assert "waiting since" in waiting
    assert "<strong data-by>fred</strong>" in decided
    assert "Agreed." in decided
    assert 'data-approver="quinn"' in decided
    assert "Fine by me." in decided


def test_decisions_are_not_shown_to_someone_who_cannot_see_the_thread(reviewer: User, review: Review):
    decide(review, reviewer, "approve", comment="A private remark.")
    outsider = client_for(make_user("nina", groups=["editors"]))

    response = outsider.get(thread_url(review.thread))

    assert response.status_code == 404
    assert "A private remark." not in response.text


def test_the_decisions_take_two_queries_however_many_reviews_and_approvals(
    reviewer: User, other_reviewer: User, staff: User, quorum_claim: Thread
):
    quinn = make_user("quinn", groups=["quorum", "quorum_finance"])
    decide(open_review(quorum_claim), quinn, "approve", comment="one")
    threads = [expense_thread(staff, f"Claim {n}") for n in range(3)]
    for thread in threads[1:]:
        decide(open_review(thread), reviewer, "reject", comment="no")

    counted = []
    for thread in [threads[0], *threads[1:], quorum_claim]:
        with CaptureQueriesContext(connection) as captured:
            shown = [
                (
                    outcome.decision.decided_by if outcome.decision else "",
                    outcome.decision.comment if outcome.decision else "",
                    [(a.actor.get_username(), a.comment) for a in outcome.approvals],
                )
                for outcome in queries.thread_decisions(thread)
            ]
        assert shown
        counted.append(len(captured))

    assert counted == [2, 2, 2, 2]


def test_the_thread_page_queries_do_not_grow_with_its_reviews(rita: Client, staff: User, reviewer: User):
    one = expense_thread(staff, "One review")
    decide(open_review(one), reviewer, "reject", comment="no")
    # A second pause on the same thread: a rollback would do, but two threads with one and
    # three decided reviews compare the same way; the parallel contract has two reviews.
    contract = make_thread("parallel_approval", {"counterparty": "Acme", "value": 5000.0}, staff)
    run_queued(contract)
    for review in Review.objects.filter(thread=contract, status=Review.Status.OPEN):
        decide(review, reviewer, "approve", comment=f"ok {review.node}")

    def page_queries(thread: Thread) -> int:
        with CaptureQueriesContext(connection) as captured:
            response = rita.get(thread_url(thread))
        assert response.status_code == 200
        return len([q for q in captured.captured_queries if "approvals_" in q["sql"]])

    assert Review.objects.filter(thread=contract).count() >= 2
    assert page_queries(contract) == page_queries(one)


def test_the_preview_of_a_first_approval_of_two_says_the_thread_waits_for_the_second(quorum_claim: Thread):
    quinn = client_for(make_user("quinn", groups=["quorum", "quorum_finance"]))
    review = open_review(quorum_claim)
    url = reverse("approvals:preview", args=[review.pk])

    first = quinn.post(url, review_form(quinn, review, action="approve"), **HX).text
    edited = quinn.post(url, review_form(quinn, review, action="approve", state__amount="250"), **HX).text

    assert "Your approval is counted (1 of 2)" in first
    assert "The thread goes on" not in first
    assert "Your edits restart the count" in edited


def test_the_preview_of_a_reject_without_on_reject_says_the_thread_stops(rita: Client, typed: Thread):
    review = open_review(typed)
    assert review.kind == Review.Kind.BREAKPOINT
    data = review_form(rita, review, action="reject")

    html = rita.post(reverse("approvals:preview", args=[review.pk]), data, **HX).text

    # typed_fields has no on_reject: rejecting at its breakpoint stops the thread.
    assert "Rejecting cancels the thread: it will not go on." in html


@pytest.fixture
def editable_request(staff: User) -> Iterator[Review]:
    def build() -> StateGraph[InboxState]:
        return build_inbox(allow_edit=True)

    workflow = registry.Workflow(
        name="edit_request", title="Edit request", builder=build, reviewer_group="finance"
    )
    with paused(workflow, {"to": "ada@example.com"}, staff) as thread:
        yield open_review(thread)


def test_editable_request_arguments_are_shown_once_as_the_input(rita: Client, editable_request: Review):
    html = rita.get(review_url(editable_request)).text

    start = html.index('<section class="about">')
    about = html[start : html.index("</section>", start)]
    assert "Requested action: <code>send_mail</code>" in about
    assert "ada@example.com" not in about
    assert "ada@example.com" in form_fields(html)["args"]


def test_decided_request_arguments_are_shown_as_text(
    rita: Client, other_reviewer: User, editable_request: Review
):
    decide(editable_request, other_reviewer, "approve")

    html = rita.get(review_url(editable_request)).text

    assert 'name="args"' not in html
    assert "ada@example.com" in html[html.index('<section class="about">') :]
