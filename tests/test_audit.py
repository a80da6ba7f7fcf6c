"""The audit trail (invariant 5): written with the change it records, hash-chained, and on
PostgreSQL impossible to update, delete or truncate."""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Iterator
from io import StringIO
from types import SimpleNamespace
from typing import Any

import pytest
from django.apps import apps as django_apps
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.db import DatabaseError, Error, connection, transaction
from django.utils import timezone

from approvals.models import Decision, Review
from tests.factories import (
    EXPENSE,
    audit_actions,
    decide,
    make_thread,
    open_review,
    replica_role,
    row_counts,
    run_queued,
)
from tests.pages import expense_thread
from workflows import audit, services, tasks
from workflows.models import AuditEvent, Thread

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("doorbell")]


@pytest.fixture
def paused_expense(staff: User) -> Thread:
    return expense_thread(staff, title="")


class AuditDown(Exception):
    pass


def break_audit(monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on every audit write fails, as a full disk or a broken trigger would make it."""

    def refuse(**kwargs: Any) -> None:
        raise AuditDown(kwargs["action"])

    monkeypatch.setattr(services, "record_event", refuse)


def test_a_decided_expense_leaves_one_event_per_change(paused_expense: Thread, reviewer: User):
    decide(open_review(paused_expense), reviewer, "approve", updates={"approved": True})
    run_queued(paused_expense)

    assert audit_actions(paused_expense) == [
        "thread.started",
        "run.started",
        "review.opened",
        "run.interrupted",
        "thread.resumed",
        # Written last in its transaction: the audit lock is the last lock decide takes.
        "review.decided",
        "run.started",
        "run.completed",
    ]
    decided = AuditEvent.objects.get(thread=paused_expense, action="review.decided")
    assert (decided.actor_id, decided.actor_label) == (reviewer.pk, "rita")
    assert decided.data["updates"] == {"approved": True}


def test_an_audit_event_cannot_be_written_outside_a_transaction(staff: User):
    with pytest.raises(RuntimeError, match="inside the transaction"):
        services.record_event(action="thread.started", actor=staff)

    assert AuditEvent.objects.count() == 0


def test_a_start_whose_audit_event_fails_leaves_no_thread(staff: User, monkeypatch: pytest.MonkeyPatch):
    before = row_counts()
    break_audit(monkeypatch)

    with pytest.raises(AuditDown):
        services.start_thread(workflow="expense_approval", input=EXPENSE, actor=staff)

    assert row_counts() == before


def test_a_decision_whose_audit_event_fails_changes_nothing(
    paused_expense: Thread, reviewer: User, monkeypatch: pytest.MonkeyPatch
):
    review = open_review(paused_expense)
    before = row_counts()
    break_audit(monkeypatch)

    with pytest.raises(AuditDown):
        decide(review, reviewer, "approve", updates={"amount": 1.0, "approved": True})

    review.refresh_from_db()
    paused_expense.refresh_from_db()
    assert row_counts() == before
    assert review.status == Review.Status.OPEN
    assert paused_expense.status == Thread.Status.INTERRUPTED
    assert Decision.objects.count() == 0
    assert services.engine.head("expense_approval", paused_expense.thread_id).values["amount"] == 120.0


@pytest.mark.parametrize(
    ("workflow", "input", "change"),
    [
        pytest.param(
            "seed_demo",
            {"count": 0},
            lambda thread, user: services.retry_thread(thread=thread, actor=user),
            id="retry",
        ),
        pytest.param(
            "seed_demo",
            {"count": 0},
            lambda thread, user: services.cancel_thread(thread=thread, actor=user),
            id="cancel",
        ),
        pytest.param(
            "expense_approval",
            EXPENSE,
            lambda thread, user: services.resume_thread(thread=thread, actor=user, proceed=True),
            id="resume",
        ),
    ],
)
def test_a_thread_change_whose_audit_event_fails_is_rolled_back(
    staff: User,
    monkeypatch: pytest.MonkeyPatch,
    workflow: str,
    input: dict[str, Any],
    change: Callable[[Thread, User], Any],
):
    thread = make_thread(workflow, input, staff)
    run_queued(thread)  # seed_demo fails, expense_approval pauses
    status, before = thread.status, row_counts()
    break_audit(monkeypatch)

    with pytest.raises(AuditDown):
        change(thread, staff)

    thread.refresh_from_db()
    assert thread.status == status
    assert row_counts() == before


def test_the_chain_of_a_whole_workflow_verifies(paused_expense: Thread, reviewer: User):
    decide(open_review(paused_expense), reviewer, "approve", updates={"approved": True})
    run_queued(paused_expense)

    checked, broken = services.verify_audit_chain(batch=3)

    assert broken is None
    assert checked == AuditEvent.objects.count() == 8


def test_an_event_changed_behind_the_apps_back_is_reported_by_id(paused_expense: Thread):
    tampered = AuditEvent.objects.get(thread=paused_expense, action="run.started")
    with replica_role():
        AuditEvent.objects.filter(pk=tampered.pk).update(data={"attempt": 1, "holder": "nobody"})

    checked, broken = services.verify_audit_chain()

    assert broken is not None
    assert broken.event_id == tampered.pk
    assert "do not match its hash" in broken.reason
    assert checked == AuditEvent.objects.filter(pk__lt=tampered.pk).count()


def test_an_event_deleted_behind_the_apps_back_breaks_the_chain_at_the_next(paused_expense: Thread):
    events = list(AuditEvent.objects.filter(thread=paused_expense).order_by("id"))
    with replica_role():
        AuditEvent.objects.filter(pk=events[1].pk).delete()

    _, broken = services.verify_audit_chain()

    assert broken is not None
    assert broken.event_id == events[2].pk
    assert "prev_hash" in broken.reason


def test_an_event_rehashed_without_the_key_is_reported_at_itself(paused_expense: Thread):
    events = list(AuditEvent.objects.filter(thread=paused_expense).order_by("id"))
    forged = events[1]
    forged.actor_label = "mallory"
    forged.hash = services.event_hash(
        prev_hash=forged.prev_hash,
        actor_label=forged.actor_label,
        actor_id=forged.actor_id,
        action=forged.action,
        thread_id=forged.thread_id,
        run_id=forged.run_id,
        data=forged.data,
        created_at=forged.created_at,
    )
    with replica_role():
        AuditEvent.objects.filter(pk=forged.pk).update(actor_label=forged.actor_label, hash=forged.hash)

    _, broken = services.verify_audit_chain()

    assert broken is not None
    # Without the key its hash cannot be made to fit: it is caught itself, not at the next.
    assert (broken.kind, broken.event_id) == ("tampered", forged.pk)


def _raw(sql: str) -> Callable[[], Any]:
    def execute() -> None:
        with connection.cursor() as cursor:
            cursor.execute(sql)

    return execute


@pytest.mark.postgres
@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda: AuditEvent.objects.update(actor_label="mallory"), id="orm-update"),
        pytest.param(lambda: AuditEvent.objects.all().delete(), id="orm-delete"),
        pytest.param(lambda: AuditEvent.objects.first().save(), id="orm-save"),
        pytest.param(_raw("UPDATE workflows_auditevent SET actor_label = 'mallory'"), id="sql-update"),
        pytest.param(_raw("DELETE FROM workflows_auditevent"), id="sql-delete"),
        pytest.param(_raw("TRUNCATE workflows_auditevent"), id="sql-truncate"),
    ],
)
def test_postgres_refuses_to_change_or_remove_audit_events(paused_expense: Thread, tamper: Callable[[], Any]):
    before = list(AuditEvent.objects.values_list("id", "actor_label", "hash"))

    with pytest.raises(Error) as refused, transaction.atomic():
        tamper()

    assert isinstance(refused.value, DatabaseError)
    assert "append-only" in str(refused.value)
    assert list(AuditEvent.objects.values_list("id", "actor_label", "hash")) == before
    assert services.verify_audit_chain() == (len(before), None)


# -- a keyed chain, a recorded head, a guard only the owner can lift (issue 9, item 5) ----------


def _rechain_without_the_key(events: list[AuditEvent], *, scheme: str | None = None) -> None:
    """What someone with write access to the table but not the key can do: recompute every
    hash from the first changed event on with the public hash function."""
    prev = events[0].prev_hash
    with replica_role():
        for event in events:
            event.prev_hash = prev
            event.hash = services.event_hash(
                prev_hash=prev,
                actor_label=event.actor_label,
                actor_id=event.actor_id,
                action=event.action,
                thread_id=event.thread_id,
                run_id=event.run_id,
                data=event.data,
                created_at=event.created_at,
            )
            changes: dict[str, Any] = {"actor_label": event.actor_label, "prev_hash": prev}
            changes["hash"] = event.hash
            if scheme is not None:
                changes["scheme"] = scheme
            AuditEvent.objects.filter(pk=event.pk).update(**changes)
            prev = event.hash


def test_an_event_edited_and_rechained_with_the_public_hash_is_reported_as_tampered(paused_expense: Thread):
    events = list(AuditEvent.objects.order_by("id"))
    events[1].actor_label = "mallory"

    _rechain_without_the_key(events[1:])
    checked, broken = services.verify_audit_chain()

    assert broken is not None
    assert (broken.kind, broken.event_id, checked) == ("tampered", events[1].pk, 1)


def test_a_whole_chain_rewritten_as_plain_sha256_is_reported_as_tampered(paused_expense: Thread):
    events = list(AuditEvent.objects.order_by("id"))
    events[1].actor_label = "mallory"

    _rechain_without_the_key(events, scheme="sha256")
    _, broken = services.verify_audit_chain()

    assert broken is not None
    assert (broken.kind, broken.event_id) == ("tampered", events[-1].pk)
    assert "not keyed" in broken.reason


def _keep_head(path: Any) -> None:
    call_command("audit_head", "--save", stdout=StringIO())
    assert path.exists()


def test_deleting_the_last_events_is_reported_as_truncation(
    paused_expense: Thread, settings: Any, tmp_path: Any
):
    settings.SIGNOFF_AUDIT_HEAD_FILE = tmp_path / "audit-head.json"
    _keep_head(settings.SIGNOFF_AUDIT_HEAD_FILE)
    events = list(AuditEvent.objects.order_by("id"))
    with replica_role():
        AuditEvent.objects.filter(pk__in=[e.pk for e in events[-2:]]).delete()

    with pytest.raises(CommandError) as refused:
        call_command("verify_audit", stdout=StringIO())

    assert str(refused.value).startswith(f"audit trail: truncated at event {events[-1].pk}: ")
    assert f"the head records {len(events)} events" in str(refused.value)


def test_rewriting_the_last_event_with_the_key_is_caught_by_the_head(
    paused_expense: Thread, settings: Any, tmp_path: Any
):
    head = tmp_path / "head.json"
    settings.SIGNOFF_AUDIT_HEAD_FILE = tmp_path / "elsewhere.json"
    call_command("audit_head", "--save", "--file", str(head), stdout=StringIO())
    last = AuditEvent.objects.order_by("-id").first()
    assert last is not None
    # Someone who also has the key (or rewinds a backup) re-signs the last event.
    forged = audit.event_hash(
        prev_hash=last.prev_hash,
        actor_label="mallory",
        actor_id=last.actor_id,
        action=last.action,
        thread_id=last.thread_id,
        run_id=last.run_id,
        data=last.data,
        created_at=last.created_at,
        key=django_settings.SIGNOFF_AUDIT_KEY,
    )
    with replica_role():
        AuditEvent.objects.filter(pk=last.pk).update(actor_label="mallory", hash=forged)

    assert services.verify_audit_chain()[1] is None
    _, broken = services.verify_audit_chain(head=audit.read_head(head))

    assert broken is not None
    assert (broken.kind, broken.event_id) == ("rewritten", last.pk)


def test_a_head_edited_to_match_a_truncated_trail_is_reported_as_forged(
    paused_expense: Thread, tmp_path: Any
):
    head = tmp_path / "head.json"
    call_command("audit_head", "--save", "--file", str(head), stdout=StringIO())
    kept = json.loads(head.read_text())
    kept["events"] -= 1
    head.write_text(json.dumps(kept))

    _, broken = services.verify_audit_chain(head=audit.read_head(head))

    assert broken is not None
    assert broken.kind == "forged head"


def test_an_intact_trail_matches_its_head_and_says_so(paused_expense: Thread, tmp_path: Any):
    head = tmp_path / "head.json"
    call_command("audit_head", "--save", "--file", str(head), stdout=StringIO())

    shown = StringIO()
    call_command("verify_audit", "--head", str(head), stdout=shown)

    count = AuditEvent.objects.count()
    assert shown.getvalue().splitlines()[0] == f"OK: {count} events, chain intact"
    assert f"matches the head of {count} events" in shown.getvalue()


def test_beat_saves_the_head_to_the_file_and_the_log(
    paused_expense: Thread, settings: Any, tmp_path: Any, caplog: pytest.LogCaptureFixture
):
    settings.SIGNOFF_AUDIT_HEAD_FILE = tmp_path / "audit-head.json"

    with caplog.at_level("INFO", logger="workflows.audit"):
        tasks.save_audit_head()

    saved = audit.read_head(settings.SIGNOFF_AUDIT_HEAD_FILE)
    last = AuditEvent.objects.order_by("-id").first()
    assert last is not None
    assert (saved.events, saved.last_id, saved.hash) == (AuditEvent.objects.count(), last.pk, last.hash)
    logged = tmp_path / "log-line.txt"
    logged.write_text(caplog.records[-1].getMessage())
    assert audit.read_head(logged) == saved


def test_saving_the_head_refuses_to_overwrite_a_head_the_trail_no_longer_matches(
    paused_expense: Thread, tmp_path: Any
):
    head = tmp_path / "head.json"
    call_command("audit_head", "--save", "--file", str(head), stdout=StringIO())
    kept = head.read_text()
    with replica_role():
        AuditEvent.objects.filter(pk=AuditEvent.objects.order_by("-id").values("pk")[:1]).delete()

    with pytest.raises(CommandError, match="truncated"):
        call_command("audit_head", "--save", "--file", str(head), stdout=StringIO())

    assert head.read_text() == kept


@pytest.fixture
def intruder() -> Iterator[str]:
    """A role with every privilege on the audit table but not its owner, as an app role
    that was granted DML would be."""
    name = f"{connection.settings_dict['NAME']}_intruder"[:63]
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [name])
        if cursor.fetchone() is None:
            cursor.execute(f'CREATE ROLE "{name}" NOLOGIN')
        cursor.execute(f'GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON workflows_auditevent TO "{name}"')
    yield name
    with connection.cursor() as cursor:
        cursor.execute(f'DROP OWNED BY "{name}"')
        cursor.execute(f'DROP ROLE "{name}"')


def _as_role_with_the_bypass_set(role: str, sql: str) -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f'SET LOCAL ROLE "{role}"')
        cursor.execute("SET LOCAL signoff.allow_audit_truncate = 'on'")
        cursor.execute(sql)


@pytest.mark.postgres
@pytest.mark.parametrize(
    "sql",
    [
        "TRUNCATE workflows_auditevent",
        "DELETE FROM workflows_auditevent",
        "UPDATE workflows_auditevent SET actor_label = 'mallory'",
    ],
)
def test_a_role_that_does_not_own_the_table_cannot_lift_the_guard(
    paused_expense: Thread, intruder: str, sql: str
):
    before = list(AuditEvent.objects.values_list("id", "actor_label", "hash"))

    with pytest.raises(DatabaseError, match="append-only"):
        _as_role_with_the_bypass_set(intruder, sql)

    assert list(AuditEvent.objects.values_list("id", "actor_label", "hash")) == before


@pytest.mark.postgres
def test_the_owner_can_still_flush_the_audit_table(paused_expense: Thread):
    assert AuditEvent.objects.exists()

    call_command("flush", "--noinput", stdout=StringIO())

    assert not AuditEvent.objects.exists()


def test_plain_events_from_before_the_key_verify_once_the_migration_seals_them(staff: User):
    prev = ""
    with transaction.atomic():
        for n in range(3):
            event = AuditEvent(
                actor_label="sam",
                action="thread.started",
                data={"n": n},
                created_at=timezone.now(),
                prev_hash=prev,
                scheme="sha256",
            )
            event.hash = services.event_hash(
                prev_hash=prev,
                actor_label="sam",
                actor_id=None,
                action="thread.started",
                thread_id=None,
                run_id=None,
                data={"n": n},
                created_at=event.created_at,
            )
            event.save()
            prev = event.hash
    unsealed = services.verify_audit_chain()[1]
    assert unsealed is not None
    assert unsealed.kind == "tampered"

    migration = importlib.import_module("workflows.migrations.0006_audit_keyed_chain")
    with transaction.atomic():
        migration.seal_plain_events(django_apps, SimpleNamespace(connection=connection))
    with transaction.atomic():
        services.record_event(action="thread.started", actor=staff)

    assert services.verify_audit_chain() == (5, None)
    assert AuditEvent.objects.get(action="audit.keyed").data == {"legacy_events": 3}
    assert list(AuditEvent.objects.values_list("scheme", flat=True)) == ["sha256"] * 3 + ["hmac-sha256"] * 2
