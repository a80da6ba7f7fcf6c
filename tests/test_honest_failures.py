"""Honest failures (issue 9, item 2): only a database error that can pass (the connection went
away, a serialization failure, a deadlock) hands a run back for another attempt; one that will
happen again every time fails the thread at once with the real reason. State values JSON cannot
hold are kept in the audit trail in a stated, reversible form."""

from __future__ import annotations

import json
import math
import re

import pytest
from django.db import DataError, IntegrityError, InterfaceError, OperationalError

from tests.factories import make_thread, run_queued
from tests.fake_workflows import create_calls_table
from workflows import execution, services
from workflows.models import AuditEvent, Run, Thread

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("doorbell")]


def only_run(thread: Thread) -> Run:
    (run,) = thread.runs.all()
    return run


def test_a_node_whose_database_work_fails_the_same_way_every_time_fails_the_thread_at_once():
    create_calls_table()
    thread = make_thread("test_duplicate_row", {"count": 1})

    outcome = run_queued(thread)

    assert outcome.status == "failed"
    assert thread.status == Thread.Status.FAILED
    run = only_run(thread)
    assert run.status == Run.Status.FAILED
    assert run.attempts == 1
    assert "IntegrityError" in thread.error
    assert "died or lost its lease" not in thread.error
    assert not AuditEvent.objects.filter(thread=thread, action="run.released").exists()


def test_nan_and_infinity_in_state_complete_the_thread_once_and_are_kept_in_the_audit_reversibly():
    thread = make_thread("test_not_a_number", {"count": 1})

    outcome = run_queued(thread)

    assert outcome.status == "recorded", thread.error
    assert thread.status == Thread.Status.COMPLETED
    assert only_run(thread).attempts == 1
    event = AuditEvent.objects.get(thread=thread, action="run.completed")
    stored = event.data["values"]
    assert stored["ratio"] == {"$float": "NaN"}
    assert stored["scale"] == {"$float": "-Infinity"}
    loaded = services.load_canonical_json(stored)
    assert math.isnan(loaded["ratio"])
    assert loaded["scale"] == -math.inf
    assert loaded["count"] == 2
    assert services.verify_audit_chain() == (AuditEvent.objects.count(), None)


@pytest.mark.parametrize(
    "value",
    [
        {"$float": "NaN"},
        {"$dict": {"a": 1}},
        {"$str": "x"},
        [float("inf"), {"nested": {"$float": "Infinity"}}],
        "nul \x00 and a lone \ud800 surrogate",
        {"a": float("nan"), "b": [1, 2.5, "c", None, True]},
    ],
)
def test_the_audit_form_of_a_value_loads_back_to_the_same_value(value: object):
    stored = services.canonical_json(value)

    again = services.load_canonical_json(stored)

    assert repr(again) == repr(value)


def test_the_audit_form_has_nothing_json_or_postgresql_cannot_hold():
    stored = services.canonical_json({"x": float("nan"), "s": "a\x00b\ud800", "t": ["\udfff"]})

    text = json.dumps(stored, allow_nan=False)
    assert "NaN" not in text.replace('"NaN"', "")
    assert not re.search("[\x00\ud800-\udfff]", "".join(strings(json.loads(text))))


def strings(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [*value, *(text for item in value.values() for text in strings(item))]
    if isinstance(value, list):
        return [text for item in value for text in strings(item)]
    return []


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (OperationalError("server closed the connection unexpectedly"), True),
        (OperationalError("could not serialize access due to concurrent update"), True),
        (OperationalError("deadlock detected"), True),
        (OperationalError("database is locked"), True),
        (InterfaceError("connection already closed"), True),
        (IntegrityError("CHECK constraint failed: JSON_VALID"), False),
        (DataError("invalid input syntax for type json"), False),
    ],
)
def test_only_errors_that_can_pass_are_transient(error: Exception, transient: bool):
    assert execution.is_transient(error) is transient


def test_a_deterministic_database_error_while_recording_the_outcome_fails_the_thread_at_once(
    monkeypatch: pytest.MonkeyPatch,
):
    thread = make_thread("test_five_steps", {"count": 0})
    real = services.finish_run

    def refused(**kwargs: object) -> bool:
        raise DataError('invalid input syntax for type json: Token "NaN" is invalid')

    monkeypatch.setattr(services, "finish_run", refused)
    outcome = run_queued(thread)
    monkeypatch.setattr(services, "finish_run", real)

    assert outcome.status == "failed"
    assert thread.status == Thread.Status.FAILED
    assert only_run(thread).attempts == 1
    assert "DataError" in thread.error
    assert "NaN" in thread.error


def test_a_lost_connection_still_releases_the_run_for_another_attempt(monkeypatch: pytest.MonkeyPatch):
    thread = make_thread("test_five_steps", {"count": 0})

    def gone(**kwargs: object) -> bool:
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(services, "finish_run", gone)
    outcome = run_queued(thread)

    assert outcome.status == "released"
    assert thread.status == Thread.Status.QUEUED
    assert AuditEvent.objects.filter(thread=thread, action="run.released").count() == 1
