"""Bad input never gives a 500 and never fails a thread (issue 9, item 7): edits the
checkpoint cannot store are refused at the form and in the services, hostile query
parameters are filter errors, and unreadable checkpoints, unregistered workflows and a
reject racing completion get a clear page."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from approvals import services as approvals
from approvals.forms import RollbackForm
from approvals.models import Review
from tests.factories import head, open_review, paused, registered, row_counts, run_queued
from tests.fake_workflows import build_ask, build_check
from tests.pages import HX, bulk_form, client_for, refused, review_form, snapshot
from workflows import engine, limits, registry, services
from workflows.models import AuditEvent, Checkpoint, CheckpointBlob, Thread

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("doorbell")]


def nested_json(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


def nested_value(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


def _paused(staff: User, workflow: registry.Workflow) -> Iterator[Thread]:
    with paused(workflow, {"title": "Q3", "data": {"x": 1}}, staff) as thread:
        assert thread.status == Thread.Status.INTERRUPTED
        yield thread


@pytest.fixture
def asking(staff: User) -> Iterator[Thread]:
    """A thread paused at a dynamic interrupt, with a JSON field reviewers may edit."""
    workflow = registry.Workflow(
        name="ask_data",
        title="Ask about data",
        builder=build_ask,
        reviewer_group="finance",
        editable=("data",),
    )
    yield from _paused(staff, workflow)


@pytest.fixture
def checking(staff: User) -> Iterator[Thread]:
    """A thread paused at a static breakpoint, with a JSON field reviewers may edit."""
    workflow = registry.Workflow(
        name="check_data",
        title="Check data",
        builder=build_check,
        reviewer_group="finance",
        editable=("data",),
        interrupt_before=("finish",),
    )
    yield from _paused(staff, workflow)


def _refused(client: Client, review: Review, data: dict[str, str], message: str, url: str = "decide") -> str:
    """Refused alike as a page and as an htmx fragment: the fragment's HTML."""
    refused(client, review, data, message, f"approvals:{url}")
    return refused(client, review, data, message, f"approvals:{url}", **HX)


# -- edits the checkpoint cannot store -----------------------------------------------------


def test_an_edit_nested_300_deep_at_a_dynamic_interrupt_is_a_form_error_and_the_thread_runs_on(
    rita: Client, asking: Thread
):
    review = open_review(asking)

    _refused(rita, review, review_form(rita, review, state__data=nested_json(300)), "levels deep")

    response = rita.post(
        reverse("approvals:decide", args=[review.pk]), review_form(rita, review, state__data=nested_json(5))
    )
    assert response.status_code == 302
    run_queued(asking)
    assert asking.status == Thread.Status.COMPLETED
    assert head(asking).values["data"] == nested_value(5)


def test_an_edit_nested_300_deep_at_a_breakpoint_is_a_form_error(rita: Client, checking: Thread):
    review = open_review(checking)

    _refused(rita, review, review_form(rita, review, state__data=nested_json(300)), "levels deep")


@pytest.mark.parametrize("url", ["decide", "preview"])
def test_json_nested_13000_deep_is_a_form_error_not_a_recursion_error(rita: Client, asking: Thread, url: str):
    review = open_review(asking)

    # Compact, so it is within the field's length limit.
    deep = "[" * 13_000 + "]" * 13_000
    html = _refused(rita, review, review_form(rita, review, state__data=deep), "levels deep", url)

    assert "13,000 levels" in html


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"a": "x\\u0000y"}', "NUL character"),
        ('{"a": "\\ud800"}', "lone surrogate"),
        ('{"\\u0000": 1}', "NUL"),
    ],
)
@pytest.mark.parametrize("url", ["decide", "preview"])
def test_json_edits_with_nul_or_a_lone_surrogate_are_refused(
    rita: Client, checking: Thread, text: str, message: str, url: str
):
    review = open_review(checking)

    _refused(rita, review, review_form(rita, review, state__data=text), message, url)


def test_edits_larger_than_the_limit_are_refused(rita: Client, checking: Thread, settings: Any):
    settings.SIGNOFF_MAX_VALUE_BYTES = 1000
    review = open_review(checking)

    _refused(rita, review, review_form(rita, review, state__data='{"a": "%s"}' % ("x" * 2000)), "larger than")


def test_the_decision_service_refuses_what_the_checkpoint_cannot_store(checking: Thread, reviewer: User):
    review = open_review(checking)
    before = snapshot(checking)

    for updates in ({"data": nested_value(300)}, {"data": {"a": "\x00"}}, {"data": {"a": "\ud800"}}):
        with pytest.raises(approvals.InvalidDecision, match="cannot be stored"):
            approvals.decide(
                review=review,
                actor=reviewer,
                action="approve",
                checkpoint_id=review.checkpoint_id,
                updates=updates,
            )

    assert snapshot(checking) == before


def test_the_thread_services_refuse_what_the_checkpoint_cannot_store(
    asking: Thread, checking: Thread, admin: User
):
    review = open_review(asking)
    before = row_counts()

    with pytest.raises(services.InvalidState, match="cannot be stored"):
        services.resume_thread(
            thread=asking,
            actor=admin,
            resume={review.interrupt_id: "ok"},
            updates={"data": nested_value(300)},
        )
    with pytest.raises(services.InvalidState, match="cannot be stored"):
        services.start_thread(workflow="check_data", input={"title": "x\x00"}, actor=admin)
    target = list(engine.graph_for("check_data").get_state_history(engine.config_for(checking.thread_id)))
    step = next(s for s in target if not engine.is_input_checkpoint(s))
    with pytest.raises(services.InvalidState, match="cannot be stored"):
        services.rollback_thread(
            thread=checking,
            actor=admin,
            checkpoint_id=engine.checkpoint_id_of(step),
            reason="fix",
            updates={"data": nested_value(300)},
        )

    assert row_counts() == before


def test_rollback_corrections_nested_too_deep_are_a_form_error(checking: Thread):
    spec = registry.get("check_data")
    for text in (nested_json(300), "[" * 13_000 + "]" * 13_000, '{"a": "\\u0000"}'):
        form = RollbackForm(
            {"reason": "fix", "state__data": text},
            workflow=spec,
            values={"data": {"x": 1}},
        )

        assert not form.is_valid()
        assert "state__data" in form.errors


def test_the_storable_check_walks_any_depth_without_recursion():
    assert limits.storable_problem(nested_value(50)) is None
    assert "nested" in (limits.storable_problem(nested_value(100_000)) or "")
    assert limits.json_depth('["[[[", {"a": [1]}]') == 3


# -- query parameters ----------------------------------------------------------------------


@pytest.mark.parametrize("param", ["q", "workflow"])
def test_a_nul_in_a_queue_filter_is_a_filter_error(rita: Client, checking: Thread, param: str):
    response = rita.get(reverse("approvals:queue"), {param: "a\x00b"})

    assert response.status_code == 200
    assert "NUL character" in response.text


def test_a_nul_in_the_audit_actor_is_a_filter_error_and_refuses_the_export(auditor: User):
    client = client_for(auditor)

    page = client.get(reverse("approvals:audit_log"), {"actor": "sam\x00"})
    export = client.get(reverse("approvals:audit_export_csv"), {"actor": "sam\x00"})

    assert page.status_code == 200
    assert "NUL character" in page.text
    assert export.status_code == 400
    assert "NUL character" in export.content.decode()


def test_a_superscript_digit_as_a_cursor_is_a_filter_error(auditor: User):
    response = client_for(auditor).get(reverse("approvals:audit_log"), {"before": "²"})

    assert response.status_code == 200
    assert "is not an event id" in response.text


def test_a_superscript_digit_in_bulk_approve_is_ignored(rita: Client, checking: Thread):
    response = rita.post(reverse("approvals:bulk_approve"), {"review": ["²"]}, **HX)

    assert response.status_code == 200
    assert "Tick the reviews to approve first." in response.text


# -- checkpoints that cannot be read ---------------------------------------------------------


def _tamper(thread: Thread) -> None:
    CheckpointBlob.objects.filter(thread_id=thread.thread_id).update(blob=b"\xc1\xc1garbage")
    Checkpoint.objects.filter(thread_id=thread.thread_id).update(values=b"\xc1\xc1garbage")


def test_a_tampered_checkpoint_gives_an_error_page_and_one_audit_event(rita: Client, checking: Thread):
    review = open_review(checking)
    _tamper(checking)
    pages = [
        reverse("approvals:review", args=[review.pk]),
        reverse("approvals:thread", args=[checking.public_id]),
    ]

    for url in pages:
        for extra in ({}, HX, {}):
            response = rita.get(url, **extra)

            assert response.status_code == 409
            assert "checkpoint cannot be read" in response.text
    data = review_form_fields_from_nothing(review)
    assert rita.post(reverse("approvals:decide", args=[review.pk]), data).status_code == 409

    events = AuditEvent.objects.filter(thread=checking, action="checkpoint.unreadable")
    assert events.count() == 1
    assert events.get().data["checkpoint_id"]
    verified, broken = services.verify_audit_chain()
    assert broken is None


def review_form_fields_from_nothing(review: Review) -> dict[str, str]:
    from approvals.forms import sign_pin

    return {"pin": sign_pin(review), "action": "approve", "state__data": '{"x": 1}'}


def test_a_thread_written_without_the_key_now_set_gives_the_error_page(
    rita: Client, checking: Thread, settings: Any
):
    review = open_review(checking)
    settings.SIGNOFF_ENCRYPTION_KEY = b"k" * 32
    engine.forget_compiled()
    try:
        response = rita.get(reverse("approvals:review", args=[review.pk]))
    finally:
        engine.forget_compiled()

    # Its review row is refused before its checkpoint is read: both are plaintext under a key.
    assert response.status_code == 409
    assert "stored data cannot be read" in response.text


# -- workflows no longer registered ----------------------------------------------------------


def test_pages_of_a_workflow_no_longer_registered_say_so(admin: User, staff: User):
    workflow = registry.Workflow(
        name="check_gone",
        title="Gone",
        builder=build_check,
        reviewer_group="finance",
        editable=("data",),
        interrupt_before=("finish",),
    )
    with registered(workflow):
        thread = services.start_thread(workflow="check_gone", input={"title": "Q3"}, actor=staff)
        run_queued(thread)
        review = open_review(thread)
    client = client_for(admin)

    for response in (
        client.get(reverse("approvals:review", args=[review.pk])),
        client.get(reverse("approvals:thread", args=[thread.public_id])),
        client.post(reverse("approvals:decide", args=[review.pk]), review_form_fields_from_nothing(review)),
        client.post(reverse("approvals:preview", args=[review.pk]), review_form_fields_from_nothing(review)),
    ):
        assert response.status_code == 404
        assert "no longer registered" in response.text
    outcome = client.post(reverse("approvals:bulk_approve"), bulk_form(review), **HX)
    assert outcome.status_code == 200
    assert "no longer registered" in outcome.text


# -- a reject racing completion --------------------------------------------------------------


def test_a_reject_at_a_breakpoint_racing_completion_is_a_409(
    rita: Client, reviewer: User, staff: User, monkeypatch: pytest.MonkeyPatch
):
    workflow = registry.Workflow(
        name="check_race",
        title="Race",
        builder=build_check,
        reviewer_group="finance",
        interrupt_before=("finish",),
    )
    with registered(workflow):
        thread = services.start_thread(workflow="check_race", input={"title": "Q3"}, actor=staff)
        run_queued(thread)
        review = open_review(thread)
        data = review_form(rita, review, action="reject")
        real = approvals._is_reviewer

        def completes_meanwhile(user: Any, spec: Any) -> bool:
            # The thread row was read with the review; it completes before decide locks it.
            Thread.objects.filter(pk=thread.pk).update(status=Thread.Status.COMPLETED)
            return real(user, spec)

        monkeypatch.setattr(approvals, "_is_reviewer", completes_meanwhile)
        before = row_counts()

        response = rita.post(reverse("approvals:decide", args=[review.pk]), data)

        assert response.status_code == 409
        assert "no longer applies" in response.text
        assert row_counts() == before
