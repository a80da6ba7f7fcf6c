"""One lock order (issue 9, item 1): thread row, then its active run, then reviews, then the
audit lock, taken last. Each test lines two transactions up the way a PostgreSQL deadlock
needs them: the first pauses just after taking its first lock (a hook on its connection
sleeps after that statement), the second starts meanwhile. With one lock order the second
waits for the first and both succeed; with two orders PostgreSQL aborts one with
"deadlock detected"."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection

from approvals.models import Review
from tests.factories import active_run, decide, make_thread, open_review, open_reviews, run_queued
from workflows import engine, services
from workflows.models import Run, Thread

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("doorbell"),
    pytest.mark.postgres,
]

CONTRACT = {"counterparty": "Acme", "value": 5000.0}
# Long enough for the other transaction to reach its first lock wait on a loaded machine.
PAUSE = 1.0


@contextmanager
def pause_after(pattern: str, reached: threading.Event) -> Iterator[None]:
    """On this thread's connection, sleep PAUSE after the first statement matching `pattern`;
    `reached` is set when that statement has run (its lock is held)."""
    wanted = re.compile(pattern, re.IGNORECASE | re.DOTALL)

    def hook(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        result = execute(sql, params, many, context)
        if not reached.is_set() and wanted.search(sql):
            reached.set()
            time.sleep(PAUSE)
        return result

    with connection.execute_wrapper(hook):
        yield


def side_by_side(first: Callable[[], Any], pattern: str, second: Callable[[], Any]) -> list[Any]:
    """Run `first` on one thread, paused after its statement matching `pattern`, and `second`
    on another as soon as that statement ran; return what each returned or raised."""
    results: list[Any] = [None, None]
    reached = threading.Event()

    def run_first() -> None:
        try:
            with pause_after(pattern, reached):
                results[0] = first()
        except Exception as exc:  # noqa: BLE001 - the test reports what each side got
            results[0] = exc
        finally:
            reached.set()
            connection.close()

    def run_second() -> None:
        try:
            reached.wait(30)
            results[1] = second()
        except Exception as exc:  # noqa: BLE001
            results[1] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run_first), threading.Thread(target=run_second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def no_errors(results: list[Any]) -> None:
    errors = [result for result in results if isinstance(result, Exception)]
    assert not errors, f"got {errors!r}"


THREAD_LOCK = r"FROM \"workflows_thread\".*FOR NO KEY UPDATE"
AUDIT_LOCK = r"pg_advisory_xact_lock"


def running_contract(staff: User, reviewer: User) -> tuple[Thread, Run, str]:
    """A parallel_approval thread whose first answer's resume run a worker is running."""
    thread = make_thread("parallel_approval", CONTRACT, staff)
    run_queued(thread)
    decide(open_review(thread, "legal"), reviewer, "approve")
    run = active_run(thread)
    assert run is not None
    claim = services.claim_run(run_id=run.pk, holder="elsewhere:1")
    assert claim.run is not None
    return thread, claim.run, claim.token


def test_a_decision_while_the_worker_records_the_other_answer_does_not_deadlock(
    staff: User, reviewer: User, other_reviewer: User
) -> None:
    thread, run, token = running_contract(staff, reviewer)
    finance = open_review(thread, "finance")
    pending = engine.pending_interrupts(thread.workflow, engine.head(thread.workflow, thread.thread_id))

    results = side_by_side(
        lambda: decide(finance, other_reviewer, "approve"),
        # Before the fix, decide took the audit lock before the thread row.
        AUDIT_LOCK,
        lambda: services.finish_run(
            run_id=run.pk, token=token, interrupts=pending, checkpoint_id=finance.checkpoint_id
        ),
    )

    no_errors(results)
    assert results[1] is True
    finance.refresh_from_db()
    assert finance.status == Review.Status.DECIDED
    assert finance.decision.applied_at is not None
    assert thread.runs.filter(status__in=("queued", "running")).count() == 1
    assert services.verify_audit_chain()[1] is None


def test_cancelling_while_the_worker_finishes_does_not_deadlock(
    staff: User, reviewer: User, admin: User
) -> None:
    thread, run, token = running_contract(staff, reviewer)
    pending = engine.pending_interrupts(thread.workflow, engine.head(thread.workflow, thread.thread_id))

    results = side_by_side(
        lambda: services.cancel_thread(thread=thread, actor=admin, reason="stop"),
        THREAD_LOCK,
        lambda: services.finish_run(run_id=run.pk, token=token, interrupts=pending, checkpoint_id="x"),
    )

    no_errors(results)
    # The cancel went first: the worker's lease is gone, so its outcome writes nothing.
    assert results[1] is False
    thread.refresh_from_db()
    assert thread.status == Thread.Status.CANCELLED
    assert not open_reviews(thread)
    assert services.verify_audit_chain()[1] is None


def test_cancelling_while_the_worker_fails_the_run_does_not_deadlock(
    staff: User, reviewer: User, admin: User
) -> None:
    thread, run, token = running_contract(staff, reviewer)

    results = side_by_side(
        lambda: services.cancel_thread(thread=thread, actor=admin, reason="stop"),
        THREAD_LOCK,
        lambda: services.fail_run(run_id=run.pk, token=token, error="boom"),
    )

    no_errors(results)
    assert results[1] is False
    thread.refresh_from_db()
    assert thread.status == Thread.Status.CANCELLED


def legal_approved(staff: User, reviewer: User) -> tuple[Thread, Run]:
    """A contract whose legal review is decided: the thread, and the resume run queued for it."""
    thread = make_thread("parallel_approval", CONTRACT, staff)
    run_queued(thread)
    decide(open_review(thread, "legal"), reviewer, "approve")
    queued = active_run(thread)
    assert queued is not None
    return thread, queued


def test_a_second_answer_merging_into_a_queued_run_while_a_worker_claims_it_does_not_deadlock(
    staff: User, reviewer: User, other_reviewer: User
) -> None:
    thread, queued = legal_approved(staff, reviewer)
    assert queued.status == Run.Status.QUEUED
    finance = open_review(thread, "finance")

    results = side_by_side(
        lambda: decide(finance, other_reviewer, "approve"),
        # The first lock decide takes (before the fix: the review row, then the audit lock).
        r"FOR NO KEY UPDATE",
        lambda: services.claim_run(run_id=queued.pk, holder="elsewhere:1"),
    )

    no_errors(results)
    claim = results[1]
    assert claim.run is not None
    finance.refresh_from_db()
    assert finance.status == Review.Status.DECIDED
    queued.refresh_from_db()
    # Either the answer joined the run before the claim, or it waits for the next pause.
    merged = set(queued.command.get("resume", {}))
    assert (
        merged == {open_review_ids(thread)["legal"], finance.interrupt_id}
        or finance.decision.applied_at is None
    )
    assert thread.runs.filter(status__in=("queued", "running")).count() == 1
    assert services.verify_audit_chain()[1] is None


def test_claiming_while_a_resume_merges_into_the_queued_run_does_not_deadlock(
    staff: User, reviewer: User, other_reviewer: User
) -> None:
    thread, queued = legal_approved(staff, reviewer)
    finance = open_review(thread, "finance")

    results = side_by_side(
        lambda: services.resume_thread(
            thread=thread, actor=other_reviewer, resume={finance.interrupt_id: {"action": "approve"}}
        ),
        # resume_thread locks the thread first; the claim then comes in from the run's side.
        THREAD_LOCK,
        lambda: services.claim_run(run_id=queued.pk, holder="elsewhere:1"),
    )

    no_errors(results)
    assert results[1].run is not None
    queued.refresh_from_db()
    assert finance.interrupt_id in queued.command["resume"]
    assert services.verify_audit_chain()[1] is None


def open_review_ids(thread: Thread) -> dict[str, str]:
    return {review.node: review.interrupt_id for review in Review.objects.filter(thread=thread)}
