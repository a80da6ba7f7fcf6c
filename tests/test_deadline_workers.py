"""A default decided at the due time, with real worker processes (issue 12, item 7): the
timeout is applied once across a worker restart, and the thread resumes once."""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User

from approvals import deadlines
from approvals.models import Decision, Review
from approvals.tasks import SWEEP_DEADLINES
from tests.fake_workflows import create_calls_table, node_calls
from tests.workers import Worker, wait_for
from workflows import engine, services
from workflows.models import AuditEvent, Run, Thread

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.workers, pytest.mark.slow]


@pytest.fixture(autouse=True)
def _empty_queue(django_db_setup: None, django_db_blocker: Any) -> None:
    from config.celery import app

    with django_db_blocker.unblock():
        create_calls_table()
    app.control.purge()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.stop()


def open_review_of(thread: Thread) -> Review | None:
    return Review.objects.filter(thread=thread, status=Review.Status.OPEN).first()


def test_a_timeout_default_is_applied_once_across_a_worker_restart(
    tmp_path: Path, workers: list[Worker], staff: User
):
    from config.celery import app

    first = Worker(tmp_path, "first").start()
    workers.append(first)
    thread = services.start_thread(workflow="test_due_default", input={"title": "Q3"}, actor=staff)
    review = wait_for(lambda: open_review_of(thread), timeout=60, what="the review to open")
    # The worker dies (SIGKILL by pid); the review falls due a second after it opened (the
    # workflow's review_hours) and the sweep decides it without any worker.
    first.signal(signal.SIGKILL)
    first.process.wait(timeout=30)  # type: ignore[union-attr]
    swept = wait_for(
        lambda: deadlines.sweep_deadlines().timed_out, timeout=30, what="the sweep to apply the default"
    )
    assert swept == 1

    # A new worker takes the resume; beat's task sweeps again in it, and this process too.
    second = Worker(tmp_path, "second").start()
    workers.append(second)
    app.send_task(SWEEP_DEADLINES)
    wait_for(
        lambda: Thread.objects.get(pk=thread.pk).status == Thread.Status.COMPLETED,
        timeout=90,
        what="the thread to complete on the new worker",
    )
    finished = re.compile(rf"Task {re.escape(SWEEP_DEADLINES)}\[[^\]]+\] succeeded")
    wait_for(lambda: finished.search(second.text()), timeout=30, what="the worker's sweep to finish")
    assert deadlines.sweep_deadlines() == deadlines.DeadlineSweep()

    [decision] = Decision.objects.filter(review__thread=thread)
    assert (decision.review_id, decision.actor, decision.actor_label, decision.action) == (
        review.pk,
        None,
        "timeout",
        "approve",
    )
    events = AuditEvent.objects.filter(thread=thread)
    assert events.filter(action="review.decided").count() == 1
    assert events.get(action="review.decided").actor_label == "timeout"
    assert events.filter(action="thread.resumed").count() == 1
    assert Run.objects.filter(thread=thread, kind=Run.Kind.RESUME).count() == 1
    calls = node_calls(str(thread.thread_id))
    assert (calls["answered"], calls["after"]) == (1, 1)
    assert engine.head(thread.workflow, thread.thread_id).values["answer"] == "approve"
