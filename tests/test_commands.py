"""The management commands: thin interfaces that parse, call a service or a query, and print."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from workflows.execution import execute_run
from workflows.models import AuditEvent, Run, Thread

EXPENSE = {"employee": "Ada", "description": "Train", "amount": 42.5, "category": "travel"}


def run_command(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def start(workflow: str, data: dict[str, Any], *extra: str) -> Thread:
    public_id = run_command("start_thread", workflow, "--input", json.dumps(data), *extra).strip()
    return Thread.objects.get(public_id=public_id)


def run_queued(thread: Thread) -> None:
    """What a worker would do with the thread's queued run."""
    run = thread.runs.get(status=Run.Status.QUEUED)
    execute_run(run.pk)
    thread.refresh_from_db()


# -- start_thread ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_start_thread_prints_only_the_new_threads_id_and_queues_its_first_run():
    output = run_command(
        "start_thread", "expense_approval", "--input", json.dumps(EXPENSE), "--title", "Train"
    )

    thread = Thread.objects.get()
    assert output == f"{thread.public_id}\n"
    assert thread.workflow == "expense_approval"
    assert thread.title == "Train"
    assert thread.input == EXPENSE
    run = thread.runs.get()
    assert (run.kind, run.status, run.command) == ("start", "queued", {"input": EXPENSE})
    assert AuditEvent.objects.get().action == "thread.started"


@pytest.mark.django_db
def test_start_thread_of_an_unknown_workflow_is_refused_naming_the_registered_ones():
    with pytest.raises(CommandError, match=r"no workflow named 'nope' \(registered: content_review, "):
        run_command("start_thread", "nope", "--input", "{}")

    assert not Thread.objects.exists()
    assert not AuditEvent.objects.exists()


@pytest.mark.django_db
def test_start_thread_with_input_that_is_not_json_is_refused():
    with pytest.raises(CommandError, match="--input is not valid JSON"):
        run_command("start_thread", "seed_demo", "--input", "{count: 0")

    assert not Thread.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(("text", "kind"), [("[1, 2]", "an array"), ('"hi"', "a string"), ("null", "null")])
def test_start_thread_with_input_that_is_not_an_object_is_refused(text: str, kind: str):
    with pytest.raises(CommandError, match=f"--input must be a JSON object of state fields, not {kind}"):
        run_command("start_thread", "seed_demo", "--input", text)

    assert not Thread.objects.exists()


# -- thread_status --------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_thread_status_shows_a_paused_thread_its_state_review_and_runs():
    thread = start("expense_approval", EXPENSE)
    run_queued(thread)

    status = json.loads(run_command("thread_status", str(thread.public_id)))

    assert status["thread"] == str(thread.public_id)
    assert status["workflow"] == "expense_approval"
    assert status["title"] == "Expense approval"
    assert status["status"] == "interrupted"
    assert status["error"] == ""
    assert status["next"] == ["pay"]
    assert status["values"] == {
        **EXPENSE,
        "approved": False,
        "summary": "Ada claims 42.50 for travel: Train.",
    }
    [review] = status["open_reviews"]
    assert review["node"] == "pay"
    assert review["kind"] == "breakpoint"
    assert review["checkpoint_id"] == status["checkpoint_id"]
    assert review["interrupt_id"] == f"breakpoint:{status['checkpoint_id']}:pay"
    assert review["value"] == {"next": ["pay"]}
    [run] = status["runs"]
    assert run == {"id": run["id"], "kind": "start", "status": "interrupted", "attempts": 1, "error": ""}


@pytest.mark.django_db
def test_thread_status_of_a_thread_not_run_yet_has_empty_state():
    thread = start("seed_demo", {"count": 0})

    status = json.loads(run_command("thread_status", str(thread.public_id)))

    assert (status["status"], status["next"], status["values"], status["checkpoint_id"]) == (
        "queued",
        [],
        {},
        "",
    )
    assert status["open_reviews"] == []
    assert [run["status"] for run in status["runs"]] == ["queued"]


@pytest.mark.django_db
def test_thread_status_of_an_unknown_thread_is_refused():
    missing = uuid.uuid4()

    with pytest.raises(CommandError, match=f"there is no thread {missing}"):
        run_command("thread_status", str(missing))


@pytest.mark.django_db
def test_thread_status_of_something_that_is_not_a_uuid_is_refused():
    with pytest.raises(CommandError, match="'42' is not a thread id"):
        run_command("thread_status", "42")


# -- retry_thread ---------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_retry_thread_queues_a_retry_of_a_failed_thread_which_then_completes():
    thread = start("seed_demo", {"count": 0})
    run_queued(thread)
    assert thread.status == "failed"
    assert "Simulated crash in step 3" in thread.error

    output = run_command("retry_thread", str(thread.public_id))

    retry = thread.runs.get(kind="retry")
    assert output == f"{retry.pk}\n"
    assert retry.status == "queued"
    run_queued(thread)
    assert thread.status == "completed"
    status = json.loads(run_command("thread_status", str(thread.public_id)))
    assert status["values"] == {"count": 3}
    assert Counter(run["status"] for run in status["runs"]) == {"failed": 1, "succeeded": 1}


@pytest.mark.django_db
def test_retry_of_a_thread_that_has_not_failed_is_refused_and_queues_nothing():
    thread = start("seed_demo", {"count": 0})

    with pytest.raises(CommandError, match="only a failed thread can be retried; this one is queued"):
        run_command("retry_thread", str(thread.public_id))

    assert thread.runs.count() == 1
    assert not AuditEvent.objects.filter(action="thread.retried").exists()


@pytest.mark.django_db
def test_retry_of_an_unknown_thread_is_refused():
    with pytest.raises(CommandError, match="is not a thread id"):
        run_command("retry_thread", "not-a-uuid")


# -- sweep ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_sweep_prints_how_many_runs_it_republished_reclaimed_and_failed(settings):
    settings.SIGNOFF_MAX_ATTEMPTS = 3
    long_ago = timezone.now() - timedelta(hours=1)
    lost = start("seed_demo", {"count": 0}).runs.get()
    Run.objects.filter(pk=lost.pk).update(enqueued_at=long_ago)
    expired = start("seed_demo", {"count": 0}).runs.get()
    Run.objects.filter(pk=expired.pk).update(
        status="running", lease_token=uuid.uuid4(), lease_expires_at=long_ago, attempts=1
    )
    exhausted = start("seed_demo", {"count": 0}).runs.get()
    Run.objects.filter(pk=exhausted.pk).update(
        status="running", lease_token=uuid.uuid4(), lease_expires_at=long_ago, attempts=3
    )
    start("seed_demo", {"count": 0})  # queued just now: not the sweeper's business yet

    output = run_command("sweep")

    assert output.splitlines() == [
        f"republished: 1 (runs {lost.pk})",
        f"reclaimed: 1 (runs {expired.pk})",
        f"failed: 1 (runs {exhausted.pk})",
    ]
    assert Run.objects.get(pk=expired.pk).status == "queued"
    assert Run.objects.get(pk=exhausted.pk).status == "failed"


@pytest.mark.django_db
def test_sweep_with_nothing_to_do_prints_zeros():
    assert run_command("sweep").splitlines() == ["republished: 0", "reclaimed: 0", "failed: 0"]


# -- verify_audit ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_verify_audit_reports_an_intact_chain():
    start("seed_demo", {"count": 0})
    start("seed_demo", {"count": 1})

    assert run_command("verify_audit") == "OK: 2 events, chain intact\n"


def _bypass_audit_trigger() -> None:
    # On PostgreSQL a trigger forbids changing audit rows; a replica session does not
    # fire ordinary triggers. LOCAL: it ends with the test's transaction.
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL session_replication_role = replica")


@pytest.mark.django_db
def test_verify_audit_names_the_first_event_whose_contents_were_changed():
    start("seed_demo", {"count": 0})
    tampered = start("seed_demo", {"count": 1}).audit_events.get()
    start("seed_demo", {"count": 2})
    _bypass_audit_trigger()
    AuditEvent.objects.filter(pk=tampered.pk).update(data={"workflow": "seed_demo", "input": {"count": 100}})

    with pytest.raises(CommandError) as refused:
        run_command("verify_audit")

    assert str(refused.value) == (
        f"audit trail: tampered at event {tampered.pk}: "
        "its contents do not match its hash (1 intact before it)"
    )


@pytest.mark.django_db
def test_verify_audit_names_the_event_after_a_deleted_one():
    start("seed_demo", {"count": 0})
    deleted = start("seed_demo", {"count": 1}).audit_events.get()
    after = start("seed_demo", {"count": 2}).audit_events.get()
    _bypass_audit_trigger()
    AuditEvent.objects.filter(pk=deleted.pk).delete()

    with pytest.raises(CommandError) as refused:
        run_command("verify_audit")

    assert str(refused.value) == (
        f"audit trail: broken chain at event {after.pk}: "
        "its prev_hash is not the hash of the event before it (1 intact before it)"
    )


@pytest.mark.postgres
@pytest.mark.django_db
def test_on_postgresql_the_audit_rows_cannot_be_changed_in_the_first_place():
    from django.db import DatabaseError, transaction

    event = start("seed_demo", {"count": 0}).audit_events.get()

    with pytest.raises(DatabaseError), transaction.atomic():
        AuditEvent.objects.filter(pk=event.pk).update(data={})

    assert run_command("verify_audit") == "OK: 1 events, chain intact\n"


# -- seed_demo_threads ----------------------------------------------------------------------


@pytest.mark.django_db
def test_seed_demo_threads_is_refused_without_debug(settings):
    settings.DEBUG = False

    with pytest.raises(CommandError, match="refusing to seed demo threads with DJANGO_DEBUG off"):
        run_command("seed_demo_threads")

    assert not Thread.objects.exists()


@pytest.mark.django_db
def test_seed_demo_threads_starts_threads_of_each_example_workflow_once(settings):
    settings.DEBUG = True

    first = run_command("seed_demo_threads")
    second = run_command("seed_demo_threads")

    assert Counter(Thread.objects.values_list("workflow", flat=True)) == {
        "expense_approval": 3,
        "content_review": 2,
        "parallel_approval": 1,
        "purchase_order": 1,
        "seed_demo": 1,
    }
    assert Run.objects.filter(kind="start", status="queued").count() == 8
    assert first.count("demo thread: ") == 8
    assert second == "demo threads: none seeded, the database already has 8 thread(s)\n"
    assert Thread.objects.count() == 8


@pytest.mark.django_db
def test_seed_demo_threads_seeds_nothing_when_any_thread_exists(settings):
    settings.DEBUG = True
    start("seed_demo", {"count": 0})

    run_command("seed_demo_threads")

    assert Thread.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_seeded_threads_reach_their_reviews_and_the_seed_demo_fails_at_step_3(settings):
    settings.DEBUG = True
    run_command("seed_demo_threads")

    for thread in Thread.objects.all():
        run_queued(thread)

    statuses = Counter(Thread.objects.values_list("workflow", "status"))
    assert statuses == {
        ("expense_approval", "interrupted"): 3,
        ("content_review", "interrupted"): 2,
        ("parallel_approval", "interrupted"): 1,
        ("purchase_order", "interrupted"): 1,
        ("seed_demo", "failed"): 1,
    }
    contract = Thread.objects.get(workflow="parallel_approval")
    assert sorted(contract.reviews.values_list("node", flat=True)) == ["finance", "legal"]
