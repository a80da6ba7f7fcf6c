"""Encryption at rest covers every copy (issue 9, item 4): with SIGNOFF_ENCRYPTION_KEY set, no
table holds a thread's input, a run's command, a review's payload, a decision's edits or an
audit event's data in plaintext, while the app still shows them to those allowed, and the
queue still finds what is declared searchable (titles and the workflow's summary fields)."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.urls import reverse

from approvals.models import Decision, Review
from tests.factories import decide, head, make_thread, open_review, run_queued
from tests.pages import client_for
from workflows import engine, registry, services
from workflows.models import AuditEvent, Run, Thread
from workflows.sealed import PlaintextRefused, SealBroken, SealedWithoutKey

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("doorbell")]

KEY = base64.urlsafe_b64decode(base64.urlsafe_b64encode(b"s" * 32))

# Distinctive values a thread carries in its input, its edits, its corrections and its comments.
DESCRIPTION = "zq-marker-description-8812"
COMMENT = "zq-marker-comment-4410"
REASON = "zq-marker-reason-2093"
AMOUNT, EDITED, CORRECTED = 48213.57, 67391.25, 55102.75
# Declared searchable by expense_approval (summary_fields): allowed in plaintext.
EMPLOYEE = "Quentin Marlowe"
TITLE = "Quarterly offsite claim"


def markers() -> dict[str, list[bytes]]:
    """Each secret, with the byte strings it would show as: text, and (for the numbers) the
    float64 msgpack writes."""
    found: dict[str, list[bytes]] = {text: [text.encode()] for text in (DESCRIPTION, COMMENT, REASON)}
    for number in (AMOUNT, EDITED, CORRECTED):
        found[str(number)] = [str(number).encode(), struct.pack(">d", number)]
    return found


def _raw(value: Any) -> bytes:
    if value is None:
        return b""
    if isinstance(value, memoryview):
        return value.tobytes()
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    # jsonb columns come back parsed from a raw cursor; dump them back to text.
    return json.dumps(value, default=str, ensure_ascii=False).encode()


def stored_rows() -> Iterator[tuple[str, bytes]]:
    """Every row of every table of the database, as raw as the driver gives it."""
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")  # noqa: S608 - table names from the catalogue
            for row in cursor.fetchall():
                yield table, b"\x1f".join(_raw(value) for value in row)


def leaks() -> dict[str, set[str]]:
    """Which secrets sit in which tables."""
    wanted = markers()
    found: dict[str, set[str]] = {}
    for table, row in stored_rows():
        for name, forms in wanted.items():
            if any(form in row for form in forms):
                found.setdefault(name, set()).add(table)
    return found


def started_claim(actor: User) -> Thread:
    """An expense claim started but not run: its input, with the secret description, is stored."""
    return make_thread(
        "expense_approval",
        {"employee": EMPLOYEE, "description": DESCRIPTION, "amount": 1.0, "category": "other"},
        actor,
    )


@pytest.fixture
def keyed(settings: Any) -> Iterator[None]:
    settings.SIGNOFF_ENCRYPTION_KEY = KEY
    engine.forget_compiled()
    yield
    engine.forget_compiled()


def before_draft(thread: Thread) -> str:
    history = engine.graph_for(thread.workflow).get_state_history(engine.config_for(thread.thread_id))
    return engine.checkpoint_id_of(next(s for s in history if s.next == ("draft",)))


def live_thread(reviewer: User, admin: User) -> Thread:
    """Start (by the admin: the starter may not approve), run, review, a decision with edits,
    completion, a rollback with corrections, a second review rejected with a comment,
    completion again."""
    expense = {"employee": EMPLOYEE, "description": DESCRIPTION, "amount": AMOUNT, "category": "travel"}
    thread = services.start_thread(workflow="expense_approval", input=expense, actor=admin, title=TITLE)
    run_queued(thread)
    decide(open_review(thread), reviewer, "approve", updates={"amount": EDITED}, comment=COMMENT)
    run_queued(thread)
    assert thread.status == Thread.Status.COMPLETED
    assert head(thread).values["outcome"] == f"paid {EDITED}"
    services.rollback_thread(
        thread=thread,
        actor=admin,
        checkpoint_id=before_draft(thread),
        reason=REASON,
        updates={"amount": CORRECTED},
    )
    run_queued(thread)
    assert open_review(thread).checkpoint_id == engine.checkpoint_id_of(head(thread))
    decide(open_review(thread), reviewer, "reject", comment=COMMENT)
    run_queued(thread)
    assert thread.status == Thread.Status.COMPLETED
    assert head(thread).values["outcome"] == "rejected"
    return thread


def test_without_a_key_the_secrets_are_stored_in_plaintext(reviewer: User, admin: User):
    # The control: the grep below finds what it looks for, so its silence with a key means something.
    live_thread(reviewer, admin)

    found = leaks()

    assert {"workflows_thread", "workflows_run", "workflows_auditevent"} <= found[DESCRIPTION]
    assert {"approvals_decision", "workflows_auditevent"} <= found[str(EDITED)]
    assert "approvals_review" in found[DESCRIPTION]


@pytest.mark.usefixtures("keyed")
def test_with_a_key_no_table_holds_a_secret_in_plaintext(reviewer: User, admin: User):
    live_thread(reviewer, admin)

    assert leaks() == {}
    # What is declared searchable is still there, so the grep does read every table.
    tables = {table for table, row in stored_rows() if EMPLOYEE.lower().encode() in row}
    assert tables == {"approvals_review"}


@pytest.mark.usefixtures("keyed")
def test_with_a_key_the_app_still_shows_the_values_to_those_allowed(
    reviewer: User, admin: User, auditor: User
):
    thread = live_thread(reviewer, admin)
    review = Review.objects.filter(thread=thread).order_by("-id").first()
    assert review is not None
    event = AuditEvent.objects.get(pk=_first_decided(thread))
    run = Run.objects.filter(thread=thread, kind=Run.Kind.START).first()
    assert run is not None

    assert thread.input["description"] == DESCRIPTION
    assert Decision.objects.filter(review__thread=thread).order_by("id")[0].updates == {
        "after": {"amount": EDITED, "approved": True}
    }
    assert services.verify_audit_chain() == (AuditEvent.objects.count(), None)

    pages = {
        "review": (reviewer, reverse("approvals:review", args=[review.pk]), [DESCRIPTION, str(CORRECTED)]),
        "thread admin": (admin, reverse("admin:workflows_thread_change", args=[thread.pk]), [DESCRIPTION]),
        "run admin": (admin, reverse("admin:workflows_run_change", args=[run.pk]), [DESCRIPTION]),
        "audit admin": (
            admin,
            reverse("admin:workflows_auditevent_change", args=[event.pk]),
            [COMMENT, str(EDITED)],
        ),
        "audit trail": (
            auditor,
            reverse("approvals:audit_thread", args=[thread.public_id]),
            [REASON, COMMENT],
        ),
        "csv export": (auditor, reverse("approvals:audit_export_csv"), [DESCRIPTION, str(EDITED), REASON]),
        "jsonl export": (auditor, reverse("approvals:audit_export_jsonl"), [DESCRIPTION, str(CORRECTED)]),
    }
    for name, (user, url, expected) in pages.items():
        response = client_for(user).get(url)
        assert response.status_code == 200, name
        body = b"".join(response.streaming_content) if response.streaming else response.content
        for text in expected:
            assert text in body.decode(), (name, text)
    # Showing them wrote no copy anywhere either (sessions, admin log).
    assert leaks() == {}


def _first_decided(thread: Thread) -> int:
    return int(
        AuditEvent.objects.filter(thread=thread, action="review.decided")
        .order_by("id")
        .values_list("id", flat=True)[0]
    )


@pytest.mark.usefixtures("keyed")
def test_with_a_key_the_queue_finds_titles_and_summary_fields_but_not_secrets(reviewer: User):
    expense = {"employee": EMPLOYEE, "description": DESCRIPTION, "amount": AMOUNT, "category": "meals"}
    thread = services.start_thread(workflow="expense_approval", input=expense, actor=reviewer, title=TITLE)
    run_queued(thread)
    review = open_review(thread)
    client = client_for(reviewer)

    def found(q: str) -> bool:
        return (
            f'href="{reverse("approvals:review", args=[review.pk])}"'
            in client.get(reverse("approvals:queue"), {"q": q}).text
        )

    assert found("quentin")
    assert found("meals")
    assert found("offsite")
    assert found("expense approval")
    assert found("pay")
    assert not found(DESCRIPTION)
    assert not found("48213")


def test_without_a_key_the_queue_still_searches_the_input_and_payload(reviewer: User):
    expense = {"employee": EMPLOYEE, "description": DESCRIPTION, "amount": AMOUNT, "category": "meals"}
    thread = services.start_thread(workflow="expense_approval", input=expense, actor=reviewer, title=TITLE)
    run_queued(thread)
    review = open_review(thread)

    response = client_for(reviewer).get(reverse("approvals:queue"), {"q": DESCRIPTION})

    assert f'href="{reverse("approvals:review", args=[review.pk])}"' in response.text


def test_a_row_stored_in_plaintext_is_refused_once_a_key_is_set(reviewer: User, settings: Any):
    thread = started_claim(reviewer)
    settings.SIGNOFF_ENCRYPTION_KEY = KEY

    with pytest.raises(PlaintextRefused, match="workflows_thread.input"):
        Thread.objects.get(pk=thread.pk)


@pytest.mark.usefixtures("keyed")
def test_a_sealed_row_cannot_be_read_without_the_key(reviewer: User, settings: Any):
    thread = started_claim(reviewer)
    settings.SIGNOFF_ENCRYPTION_KEY = None

    with pytest.raises(SealedWithoutKey, match="SIGNOFF_ENCRYPTION_KEY"):
        Thread.objects.get(pk=thread.pk)


@pytest.mark.usefixtures("keyed")
def test_a_tampered_or_moved_ciphertext_is_refused(reviewer: User):
    thread = started_claim(reviewer)
    run = Run.objects.get(thread=thread)
    with connection.cursor() as cursor:
        cursor.execute("SELECT input FROM workflows_thread WHERE id = %s", [thread.pk])
        (sealed,) = cursor.fetchone()
        # A valid ciphertext of another column, copied over: it was sealed for workflows_thread.input.
        cursor.execute("UPDATE workflows_run SET command = %s WHERE id = %s", [sealed, run.pk])
        flipped = sealed[:-3] + ("A" if sealed[-3] != "A" else "B") + sealed[-2:]
        cursor.execute("UPDATE workflows_thread SET input = %s WHERE id = %s", [flipped, thread.pk])

    with pytest.raises(SealBroken, match="workflows_run.command"):
        Run.objects.get(pk=run.pk)
    with pytest.raises(SealBroken, match="workflows_thread.input"):
        Thread.objects.get(pk=thread.pk)


def test_summary_fields_must_be_fields_of_the_state_schema():
    from django.core.exceptions import ImproperlyConfigured

    from tests.fake_workflows import build_three_steps

    with pytest.raises(ImproperlyConfigured, match="summary field.*nope"):
        registry.add(
            registry.Workflow(
                name="t_summary", title="t", builder=build_three_steps, summary_fields=("nope",)
            )
        )
    assert "t_summary" not in {spec.name for spec in registry.all_workflows()}


def _migrate(*targets: tuple[str, str]) -> None:
    """Migrate to `targets`, or with none back to the latest migration of every app (later
    migrations, and those of apps depending on them, were unapplied on the way back)."""
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(list(targets) or executor.loader.graph.leaf_nodes())


@pytest.mark.postgres
def test_the_type_change_keeps_audit_rows_and_their_chain_and_the_guard(staff: User):
    from django.db import transaction
    from django.db.utils import InternalError, ProgrammingError

    with transaction.atomic():
        services.record_event(action="thread.started", actor=staff, data={"amount": 95.5, "note": "héllo"})
        services.record_event(action="run.started", data={"attempt": 1, "nested": {"a": [1, 2.5, None]}})
    try:
        # Back to jsonb and forward to text again, with the rows in place: ALTERs, no UPDATE.
        _migrate(("workflows", "0006_audit_keyed_chain"))
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT data_type FROM information_schema.columns "
                "WHERE table_name = 'workflows_auditevent' AND column_name = 'data'"
            )
            assert cursor.fetchone() == ("jsonb",)
    finally:
        _migrate()

    events = list(AuditEvent.objects.order_by("id"))
    assert [event.data for event in events] == [
        {"amount": 95.5, "note": "héllo"},
        {"attempt": 1, "nested": {"a": [1, 2.5, None]}},
    ]
    assert services.verify_audit_chain() == (2, None)
    with pytest.raises((InternalError, ProgrammingError), match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(pk=events[0].pk).update(actor_label="mallory")
