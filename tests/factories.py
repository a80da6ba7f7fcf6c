"""Plain `make_*` functions for tests: people, threads, and running a thread's runs in-process.

Runs execute here with `workflows.execution.execute_run`, the function a worker calls,
so a test drives the real claim / invoke / record path without Celery. Tests that run
a graph must use `django_db(transaction=True)`: a graph must never run inside a
transaction.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.db import connection, transaction
from langgraph.types import StateSnapshot

from approvals import services as approvals
from approvals.models import Decision, Review
from workflows import doorbell, engine, registry, services
from workflows.execution import Outcome, execute_run
from workflows.models import (
    ACTIVE_RUN_STATUSES,
    AuditEvent,
    Checkpoint,
    CheckpointBlob,
    CheckpointWrite,
    Run,
    Thread,
)

# An expense claim as the expense_approval workflow takes it.
EXPENSE = {"employee": "Ada", "description": "Train to Lyon", "amount": 120.0, "category": "travel"}


def make_user(
    username: str, *, groups: tuple[str, ...] | list[str] = (), staff: bool = False, superuser: bool = False
) -> User:
    user = User.objects.create_user(
        username, f"{username}@example.com", "password", is_staff=staff or superuser, is_superuser=superuser
    )
    for name in groups:
        group, _ = Group.objects.get_or_create(name=name)
        user.groups.add(group)
    return user


def make_thread(workflow: str, input: Mapping[str, Any], actor: User | None = None) -> Thread:
    return services.start_thread(workflow=workflow, input=input, actor=actor)


def active_run(thread: Thread) -> Run | None:
    return thread.runs.filter(status__in=ACTIVE_RUN_STATUSES).first()


def run_queued(thread: Thread) -> Outcome:
    """Execute the thread's active run in this process, as a worker would, then refresh."""
    run = active_run(thread)
    assert run is not None, f"thread {thread.pk} has no queued run (status {thread.status})"
    outcome = execute_run(run.pk)
    thread.refresh_from_db()
    return outcome


def head(thread: Thread) -> StateSnapshot:
    return engine.head(thread.workflow, thread.thread_id)


def open_reviews(thread: Thread) -> list[Review]:
    return list(Review.objects.filter(thread=thread, status=Review.Status.OPEN).order_by("node", "id"))


def open_review(thread: Thread, node: str | None = None) -> Review:
    found = [review for review in open_reviews(thread) if node is None or review.node == node]
    assert len(found) == 1, f"expected one open review{f' at {node}' if node else ''}, found {found}"
    return found[0]


def decide(review: Review, actor: User, action: str, **kwargs: Any) -> Decision:
    """Decide as the review page would: pinned to the checkpoint the review was shown at."""
    kwargs.setdefault("checkpoint_id", review.checkpoint_id)
    return approvals.decide(review=review, actor=actor, action=action, **kwargs)


def row_counts() -> dict[str, int]:
    """How many rows every table a service or run may write holds, to prove none was written."""
    models = (Thread, Run, AuditEvent, Review, Decision, Checkpoint, CheckpointBlob, CheckpointWrite)
    return {model.__name__: model.objects.count() for model in models}


def audit_actions(thread: Thread) -> list[str]:
    return list(AuditEvent.objects.filter(thread=thread).order_by("id").values_list("action", flat=True))


def dead_holder() -> str:
    """A lease holder on this host whose process has exited (a worker that was killed)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])  # noqa: S603 - our own interpreter
    child.wait()
    host, scope, _ = services.lease_holder().split(":")
    return f"{host}:{scope}:{child.pid}"


def capture_doorbell(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the run ids a service publishes to Celery instead of publishing them."""
    rung: list[int] = []

    def publish(run_id: int, countdown: float) -> None:
        rung.append(run_id)

    monkeypatch.setattr(doorbell, "publish", publish)
    return rung


@contextmanager
def registered(workflow: registry.Workflow) -> Iterator[registry.Workflow]:
    """Register a test-only workflow for the duration of a test."""
    registry.add(workflow)
    try:
        yield registry.get(workflow.name)
    finally:
        registry.remove(workflow.name)
        engine.forget_compiled()


@contextmanager
def replica_role() -> Iterator[None]:
    """On PostgreSQL, write behind the app's back: triggers (the audit guard) are off
    for this transaction only. On SQLite there is no guard to switch off."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL session_replication_role = replica")
        yield


@contextmanager
def paused(workflow: registry.Workflow, input: Mapping[str, Any], actor: User) -> Iterator[Thread]:
    """A thread of the test-only `workflow` run in this process to where it stops (usually its
    first pause); the workflow stays registered for the block."""
    with registered(workflow):
        thread = services.start_thread(workflow=workflow.name, input=input, actor=actor)
        run_queued(thread)
        yield thread
