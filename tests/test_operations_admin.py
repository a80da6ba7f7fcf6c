"""Operating threads from the Django admin (issue "Operations", items 1-3): the thread list and
its checkpoint timeline, rolling back to a checkpoint with corrections, retry and cancel, and
the permission each of them needs."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from approvals import queries
from approvals.forms import sign_pin
from approvals.models import Review
from tests.factories import (
    decide,
    head,
    make_thread,
    make_user,
    open_review,
    open_reviews,
    registered,
    row_counts,
    run_queued,
)
from tests.fake_workflows import CALLS, build_three_steps
from tests.html import form_fields
from tests.pages import client_for, expense_thread, grant
from workflows import engine, registry
from workflows.models import AuditEvent, Checkpoint, Run, Thread

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("doorbell")]

CHANGELIST = reverse("admin:workflows_thread_changelist")
ROLL_BACK = "Roll&nbsp;back&nbsp;to&nbsp;here"


# -- a workflow whose nodes count their calls; step3 fails on its first call -------------------


@pytest.fixture
def counted() -> Iterator[str]:
    CALLS.clear()
    workflow = registry.Workflow(name="ops_counted", title="Counted steps", builder=build_three_steps)
    with registered(workflow):
        yield workflow.name


# -- helpers ----------------------------------------------------------------------------------


def change_url(thread: Thread) -> str:
    return reverse("admin:workflows_thread_change", args=[thread.pk])


def rollback_url(thread: Thread, checkpoint_id: str) -> str:
    return reverse("admin:workflows_thread_rollback", args=[thread.pk, checkpoint_id])


def retry_url(thread: Thread) -> str:
    return reverse("admin:workflows_thread_retry", args=[thread.pk])


def cancel_url(thread: Thread) -> str:
    return reverse("admin:workflows_thread_cancel", args=[thread.pk])


def paused_expense(actor: User, **input: Any) -> Thread:
    """An expense claim drafted and stopped before `pay`, with its review open."""
    return expense_thread(actor, title="", **input)


def failed_seed(actor: User) -> Thread:
    thread = make_thread("seed_demo", {"count": 0}, actor)
    run_queued(thread)
    assert thread.status == Thread.Status.FAILED
    return thread


def before_draft(thread: Thread) -> str:
    history = engine.graph_for(thread.workflow).get_state_history(engine.config_for(thread.thread_id))
    return engine.checkpoint_id_of(next(s for s in history if s.next == ("draft",)))


def checkpoint_ids(thread: Thread) -> set[str]:
    return set(Checkpoint.objects.filter(thread_id=thread.thread_id).values_list("checkpoint_id", flat=True))


def frozen(thread: Thread) -> tuple[dict[str, int], str, dict[str, Any]]:
    """Everything a refused or read-only request must leave alone."""
    state = head(thread)
    return row_counts(), engine.checkpoint_id_of(state), dict(state.values)


def rollback_form(client: Client, thread: Thread, checkpoint_id: str, **changes: str) -> dict[str, str]:
    """The rollback form as its page renders it, with some fields changed."""
    page = client.get(rollback_url(thread, checkpoint_id))
    assert page.status_code == 200
    fields = {
        key: value
        for key, value in form_fields(page.text, "rollback-form").items()
        if key != "csrfmiddlewaretoken"
    }
    return {**fields, **changes}


def timeline_runs(html: str) -> list[str]:
    """The run column of the detail page's checkpoint timeline, as text."""
    return [re.sub(r"<[^>]+>", "", cell) for cell in re.findall(r'<td class="run">(.*?)</td>', html)]


def messages_of(response: Any) -> list[str]:
    return [str(message) for message in response.context["messages"]]


# -- personas ---------------------------------------------------------------------------------


@pytest.fixture
def ada(admin: User) -> Client:
    return client_for(admin)


@pytest.fixture
def operator() -> User:
    """Staff who may look at threads and their runs but holds no operation permission."""
    user = make_user("olga", staff=True)
    return grant(user, "view_thread", "view_run", "view_checkpoint")


@pytest.fixture
def expense(staff: User) -> Thread:
    return paused_expense(staff)


# -- the list ---------------------------------------------------------------------------------


def test_the_thread_list_shows_open_review_counts_in_a_bounded_number_of_queries(ada: Client, staff: User):
    paused_expense(staff)
    failed_seed(staff)
    with CaptureQueriesContext(connection) as few:
        small = ada.get(CHANGELIST)
    for _ in range(4):
        paused_expense(staff)

    with CaptureQueriesContext(connection) as many:
        large = ada.get(CHANGELIST)

    assert small.status_code == large.status_code == 200
    assert len(many) == len(few)
    counts = re.findall(r'<td class="field-open_reviews">(\d+)</td>', large.text)
    assert sorted(counts) == ["0", "1", "1", "1", "1", "1"]
    assert "Retry selected failed threads" in large.text
    assert "Cancel selected threads" in large.text


def test_the_thread_list_filters_by_status_and_finds_a_thread_by_its_public_id(ada: Client, staff: User):
    paused = paused_expense(staff)
    failed = failed_seed(staff)

    by_status = ada.get(CHANGELIST, {"status__exact": "failed"})
    by_id = ada.get(CHANGELIST, {"q": str(paused.public_id)})

    assert change_url(failed) in by_status.text
    assert change_url(paused) not in by_status.text
    assert change_url(paused) in by_id.text
    assert change_url(failed) not in by_id.text


# -- the detail page --------------------------------------------------------------------------


def test_the_detail_page_shows_the_timeline_newest_first_with_runs_diffs_and_escaped_state(
    ada: Client, staff: User
):
    thread = paused_expense(staff, employee="<script>alert(1)</script>")
    start = Run.objects.get(thread=thread)

    page = ada.get(change_url(thread))

    assert page.status_code == 200
    shown = re.findall(r'<tr id="checkpoint-([^"]+)">', page.text)
    assert shown == sorted(checkpoint_ids(thread), reverse=True)
    # Not the head, which a rollback would only copy, nor the input, which holds no state yet.
    assert page.text.count(ROLL_BACK) == len(shown) - 2
    assert timeline_runs(page.text) == [f"start run {start.pk}"] * len(shown)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "<script>alert(1)" not in page.text
    # Rolling back to before `draft` would drop what draft wrote: summary and approved.
    assert "2 fields differ from the head" in page.text
    assert "<strong>head</strong>" in page.text


def test_the_detail_page_links_to_the_threads_audit_trail_for_who_may_read_it(
    ada: Client, operator: User, expense: Thread
):
    trail = reverse("approvals:audit_thread", args=[expense.public_id])

    assert f'href="{trail}"' in ada.get(change_url(expense)).text
    assert f'href="{trail}"' not in client_for(operator).get(change_url(expense)).text


def test_each_checkpoint_names_the_run_that_wrote_it_and_one_written_by_a_person_names_none(
    ada: Client, expense: Thread
):
    start = Run.objects.get(thread=expense)
    ada.post(rollback_url(expense, before_draft(expense)), {"reason": "recheck"})

    entries = queries.timeline(expense)

    assert entries[0].is_head
    assert (entries[0].entry.source, entries[0].entry.actor, entries[0].run) == ("fork", "ada", None)
    assert {entry.run for entry in entries[1:]} == {start}
    assert timeline_runs(ada.get(change_url(expense)).text)[0] == "—"


def test_a_checkpoint_written_before_runs_were_recorded_in_its_metadata_shows_no_run(
    ada: Client, expense: Thread
):
    # Simulates rows saved before the worker put its run id into the checkpoint metadata.
    for row in Checkpoint.objects.filter(thread_id=expense.thread_id):
        row.metadata.pop(engine.RUN_METADATA_KEY)
        row.save(update_fields=["metadata"])

    page = ada.get(change_url(expense))

    assert page.status_code == 200
    assert all(entry.run is None for entry in queries.timeline(expense))
    assert timeline_runs(page.text) == ["—"] * Checkpoint.objects.filter(thread_id=expense.thread_id).count()


# -- rollback ---------------------------------------------------------------------------------


def test_the_rollback_page_shows_the_diff_the_nodes_that_run_again_and_the_reviews_withdrawn(
    ada: Client, reviewer: User, expense: Thread
):
    review = open_review(expense)
    Review.objects.filter(pk=review.pk).update(claimed_by=reviewer)

    page = ada.get(rollback_url(expense, before_draft(expense)))

    assert page.status_code == 200
    assert re.search(r'<p id="rerun">\s*draft\s*</p>', page.text)
    assert re.search(r"<td>pay</td><td>rita</td>", page.text)
    assert "summary" in page.text
    assert 'name="state__amount"' in page.text
    assert 'name="reason"' in page.text
    assert 'id="busy"' not in page.text


def test_rollback_without_corrections_forks_withdraws_reviews_queues_a_run_and_audits(
    ada: Client, admin: User, expense: Thread, doorbell: list[int]
):
    review = open_review(expense)
    target, was_head = before_draft(expense), engine.checkpoint_id_of(head(expense))
    history = checkpoint_ids(expense)

    response = ada.post(
        rollback_url(expense, target), rollback_form(ada, expense, target, reason="wrong receipt")
    )

    assert response.status_code == 302
    assert response["Location"] == change_url(expense)
    expense.refresh_from_db()
    review.refresh_from_db()
    assert history < checkpoint_ids(expense)
    fork = head(expense)
    assert fork.metadata["source"] == "fork"
    # LangGraph's copy is a sibling of the target: same parent, same state, same next step.
    copied = engine.graph_for(expense.workflow).get_state(
        engine.config_for(expense.thread_id, checkpoint_id=target)
    )
    assert fork.parent_config == copied.parent_config
    assert fork.values == copied.values
    assert fork.next == ("draft",)
    run = Run.objects.get(thread=expense, kind=Run.Kind.ROLLBACK)
    assert run.status == Run.Status.QUEUED
    assert run.pk in doorbell
    assert expense.status == Thread.Status.QUEUED
    assert review.status == Review.Status.CANCELLED
    event = AuditEvent.objects.get(thread=expense, action="thread.rolled_back")
    assert (event.actor_id, event.run_id) == (admin.pk, run.pk)
    assert (event.data["from"], event.data["to"], event.data["reason"]) == (was_head, target, "wrong receipt")
    assert event.data["updates"] == {"before": {}, "after": {}}

    run_queued(expense)

    # The node after the target ran again, in the rollback's run, and paused for a new review.
    assert expense.status == Thread.Status.INTERRUPTED
    assert head(expense).next == ("pay",)
    rerun = [entry for entry in queries.timeline(expense) if entry.run == run]
    assert [entry.entry.node for entry in rerun] == ["draft"]
    assert open_review(expense).checkpoint_id == engine.checkpoint_id_of(head(expense))
    assert history < checkpoint_ids(expense)


def test_rollback_with_corrections_puts_the_typed_values_in_the_new_head_and_the_audit(
    ada: Client, expense: Thread
):
    target = before_draft(expense)
    form = rollback_form(ada, expense, target, reason="receipt says 80.50", state__amount="80.5")
    form["state__category"] = "meals"

    response = ada.post(rollback_url(expense, target), form)

    assert response.status_code == 302
    values = head(expense).values
    assert values["amount"] == 80.5
    assert isinstance(values["amount"], float)
    assert values["category"] == "meals"
    event = AuditEvent.objects.get(thread=expense, action="thread.rolled_back")
    assert event.data["updates"] == {
        "before": {"amount": 120.0, "category": "travel"},
        "after": {"amount": 80.5, "category": "meals"},
    }
    run_queued(expense)
    assert head(expense).values["summary"] == "Ada claims 80.50 for meals: Train to Lyon."


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"reason": "typo", "state__amount": "lots"}, "Enter a number."),
        ({"reason": "typo", "state__category": "luxury"}, "Select a valid choice."),
        ({"reason": "", "state__amount": "80"}, "This field is required."),
        ({"reason": "   "}, "This field is required."),
        ({"reason": "typo", "state__employee": "Bob"}, "Unknown fields: state__employee."),
    ],
    ids=["wrong type", "outside the literal", "no reason", "blank reason", "not editable"],
)
def test_bad_corrections_or_a_missing_reason_are_form_errors_and_write_nothing(
    ada: Client, expense: Thread, changes: dict[str, str], error: str
):
    target = before_draft(expense)
    form = rollback_form(ada, expense, target, **changes)
    before = frozen(expense)

    response = ada.post(rollback_url(expense, target), form)

    assert response.status_code == 422
    assert error in response.text
    assert frozen(expense) == before
    assert open_review(expense).status == Review.Status.OPEN
    assert not AuditEvent.objects.filter(action="thread.rolled_back").exists()


def test_rollback_while_a_run_is_active_is_refused_with_the_message_and_writes_nothing(
    ada: Client, reviewer: User, expense: Thread
):
    target = before_draft(expense)
    form = rollback_form(ada, expense, target, reason="redo")
    decide(open_review(expense), reviewer, "approve")
    before = frozen(expense)

    page = ada.get(rollback_url(expense, target))
    refused = ada.post(rollback_url(expense, target), form)

    assert 'id="busy"' in page.text
    assert "resume run" in page.text
    assert "queued" in page.text
    assert refused.status_code == 409
    # Said once, in the box at the top, not again as a form error.
    assert refused.text.count('class="errornote"') == 1
    assert 'id="busy"' in refused.text
    assert "Please correct the errors below" not in refused.text
    assert frozen(expense) == before


def test_an_unknown_checkpoint_one_of_another_thread_or_the_input_is_a_404(
    ada: Client, staff: User, expense: Thread
):
    other = paused_expense(staff)
    history = engine.graph_for(expense.workflow).get_state_history(engine.config_for(expense.thread_id))
    the_input = next(s for s in history if (s.metadata or {}).get("source") == "input")
    before = frozen(expense)

    for checkpoint_id in ("no-such-checkpoint", before_draft(other), engine.checkpoint_id_of(the_input)):
        assert ada.get(rollback_url(expense, checkpoint_id)).status_code == 404
        assert ada.post(rollback_url(expense, checkpoint_id), {"reason": "x"}).status_code == 404

    assert frozen(expense) == before


def test_a_decision_on_a_review_withdrawn_by_a_rollback_gets_a_409(
    ada: Client, reviewer: User, expense: Thread
):
    review = open_review(expense)
    rita = client_for(reviewer)
    decision = {
        "pin": sign_pin(review),
        "action": "approve",
        "state__amount": "120",
        "state__category": "travel",
    }
    ada.post(rollback_url(expense, before_draft(expense)), {"reason": "recheck"})
    before = frozen(expense)

    response = rita.post(reverse("approvals:decide", args=[review.pk]), decision)

    assert response.status_code == 409
    assert "withdrawn" in response.text
    assert frozen(expense) == before


# -- retry and cancel -------------------------------------------------------------------------


def test_retry_from_the_detail_page_reruns_only_the_node_that_failed(ada: Client, admin: User, counted: str):
    thread = make_thread(counted, {"count": 0}, admin)
    run_queued(thread)
    assert thread.status == Thread.Status.FAILED
    before = frozen(thread)

    detail = ada.get(change_url(thread))
    confirm = ada.get(retry_url(thread))
    assert frozen(thread) == before
    response = ada.post(retry_url(thread), follow=True)

    assert retry_url(thread) in detail.text
    assert confirm.status_code == 200
    assert "only the node that failed runs again" in confirm.text
    assert response.redirect_chain == [(change_url(thread), 302)]
    assert any("retried" in message for message in messages_of(response))
    event = AuditEvent.objects.get(thread=thread, action="thread.retried")
    assert event.actor_id == admin.pk
    run_queued(thread)
    assert thread.status == Thread.Status.COMPLETED
    assert head(thread).values == {"count": 3}
    assert CALLS == {"step1": 1, "step2": 1, "step3": 2}


def test_the_retry_action_asks_first_then_retries_failed_threads_and_skips_the_others(
    ada: Client, staff: User
):
    failed, paused = failed_seed(staff), paused_expense(staff)
    selected = {"action": "retry_threads", "_selected_action": [failed.pk, paused.pk]}
    before = row_counts()

    confirm = ada.post(CHANGELIST, {**selected, "index": "0"})

    assert confirm.status_code == 200
    assert "Yes, retry" in confirm.text
    assert row_counts() == before

    done = ada.post(CHANGELIST, {**selected, "post": "yes"}, follow=True)

    said = messages_of(done)
    assert f"{failed} (#{failed.pk}): retried; run" in " ".join(said)
    assert f"{paused} (#{paused.pk}): interrupted, not failed: skipped." in said
    failed.refresh_from_db()
    paused.refresh_from_db()
    assert (failed.status, paused.status) == (Thread.Status.QUEUED, Thread.Status.INTERRUPTED)
    run_queued(failed)
    assert failed.status == Thread.Status.COMPLETED
    assert head(failed).values == {"count": 3}


def test_cancel_from_the_detail_page_needs_a_reason_then_stops_the_thread_and_withdraws_its_review(
    ada: Client, admin: User, expense: Thread
):
    review = open_review(expense)
    before = frozen(expense)

    detail = ada.get(change_url(expense))
    confirm = ada.get(cancel_url(expense))
    no_reason = ada.post(cancel_url(expense), {"reason": ""})
    assert frozen(expense) == before
    response = ada.post(cancel_url(expense), {"reason": "duplicate claim"}, follow=True)

    assert cancel_url(expense) in detail.text
    assert confirm.status_code == 200
    assert 'name="reason"' in confirm.text
    assert no_reason.status_code == 422
    assert "This field is required." in no_reason.text
    assert response.redirect_chain == [(change_url(expense), 302)]
    assert f"{expense} (#{expense.pk}): cancelled." in messages_of(response)
    expense.refresh_from_db()
    review.refresh_from_db()
    assert expense.status == Thread.Status.CANCELLED
    assert review.status == Review.Status.CANCELLED
    event = AuditEvent.objects.get(thread=expense, action="thread.cancelled")
    assert (event.actor_id, event.data["reason"]) == (admin.pk, "duplicate claim")
    assert cancel_url(expense) not in ada.get(change_url(expense)).text


def test_the_cancel_action_cancels_the_selected_threads_and_skips_finished_ones(ada: Client, staff: User):
    paused, failed = paused_expense(staff), failed_seed(staff)
    ada.post(cancel_url(failed), {"reason": "earlier"})
    selected = {"action": "cancel_threads", "_selected_action": [paused.pk, failed.pk]}

    confirm = ada.post(CHANGELIST, {**selected, "index": "0"})
    no_reason = ada.post(CHANGELIST, {**selected, "post": "yes"})
    done = ada.post(CHANGELIST, {**selected, "post": "yes", "reason": "test data"}, follow=True)

    assert confirm.status_code == 200
    assert 'name="reason"' in confirm.text
    assert no_reason.status_code == 422
    said = messages_of(done)
    assert f"{paused} (#{paused.pk}): cancelled." in said
    assert f"{failed} (#{failed.pk}): already cancelled: skipped." in said
    paused.refresh_from_db()
    assert paused.status == Thread.Status.CANCELLED
    assert open_reviews(paused) == []
    event = AuditEvent.objects.get(thread=paused, action="thread.cancelled")
    assert event.data["reason"] == "test data"


# -- permissions and safety -------------------------------------------------------------------


OPERATIONS = {
    "rollback_thread": lambda thread: rollback_url(thread, before_draft(thread)),
    "retry_thread": retry_url,
    "cancel_thread": cancel_url,
}


@pytest.mark.parametrize("permission", list(OPERATIONS))
def test_an_admin_without_an_operations_permission_gets_a_403_and_writes_nothing(
    operator: User, expense: Thread, permission: str
):
    # Every permission but the one under test.
    user = grant(operator, *(other for other in OPERATIONS if other != permission))
    client = client_for(user)
    url = OPERATIONS[permission](expense)
    before = frozen(expense)

    get = client.get(url)
    post = client.post(url, {"reason": "because"})

    assert (get.status_code, post.status_code) == (403, 403)
    assert frozen(expense) == before


def test_without_the_permissions_the_actions_and_buttons_are_hidden_and_posting_one_does_nothing(
    operator: User, staff: User
):
    failed = failed_seed(staff)
    client = client_for(operator)
    before = frozen(failed)

    listing = client.get(CHANGELIST)
    detail = client.get(change_url(failed))
    posted = client.post(
        CHANGELIST, {"action": "retry_threads", "_selected_action": [failed.pk], "index": "0"}
    )

    assert listing.status_code == detail.status_code == 200
    assert "retry_threads" not in listing.text
    assert "cancel_threads" not in listing.text
    assert retry_url(failed) not in detail.text
    assert cancel_url(failed) not in detail.text
    assert ROLL_BACK not in detail.text
    # With no action it may run, the list ignores the posted one: no confirmation, no write.
    assert "Yes, retry" not in posted.text
    assert frozen(failed) == before


def test_each_permission_opens_its_own_operation_only(operator: User, expense: Thread):
    client = client_for(grant(operator, "rollback_thread"))

    assert client.get(rollback_url(expense, before_draft(expense))).status_code == 200
    assert client.get(retry_url(expense)).status_code == 403
    assert client.get(cancel_url(expense)).status_code == 403
    assert ROLL_BACK in client.get(change_url(expense)).text


def test_a_superuser_may_do_every_operation(ada: Client, expense: Thread):
    for url in OPERATIONS.values():
        assert ada.get(url(expense)).status_code == 200


def test_staff_without_any_permission_cannot_see_or_operate_threads(staff: User, expense: Thread):
    client = client_for(staff)
    before = frozen(expense)

    responses = [
        client.get(CHANGELIST),
        client.get(change_url(expense)),
        *(client.get(url(expense)) for url in OPERATIONS.values()),
        *(client.post(url(expense), {"reason": "x"}) for url in OPERATIONS.values()),
    ]

    assert {response.status_code for response in responses} == {403}
    assert frozen(expense) == before


def test_get_never_writes(ada: Client, staff: User, expense: Thread):
    failed = failed_seed(staff)
    before = frozen(expense), frozen(failed)

    pages = [
        ada.get(CHANGELIST),
        ada.get(change_url(expense)),
        ada.get(change_url(failed)),
        ada.get(rollback_url(expense, before_draft(expense))),
        ada.get(retry_url(failed)),
        ada.get(cancel_url(expense)),
        ada.get(cancel_url(failed)),
    ]

    assert {page.status_code for page in pages} == {200}
    assert (frozen(expense), frozen(failed)) == before
