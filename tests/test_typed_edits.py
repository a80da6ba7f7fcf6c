"""Edits keep their types (issue 9, item 3): whatever the field's type in the state schema, an
edit reaches the graph as that type, at every entry point, and what is stored about it (the
decision, the run's command, the audit trail) is JSON that loads back to the same value."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from approvals.forms import RollbackForm
from approvals.models import Decision, Review
from tests.factories import EXPENSE, decide, head, make_user, open_review, run_queued
from tests.fake_workflows import Address, Level, Point
from tests.html import form_fields
from tests.pages import bulk_form, client_for, decide_url, opened, review_form
from workflows import engine, registry, services
from workflows.models import AuditEvent, Run, Thread

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("doorbell")]


@dataclass(frozen=True)
class Case:
    field: str
    # What JSON carries for the value (the start input, the JSON editor's text).
    json_value: Any
    # The value the graph must find, and the type it must have.
    expected: Any
    type_name: str
    # Fields with their own widget take the plain text; the others a JSON editor.
    widget: bool = False

    @property
    def form_text(self) -> str:
        return str(self.json_value) if self.widget else json.dumps(self.json_value)

    def __str__(self) -> str:
        return self.field


CASES = [
    Case("level", "high", Level.HIGH, "tests.fake_workflows.Level", widget=True),
    Case("choice", "b", "b", "builtins.str", widget=True),
    Case("price", "99.50", Decimal("99.50"), "decimal.Decimal", widget=True),
    Case("day", "2026-03-04", date(2026, 3, 4), "datetime.date"),
    Case(
        "moment",
        "2026-03-04T05:06:07.123456+00:00",
        datetime(2026, 3, 4, 5, 6, 7, 123456, tzinfo=UTC),
        "datetime.datetime",
    ),
    Case("ref", "00000000-0000-4000-8000-000000000001", UUID(int=0x40008000000000000001), "uuid.UUID"),
    Case(
        "address",
        {"city": "Lyon", "since": "2026-03-04"},
        Address(city="Lyon", since=date(2026, 3, 4)),
        "tests.fake_workflows.Address",
    ),
    Case(
        "stops",
        [{"city": "Lyon", "since": "2026-03-04"}, {"city": "Nice", "since": "2026-03-05"}],
        [Address(city="Lyon", since=date(2026, 3, 4)), Address(city="Nice", since=date(2026, 3, 5))],
        "list[tests.fake_workflows.Address]",
    ),
    Case("point", {"x": 1, "y": 2}, Point(1, 2), "tests.fake_workflows.Point"),
]
# The start input, as JSON (a command line or an API would send it).
BASE: dict[str, Any] = {
    "level": "low",
    "choice": "a",
    "price": "1.00",
    "day": "2026-01-01",
    "moment": "2026-01-01T00:00:00+00:00",
    "ref": "00000000-0000-4000-8000-000000000000",
    "address": {"city": "Paris", "since": "2026-01-01"},
    "stops": [{"city": "Paris", "since": "2026-01-01"}],
    "point": {"x": 0, "y": 0},
}
ON_APPROVE_EXPECTED: dict[str, Any] = {
    "level": Level.HIGH,
    "choice": "c",
    "price": Decimal("12.30"),
    "day": date(2027, 2, 3),
    "moment": datetime(2027, 2, 3, 4, 5, 6, 789012, tzinfo=UTC),
    "ref": UUID("00000000-0000-4000-8000-000000000002"),
    "address": Address(city="Oslo", since=date(2027, 2, 3)),
    "stops": [Address(city="Oslo", since=date(2027, 2, 3)), Address(city="Bergen", since=date(2027, 2, 4))],
    "point": Point(7, 8),
}


@pytest.fixture
def client(tester: User) -> Client:
    return client_for(tester)


def started(workflow: str, input: dict[str, Any] | None = None) -> Thread:
    thread = services.start_thread(workflow=workflow, input=input or BASE, actor=None)
    run_queued(thread)
    assert thread.status == Thread.Status.INTERRUPTED, thread.error
    return thread


def post_review(client: Client, review: Review, **changes: str) -> None:
    edits = {f"state__{name}": text for name, text in changes.items()}
    data = review_form(client, review, action="approve", **edits)
    response = client.post(decide_url(review), data)
    assert response.status_code == 302, response.content.decode()[:3000]


def assert_graph_saw(thread: Thread, field: str, expected: Any, type_name: str) -> None:
    run_queued(thread)
    assert thread.status == Thread.Status.COMPLETED, thread.error
    values = head(thread).values
    assert values["seen"][field] == type_name
    assert values[field] == expected


def loads_back(workflow: str, field: str, stored: Any) -> Any:
    """A stored edit read back as the graph gets it, after a trip through the database's JSON."""
    return registry.get(workflow).load_updates(json.loads(json.dumps(stored, allow_nan=False)))[field]


def audit_data(thread: Thread, action: str) -> Any:
    return AuditEvent.objects.filter(thread=thread, action=action).order_by("-id").first().data  # type: ignore[union-attr]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_an_edit_in_the_review_form_at_a_breakpoint_reaches_the_graph_as_its_type(client: Client, case: Case):
    thread = started("test_typed_breakpoint")

    post_review(client, open_review(thread), **{case.field: case.form_text})

    decision = Decision.objects.get(review__thread=thread)
    assert loads_back(thread.workflow, case.field, decision.updates["after"]) == case.expected
    assert (
        loads_back(thread.workflow, case.field, audit_data(thread, "review.decided")["updates"])
        == case.expected
    )
    resumed = audit_data(thread, "thread.resumed")["updates"]["after"]
    assert loads_back(thread.workflow, case.field, resumed) == case.expected
    assert_graph_saw(thread, case.field, case.expected, case.type_name)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_an_edit_at_a_dynamic_interrupt_reaches_the_graph_as_its_type(client: Client, case: Case):
    thread = started("test_typed_interrupt")

    post_review(client, open_review(thread), **{case.field: case.form_text})

    run = Run.objects.get(thread=thread, kind=Run.Kind.RESUME)
    assert loads_back(thread.workflow, case.field, run.command["update"]) == case.expected
    decision = Decision.objects.get(review__thread=thread)
    assert loads_back(thread.workflow, case.field, decision.updates["after"]) == case.expected
    assert_graph_saw(thread, case.field, case.expected, case.type_name)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_a_rollback_correction_reaches_the_graph_as_its_type(tester: User, case: Case):
    admin = make_user("ada", superuser=True)
    thread = started("test_typed_breakpoint")
    decide(open_review(thread), tester, "approve")
    run_queued(thread)
    assert thread.status == Thread.Status.COMPLETED, thread.error
    graph = engine.graph_for(thread.workflow)
    target = next(
        snapshot
        for snapshot in graph.get_state_history(engine.config_for(thread.thread_id))
        if snapshot.next == ("look",)
    )
    spec = registry.get(thread.workflow)
    form = RollbackForm(
        {"reason": "wrong value", f"state__{case.field}": case.form_text}, workflow=spec, values=target.values
    )
    assert form.is_valid(), form.errors
    assert list(form.corrections()) == [case.field]

    services.rollback_thread(
        thread=thread,
        actor=admin,
        checkpoint_id=engine.checkpoint_id_of(target),
        reason="wrong value",
        updates=form.corrections(),
    )

    corrected = audit_data(thread, "thread.rolled_back")["updates"]["after"]
    assert loads_back(thread.workflow, case.field, corrected) == case.expected
    run_queued(thread)
    assert thread.status == Thread.Status.INTERRUPTED, thread.error
    decide(open_review(thread), tester, "approve")
    assert_graph_saw(thread, case.field, case.expected, case.type_name)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_what_bulk_approve_sets_reaches_the_graph_as_its_type(client: Client, tester: User, case: Case):
    thread = started("test_typed_bulk")
    review = open_review(thread)
    opened(tester, review)

    response = client.post(reverse("approvals:bulk_approve"), bulk_form(review))

    assert response.status_code == 302
    decision = Decision.objects.get(review=review)
    expected = ON_APPROVE_EXPECTED[case.field]
    assert loads_back(thread.workflow, case.field, decision.updates["after"]) == expected
    assert_graph_saw(thread, case.field, expected, case.type_name)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_the_start_input_reaches_the_graph_as_its_type(tester: User, case: Case):
    thread = started("test_typed_breakpoint", {**BASE, case.field: case.json_value})

    assert registry.get(thread.workflow).load_input(thread.input)[case.field] == case.expected
    decide(open_review(thread), tester, "approve")
    assert_graph_saw(thread, case.field, case.expected, case.type_name)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("category", "nope"),
        ("amount", "lots"),
        ("approved", "yes"),
    ],
)
def test_start_thread_refuses_input_that_does_not_fit_and_names_the_field(field: str, value: Any):
    with pytest.raises(services.InvalidState) as refused:
        services.start_thread(workflow="expense_approval", input={**EXPENSE, field: value}, actor=None)

    assert field in str(refused.value)
    assert not Thread.objects.exists()


def test_start_thread_refuses_a_field_the_state_schema_does_not_have():
    with pytest.raises(services.InvalidState, match="colour"):
        services.start_thread(workflow="expense_approval", input={**EXPENSE, "colour": "red"}, actor=None)

    assert not Thread.objects.exists()


def test_an_enum_field_can_be_edited_in_the_review_form(client: Client):
    thread = started("test_typed_breakpoint")
    review = open_review(thread)
    page = client.get(reverse("approvals:review", args=[review.pk])).text
    data = {**form_fields(page, "decision-form"), "action": "approve", "state__level": "high"}

    response = client.post(reverse("approvals:decide", args=[review.pk]), data)

    assert response.status_code == 302, response.content.decode()[:2000]
    assert Decision.objects.get(review=review).updates == {"after": {"level": "high"}}
