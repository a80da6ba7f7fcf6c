"""The durable runtime (invariants 1-4, 8, 9): threads and runs in the database, one active
run per thread, fenced checkpoint writes, claims and the sweeper, retries, redeliveries and
rollbacks."""

from __future__ import annotations

import base64
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from langgraph.checkpoint.base.id import uuid6

from approvals.models import Review
from tests.factories import (
    EXPENSE,
    active_run,
    audit_actions,
    dead_holder,
    decide,
    head,
    make_thread,
    open_review,
    registered,
    row_counts,
    run_queued,
)
from tests.fake_workflows import (
    CALLS,
    build_counted_expense,
    build_flaky_with_retry_policy,
    build_three_steps,
)
from workflows import engine, registry, services
from workflows.checkpointer import DjangoSaver, Lease, LeaseLost, NoFence
from workflows.execution import execute_run
from workflows.leases import RunLeaseFence
from workflows.models import AuditEvent, Checkpoint, CheckpointBlob, CheckpointWrite, Run, Thread
from workflows.services import InvalidState, ServiceError, ThreadBusy

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("doorbell")]


@pytest.fixture(autouse=True)
def _fresh_calls() -> None:
    CALLS.clear()


# -- test workflows whose nodes count their executions ------------------------------------------


@pytest.fixture
def counted_seed() -> Iterator[str]:
    workflow = registry.Workflow(name="counted_seed", title="Counted seed", builder=build_three_steps)
    with registered(workflow):
        yield workflow.name


@pytest.fixture
def flaky() -> Iterator[str]:
    workflow = registry.Workflow(name="flaky", title="Flaky", builder=build_flaky_with_retry_policy)
    with registered(workflow):
        yield workflow.name


@pytest.fixture
def counted_expense() -> Iterator[str]:
    workflow = registry.Workflow(
        name="counted_expense",
        title="Counted expense",
        builder=build_counted_expense,
        reviewer_group="finance",
        editable=("amount", "approved"),
        interrupt_before=("pay",),
    )
    with registered(workflow):
        yield workflow.name


# -- helpers ------------------------------------------------------------------------------------


def claimed(thread: Thread, holder: str = "elsewhere:1") -> tuple[Run, str]:
    """Claim the thread's queued run as a worker called `holder` would."""
    run = active_run(thread)
    assert run is not None
    claim = services.claim_run(run_id=run.pk, holder=holder)
    assert claim.run is not None
    return claim.run, claim.token


def fenced_config(thread: Thread, run: Run, token: str, seconds: float = 60.0) -> dict[str, Any]:
    config = engine.config_for(thread.thread_id, lease=Lease(run.pk, token, seconds))
    config["configurable"]["checkpoint_ns"] = ""
    return config


def a_checkpoint() -> dict[str, Any]:
    return {
        "v": 4,
        "id": str(uuid6(clock_seq=-1)),
        "ts": datetime.now(UTC).isoformat(),
        "channel_values": {"count": 1, "notes": ["a", "b"]},
        "channel_versions": {"count": "1", "notes": "1"},
        "versions_seen": {},
        "updated_channels": ["count", "notes"],
    }


def checkpoint_rows() -> tuple[int, int, int]:
    return Checkpoint.objects.count(), CheckpointBlob.objects.count(), CheckpointWrite.objects.count()


def history_ids(thread: Thread) -> set[str]:
    return set(Checkpoint.objects.filter(thread_id=thread.thread_id).values_list("checkpoint_id", flat=True))


# -- starting a thread --------------------------------------------------------------------------


def test_start_creates_a_thread_a_queued_run_and_its_audit_event(staff: User, doorbell: list[int]):
    thread = make_thread("expense_approval", EXPENSE, staff)

    run = Run.objects.get(thread=thread)
    event = AuditEvent.objects.get(thread=thread)
    assert thread.status == Thread.Status.QUEUED
    assert (run.kind, run.status, run.command) == (Run.Kind.START, Run.Status.QUEUED, {"input": EXPENSE})
    assert (event.action, event.run_id, event.actor_id) == ("thread.started", run.pk, staff.pk)
    assert doorbell == [run.pk]


@pytest.mark.parametrize(
    ("workflow", "input", "message"),
    [
        ("payroll", {}, "no workflow named 'payroll'"),
        ("expense_approval", {"amount": object()}, "the input must be JSON"),
        ("expense_approval", ["amount", 1], "must be a JSON object"),
    ],
)
def test_a_start_that_fails_writes_nothing(
    staff: User, doorbell: list[int], workflow: str, input: Any, message: str
):
    before = row_counts()

    with pytest.raises(InvalidState, match=message):
        services.start_thread(workflow=workflow, input=input, actor=staff)

    assert row_counts() == before
    assert doorbell == []


# -- one active run per thread (invariant 2) ----------------------------------------------------


def test_the_database_refuses_a_second_active_run(staff: User):
    thread = make_thread("expense_approval", EXPENSE, staff)

    with pytest.raises(IntegrityError), transaction.atomic():
        Run.objects.create(thread=thread, kind=Run.Kind.RETRY)

    assert thread.runs.count() == 1


def test_resume_and_rollback_while_a_run_is_active_are_refused_and_write_nothing(admin: User):
    thread = make_thread("expense_approval", EXPENSE, admin)
    before = row_counts()

    with pytest.raises(ThreadBusy):
        services.resume_thread(thread=thread, actor=admin, proceed=True)
    with pytest.raises(ThreadBusy):
        services.rollback_thread(thread=thread, actor=admin, checkpoint_id="x", reason="oops")

    assert row_counts() == before


def test_retry_while_a_run_is_active_is_refused_and_writes_nothing(admin: User):
    thread = make_thread("expense_approval", EXPENSE, admin)
    before = row_counts()

    with pytest.raises(InvalidState, match="only a failed thread can be retried; this one is queued"):
        services.retry_thread(thread=thread, actor=admin)
    # Even a thread wrongly marked failed cannot get a second run: the constraint says no.
    Thread.objects.filter(pk=thread.pk).update(status=Thread.Status.FAILED)
    with pytest.raises(ThreadBusy):
        services.retry_thread(thread=thread, actor=admin)

    assert row_counts() == before


def _race(count: int, call: Any) -> list[Any]:
    """Call `call()` from `count` threads at once; return what each returned or raised."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def worker(index: int) -> None:
        try:
            barrier.wait()
            results[index] = call()
        except Exception as exc:  # noqa: BLE001 - the race's losers report their refusal
            results[index] = exc
        finally:
            connection.close()

    workers = [threading.Thread(target=worker, args=(index,)) for index in range(count)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    return results


@pytest.mark.postgres
def test_eight_concurrent_retries_leave_exactly_one_active_run(staff: User):
    thread = make_thread("seed_demo", {"count": 0}, staff)
    run_queued(thread)
    assert thread.status == Thread.Status.FAILED

    results = _race(8, lambda: services.retry_thread(thread=thread, actor=staff))

    assert sum(isinstance(result, Run) for result in results) == 1
    assert all(isinstance(result, (Run, ServiceError)) for result in results)
    assert thread.runs.filter(status__in=("queued", "running")).count() == 1
    assert AuditEvent.objects.filter(thread=thread, action="thread.retried").count() == 1


@pytest.mark.postgres
def test_eight_concurrent_resumes_leave_exactly_one_active_run(staff: User):
    thread = make_thread("expense_approval", EXPENSE, staff)
    run_queued(thread)
    assert thread.status == Thread.Status.INTERRUPTED

    results = _race(8, lambda: services.resume_thread(thread=thread, actor=staff, proceed=True))

    assert all(isinstance(result, (Run, ServiceError)) for result in results)
    assert thread.runs.filter(status__in=("queued", "running")).count() == 1
    assert thread.runs.filter(kind=Run.Kind.RESUME).count() == 1


# -- fenced checkpoint writes (invariant 3) -----------------------------------------------------


def fenced_saver() -> DjangoSaver:
    """The saver as the engine builds it, checking leases against the Run table."""
    return DjangoSaver(fence=RunLeaseFence())


def test_a_checkpoint_put_with_a_stale_lease_token_is_refused_and_writes_nothing(staff: User):
    thread = make_thread("expense_approval", EXPENSE, staff)
    run, _ = claimed(thread)
    before = checkpoint_rows()

    with pytest.raises(LeaseLost):
        fenced_saver().put(
            fenced_config(thread, run, str(uuid.uuid4())), a_checkpoint(), {}, {"count": "1", "notes": "1"}
        )

    assert checkpoint_rows() == before


def test_a_saver_without_a_fence_refuses_a_leased_write_and_writes_nothing(staff: User):
    thread = make_thread("expense_approval", EXPENSE, staff)
    run, token = claimed(thread)
    before = checkpoint_rows()

    with pytest.raises(NoFence, match=f"run {run.pk}'s lease"):
        DjangoSaver().put(fenced_config(thread, run, token), a_checkpoint(), {}, {"count": "1"})

    assert checkpoint_rows() == before


def test_pending_writes_with_a_stale_lease_token_are_refused_and_write_nothing(staff: User):
    thread = make_thread("expense_approval", EXPENSE, staff)
    run, token = claimed(thread)
    stored = fenced_saver().put(fenced_config(thread, run, token), a_checkpoint(), {}, {"count": "1"})
    stale = fenced_config(thread, run, str(uuid.uuid4()))
    stale["configurable"]["checkpoint_id"] = stored["configurable"]["checkpoint_id"]
    before = checkpoint_rows()

    with pytest.raises(LeaseLost):
        fenced_saver().put_writes(stale, [("count", 2)], task_id="task-1")

    assert checkpoint_rows() == before


def test_a_write_with_the_current_token_is_stored_and_pushes_the_lease_out(staff: User):
    thread = make_thread("expense_approval", EXPENSE, staff)
    run, token = claimed(thread)
    claimed_until = run.lease_expires_at
    assert claimed_until is not None
    before = checkpoint_rows()

    config = fenced_saver().put(
        fenced_config(thread, run, token, seconds=3600), a_checkpoint(), {}, {"count": "1", "notes": "1"}
    )
    config["configurable"]["__signoff_lease"] = fenced_config(thread, run, token)["configurable"][
        "__signoff_lease"
    ]
    fenced_saver().put_writes(config, [("count", 2)], task_id="task-1")

    after = checkpoint_rows()
    assert after[0] == before[0] + 1
    assert after[1] == before[1] + 1  # the list; the scalar lives in the checkpoint row
    assert after[2] == before[2] + 1
    run.refresh_from_db()
    assert run.lease_expires_at is not None
    assert run.lease_expires_at > claimed_until


def test_a_cancelled_run_can_write_no_more_checkpoints(staff: User):
    thread = make_thread("expense_approval", EXPENSE, staff)
    run, token = claimed(thread)

    services.cancel_thread(thread=thread, actor=staff, reason="changed my mind")
    before = checkpoint_rows()

    run.refresh_from_db()
    assert run.lease_token is None
    with pytest.raises(LeaseLost):
        fenced_saver().put(fenced_config(thread, run, token), a_checkpoint(), {}, {"count": "1"})
    assert checkpoint_rows() == before


# -- claims and the sweeper (invariant 1) ---------------------------------------------------------


def test_a_run_whose_live_lease_belongs_to_a_live_worker_is_busy(staff: User):
    thread = make_thread("expense_approval", EXPENSE, staff)
    run, token = claimed(thread, holder="another-host:4242")

    claim = services.claim_run(run_id=run.pk, holder=services.lease_holder())

    assert claim.run is None
    assert claim.busy_for > 0
    run.refresh_from_db()
    assert (str(run.lease_token), run.attempts) == (token, 1)


def test_a_run_whose_holder_died_on_this_host_is_taken_over(staff: User):
    thread = make_thread("expense_approval", EXPENSE, staff)
    run, token = claimed(thread, holder=dead_holder())

    claim = services.claim_run(run_id=run.pk, holder=services.lease_holder())

    assert claim.run is not None
    assert claim.token != token
    assert claim.run.attempts == 2
    assert claim.run.lease_holder == services.lease_holder()


def test_a_claim_past_the_attempt_limit_fails_the_run_and_the_thread(staff: User, settings: Any):
    settings.SIGNOFF_MAX_ATTEMPTS = 2
    thread = make_thread("expense_approval", EXPENSE, staff)
    run, _ = claimed(thread, holder=dead_holder())
    services.claim_run(run_id=run.pk, holder=dead_holder())

    claim = services.claim_run(run_id=run.pk, holder=services.lease_holder())

    assert claim.run is None
    run.refresh_from_db()
    thread.refresh_from_db()
    assert run.status == Run.Status.FAILED
    assert run.lease_token is None
    assert thread.status == Thread.Status.FAILED
    assert thread.error.startswith("gave up after 2 attempts")
    assert audit_actions(thread)[-1] == "run.failed"


def test_the_sweeper_republishes_a_run_whose_message_went_missing(
    staff: User, settings: Any, doorbell: list[int]
):
    thread = make_thread("expense_approval", EXPENSE, staff)
    run = active_run(thread)
    assert run is not None
    Run.objects.filter(pk=run.pk).update(
        enqueued_at=timezone.now() - timedelta(seconds=settings.SIGNOFF_QUEUED_GRACE_SECONDS + 60)
    )
    doorbell.clear()

    result = services.sweep()

    assert result.republished == [run.pk]
    assert doorbell == [run.pk]
    assert audit_actions(thread)[-1] == "run.republished"


def test_the_sweeper_leaves_a_freshly_queued_run_alone(staff: User, doorbell: list[int]):
    thread = make_thread("expense_approval", EXPENSE, staff)
    doorbell.clear()

    result = services.sweep()

    assert (result.republished, result.reclaimed, result.failed) == ([], [], [])
    assert doorbell == []
    assert audit_actions(thread) == ["thread.started"]


def test_the_sweeper_requeues_a_running_run_whose_lease_expired(staff: User, doorbell: list[int]):
    thread = make_thread("expense_approval", EXPENSE, staff)
    run, token = claimed(thread)
    Run.objects.filter(pk=run.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    doorbell.clear()

    result = services.sweep()

    run.refresh_from_db()
    thread.refresh_from_db()
    assert result.reclaimed == [run.pk]
    assert (run.status, run.lease_token) == (Run.Status.QUEUED, None)
    assert thread.status == Thread.Status.QUEUED
    assert doorbell == [run.pk]
    with pytest.raises(LeaseLost):
        fenced_saver().put(fenced_config(thread, run, token), a_checkpoint(), {}, {"count": "1"})


def test_the_sweeper_fails_a_run_that_used_up_its_attempts(staff: User, settings: Any):
    settings.SIGNOFF_MAX_ATTEMPTS = 1
    thread = make_thread("expense_approval", EXPENSE, staff)
    run, _ = claimed(thread)
    Run.objects.filter(pk=run.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))

    result = services.sweep()

    run.refresh_from_db()
    thread.refresh_from_db()
    assert result.failed == [run.pk]
    assert run.status == Run.Status.FAILED
    assert thread.status == Thread.Status.FAILED
    assert thread.error.startswith("gave up after 1 attempts")


# -- failures and retries (invariant 4) ---------------------------------------------------------


def test_seed_demo_fails_at_step_3_keeping_the_error(staff: User):
    thread = make_thread("seed_demo", {"count": 0}, staff)

    outcome = run_queued(thread)

    assert outcome.status == "failed"
    assert thread.status == Thread.Status.FAILED
    assert "Simulated crash in step 3" in thread.error
    assert head(thread).values == {"count": 2}
    assert head(thread).next == ("step3",)


def test_seed_demo_retry_completes_with_count_3(staff: User):
    thread = make_thread("seed_demo", {"count": 0}, staff)
    run_queued(thread)

    services.retry_thread(thread=thread, actor=staff)
    run_queued(thread)

    assert thread.status == Thread.Status.COMPLETED
    assert thread.error == ""
    assert head(thread).values == {"count": 3}


def test_a_retry_runs_only_the_node_that_failed(staff: User, counted_seed: str):
    thread = make_thread(counted_seed, {"count": 0}, staff)
    run_queued(thread)
    assert thread.status == Thread.Status.FAILED

    services.retry_thread(thread=thread, actor=staff)
    run_queued(thread)

    assert thread.status == Thread.Status.COMPLETED
    assert head(thread).values == {"count": 3}
    assert CALLS == {"step1": 1, "step2": 1, "step3": 2}


def test_a_node_with_a_retry_policy_succeeds_within_the_same_run(staff: User, flaky: str):
    thread = make_thread(flaky, {"count": 0}, staff)

    run_queued(thread)

    assert thread.status == Thread.Status.COMPLETED
    assert head(thread).values == {"count": 2}
    assert CALLS == {"step1": 1, "flaky": 3}
    assert [(run.kind, run.status, run.attempts) for run in thread.runs.all()] == [
        (Run.Kind.START, Run.Status.SUCCEEDED, 1)
    ]


def test_a_redelivered_start_that_already_reached_the_breakpoint_does_not_pay(
    staff: User, counted_expense: str
):
    thread = make_thread(counted_expense, {"amount": 10.0}, staff)
    # A worker ran the graph to the breakpoint, then died before recording it.
    run, token = claimed(thread, holder=dead_holder())
    engine.graph_for(counted_expense).invoke(
        run.command["input"], fenced_config(thread, run, token), durability="sync"
    )

    outcome = execute_run(run.pk)

    thread.refresh_from_db()
    assert outcome.status == "recorded"
    assert thread.status == Thread.Status.INTERRUPTED
    assert head(thread).next == ("pay",)
    assert CALLS == {"draft": 1}
    assert open_review(thread).node == "pay"


@pytest.mark.parametrize("died", ["before invoking", "after invoking"])
def test_a_redelivered_resume_passes_the_breakpoint_exactly_once(
    staff: User, reviewer: User, counted_expense: str, died: str
):
    thread = make_thread(counted_expense, {"amount": 10.0}, staff)
    run_queued(thread)
    decide(open_review(thread), reviewer, "approve", updates={"approved": True})
    run, token = claimed(thread, holder=dead_holder())
    if died == "after invoking":
        engine.graph_for(counted_expense).invoke(None, fenced_config(thread, run, token), durability="sync")

    outcome = execute_run(run.pk)

    thread.refresh_from_db()
    assert outcome.status == "recorded"
    assert thread.status == Thread.Status.COMPLETED
    assert head(thread).values["outcome"] == "paid 10.00"
    assert CALLS == {"draft": 1, "pay": 1}


# -- rollback (invariant 8) ---------------------------------------------------------------------


@pytest.fixture
def paused_expense(staff: User) -> Thread:
    thread = make_thread("expense_approval", EXPENSE, staff)
    run_queued(thread)
    assert thread.status == Thread.Status.INTERRUPTED
    return thread


def before_draft(thread: Thread) -> str:
    history = engine.graph_for(thread.workflow).get_state_history(engine.config_for(thread.thread_id))
    return engine.checkpoint_id_of(next(s for s in history if s.next == ("draft",)))


def test_rollback_forks_with_corrections_and_keeps_every_checkpoint(paused_expense: Thread, admin: User):
    thread = paused_expense
    review = open_review(thread)
    target, was_head = before_draft(thread), engine.checkpoint_id_of(head(thread))
    history = history_ids(thread)

    run = services.rollback_thread(
        thread=thread, actor=admin, checkpoint_id=target, reason="wrong amount", updates={"amount": 80.0}
    )

    thread.refresh_from_db()
    review.refresh_from_db()
    assert history < history_ids(thread)
    assert (run.kind, run.status) == (Run.Kind.ROLLBACK, Run.Status.QUEUED)
    assert thread.status == Thread.Status.QUEUED
    assert head(thread).values["amount"] == 80.0
    assert head(thread).next == ("draft",)
    assert review.status == Review.Status.CANCELLED
    event = AuditEvent.objects.get(thread=thread, action="thread.rolled_back")
    assert (event.actor_id, event.run_id) == (admin.pk, run.pk)
    assert event.data["from"] == was_head
    assert event.data["to"] == target
    assert event.data["reason"] == "wrong amount"
    assert event.data["updates"] == {"before": {"amount": 120.0}, "after": {"amount": 80.0}}


def test_rolling_back_to_the_input_checkpoint_is_refused_and_writes_nothing(
    paused_expense: Thread, admin: User
):
    graph = engine.graph_for(paused_expense.workflow)
    history = graph.get_state_history(engine.config_for(paused_expense.thread_id))
    target = next(s for s in history if (s.metadata or {}).get("source") == "input")
    before = row_counts()

    with pytest.raises(InvalidState, match="the thread's input, before any step ran; roll back to step 0"):
        services.rollback_thread(
            thread=paused_expense, actor=admin, checkpoint_id=engine.checkpoint_id_of(target), reason="again"
        )

    assert row_counts() == before


def test_a_rolled_back_expense_pauses_for_review_again_instead_of_paying(paused_expense: Thread, admin: User):
    thread = paused_expense
    services.rollback_thread(
        thread=thread,
        actor=admin,
        checkpoint_id=before_draft(thread),
        reason="redo",
        updates={"amount": 80.0},
    )

    run_queued(thread)

    assert thread.status == Thread.Status.INTERRUPTED
    assert head(thread).next == ("pay",)
    assert "outcome" not in head(thread).values
    assert head(thread).values["summary"] == "Ada claims 80.00 for travel: Train to Lyon."
    assert open_review(thread).checkpoint_id == engine.checkpoint_id_of(head(thread))


def test_a_rollback_correcting_a_field_that_is_not_editable_writes_nothing(
    paused_expense: Thread, admin: User
):
    thread, before = paused_expense, row_counts()

    with pytest.raises(InvalidState, match="employee: this field cannot be edited"):
        services.rollback_thread(
            thread=thread,
            actor=admin,
            checkpoint_id=before_draft(thread),
            reason="rename",
            updates={"employee": "Bob"},
        )

    thread.refresh_from_db()
    assert row_counts() == before
    assert thread.status == Thread.Status.INTERRUPTED
    assert open_review(thread).status == Review.Status.OPEN


def test_rollback_to_a_checkpoint_of_another_thread_is_refused(paused_expense: Thread, admin: User):
    other = make_thread("expense_approval", EXPENSE, admin)
    run_queued(other)
    before = row_counts()

    with pytest.raises(InvalidState, match="not in this thread's history"):
        services.rollback_thread(
            thread=paused_expense, actor=admin, checkpoint_id=before_draft(other), reason="mix-up"
        )

    assert row_counts() == before


# -- serialization (invariant 9) ----------------------------------------------------------------


def test_with_a_key_set_every_stored_value_of_a_thread_is_encrypted(staff: User, settings: Any):
    settings.SIGNOFF_ENCRYPTION_KEY = base64.urlsafe_b64decode(base64.urlsafe_b64encode(b"k" * 32))
    engine.forget_compiled()
    try:
        thread = make_thread("seed_demo", {"count": 0}, staff)
        run_queued(thread)
        services.retry_thread(thread=thread, actor=staff)
        run_queued(thread)
        assert head(thread).values == {"count": 3}
    finally:
        engine.forget_compiled()

    types = [
        *Checkpoint.objects.filter(thread_id=thread.thread_id).values_list("values_type", flat=True),
        *CheckpointBlob.objects.filter(thread_id=thread.thread_id).values_list("type", flat=True),
        *CheckpointWrite.objects.filter(thread_id=thread.thread_id).values_list("type", flat=True),
    ]
    assert len(types) > 5
    assert all(kind.endswith("+aes") for kind in types), types
