"""Delivery and recovery with real worker processes, killed and frozen by pid.

On PostgreSQL the broker is Redis (`make test` sets CELERY_BROKER_URL); on SQLite it
is the embedded on-disk broker, so the same faults are proven for `make run`'s setup.
Nothing here is eager: messages go through the broker to `celery worker` processes.
The tests run the sweeper themselves, once per loop, where production has beat.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import OperationalError

from tests.fake_workflows import create_calls_table, node_calls
from tests.workers import Beat, Worker, wait_for
from workflows import doorbell, engine, services
from workflows.models import AuditEvent, Checkpoint, CheckpointWrite, Thread

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.workers, pytest.mark.slow]


@pytest.fixture(autouse=True)
def _calls_table_and_empty_queue(django_db_setup: None, django_db_blocker: Any) -> None:
    from config.celery import app

    with django_db_blocker.unblock():
        create_calls_table()
    # Messages left by other tests' services would reach these workers first.
    app.control.purge()


@pytest.fixture
def beat(tmp_path: Path) -> Iterator[Any]:
    started: list[Beat] = []

    def start(**env: str) -> Beat:
        clock = Beat(tmp_path, "beat", **env).start()
        started.append(clock)
        return clock

    yield start
    for clock in started:
        clock.stop()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Any]:
    started: list[Worker] = []

    def start(name: str, *, concurrency: int = 1, **env: str) -> Worker:
        worker = Worker(tmp_path, name, concurrency=concurrency, **env).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def start_steps(**input: Any) -> Thread:
    return services.start_thread(workflow="test_five_steps", input={"count": 0, **input}, actor=None)


def status(thread: Thread) -> str:
    thread.refresh_from_db()
    return thread.status


def sweep_until(thread: Thread, wanted: str, *, timeout: float = 90) -> None:
    def check() -> bool:
        services.sweep()
        return status(thread) == wanted

    wait_for(check, timeout=timeout, what=f"thread to be {wanted} (it is {status(thread)})", every=0.5)


def test_a_worker_killed_in_step_3_is_replaced_and_steps_1_and_2_ran_once(
    tmp_path: Path, workers: Any
) -> None:
    hold = tmp_path / "hold"
    hold.touch()
    first = workers("first")
    thread = start_steps(hold_at="s3", hold_file=str(hold))
    wait_for(lambda: node_calls(thread.thread_id)["s3"] == 1, timeout=60, what="step 3 to start")

    first.signal(signal.SIGKILL)
    assert first.process is not None
    first.process.wait(timeout=30)
    hold.unlink()
    workers("second")
    sweep_until(thread, Thread.Status.COMPLETED)

    assert node_calls(thread.thread_id) == {"s1": 1, "s2": 1, "s3": 2, "s4": 1, "s5": 1}
    assert engine.head(thread.workflow, thread.thread_id).values["count"] == 5
    assert AuditEvent.objects.filter(thread=thread, action="run.completed").count() == 1
    run = thread.runs.get()
    assert run.attempts == 2
    assert services.verify_audit_chain()[1] is None


def test_a_message_lost_from_the_broker_is_delivered_by_the_sweeper(settings: Any, workers: Any) -> None:
    from config.celery import app

    settings.SIGNOFF_QUEUED_GRACE_SECONDS = 1
    thread = start_steps()
    app.control.purge()  # the broker lost it (a restart without persistence)
    workers("only")
    sweep_until(thread, Thread.Status.COMPLETED)

    assert node_calls(thread.thread_id) == {"s1": 1, "s2": 1, "s3": 1, "s4": 1, "s5": 1}
    assert AuditEvent.objects.filter(thread=thread, action="run.republished").exists()


def test_a_crash_between_commit_and_publish_is_recovered(
    settings: Any, monkeypatch: pytest.MonkeyPatch, workers: Any
) -> None:
    settings.SIGNOFF_QUEUED_GRACE_SECONDS = 1

    def broker_down(*args: Any, **kwargs: Any) -> None:
        raise OperationalError("connection refused")

    with monkeypatch.context() as patch:
        patch.setattr(doorbell, "publish", broker_down)
        thread = start_steps()
    # The thread and its run were committed; only the doorbell failed.
    assert thread.runs.get().status == "queued"

    workers("only")
    sweep_until(thread, Thread.Status.COMPLETED)
    assert node_calls(thread.thread_id)["s1"] == 1


def test_a_frozen_worker_past_its_lease_cannot_write_after_it_wakes(tmp_path: Path, workers: Any) -> None:
    hold = tmp_path / "hold"
    hold.touch()
    frozen = workers("frozen")
    thread = start_steps(hold_at="s3", hold_file=str(hold))
    wait_for(lambda: node_calls(thread.thread_id)["s3"] == 1, timeout=60, what="step 3 to start")
    frozen.signal(signal.SIGSTOP)

    workers("replacement")
    sweep_until(thread, Thread.Status.COMPLETED)
    checkpoints = Checkpoint.objects.filter(thread_id=thread.thread_id).count()
    writes = CheckpointWrite.objects.filter(thread_id=thread.thread_id).count()
    events = AuditEvent.objects.filter(thread=thread).count()

    frozen.signal(signal.SIGCONT)
    hold.unlink()  # its step 3 now finishes and tries to write
    wait_for(lambda: "lost its lease" in frozen.text(), timeout=60, what="the frozen worker to be fenced")

    assert Checkpoint.objects.filter(thread_id=thread.thread_id).count() == checkpoints
    assert CheckpointWrite.objects.filter(thread_id=thread.thread_id).count() == writes
    assert AuditEvent.objects.filter(thread=thread).count() == events
    assert status(thread) == Thread.Status.COMPLETED
    assert engine.head(thread.workflow, thread.thread_id).values["count"] == 5


def test_a_node_that_kills_its_worker_every_time_fails_after_the_configured_attempts(
    settings: Any, workers: Any
) -> None:
    settings.SIGNOFF_MAX_ATTEMPTS = 3
    workers("victim", SIGNOFF_MAX_ATTEMPTS="3")
    thread = start_steps(die_at="s2")
    sweep_until(thread, Thread.Status.FAILED, timeout=120)

    assert "gave up after 3 attempts" in thread.error
    assert node_calls(thread.thread_id) == {"s1": 1, "s2": 3}
    assert thread.runs.get().status == "failed"


def test_a_killed_pool_child_is_taken_over_at_once_without_waiting_for_its_lease(
    tmp_path: Path, workers: Any
) -> None:
    hold = tmp_path / "hold"
    hold.touch()
    # A lease far longer than the test: only the dead-holder check can explain a quick takeover.
    worker = workers("pool", SIGNOFF_LEASE_SECONDS="600")
    thread = start_steps(hold_at="s3", hold_file=str(hold))
    wait_for(lambda: node_calls(thread.thread_id)["s3"] == 1, timeout=60, what="step 3 to start")
    (child,) = worker.children()

    os.kill(child, signal.SIGKILL)  # the pool child dies; the worker's main process lives
    hold.unlink()
    wait_for(
        lambda: status(thread) == Thread.Status.COMPLETED, timeout=60, what="the redelivered run to finish"
    )

    assert node_calls(thread.thread_id) == {"s1": 1, "s2": 1, "s3": 2, "s4": 1, "s5": 1}
    assert thread.runs.get().attempts == 2


def test_a_frozen_worker_holding_two_runs_is_recovered_within_lease_plus_sweep_behind_a_backlog(
    tmp_path: Path, workers: Any, beat: Any
) -> None:
    lease, every, margin = 6.0, 3.0, 3.0
    timings = {"SIGNOFF_LEASE_SECONDS": str(lease), "SIGNOFF_SWEEP_SECONDS": str(every)}
    hold = tmp_path / "hold"
    hold.touch()
    beat(**timings)
    frozen = workers("frozen", concurrency=2, **timings)
    held = [start_steps(hold_at="s2", hold_file=str(hold)) for _ in range(2)]
    wait_for(
        lambda: all(node_calls(thread.thread_id)["s2"] == 1 for thread in held),
        timeout=60,
        what="both held runs to reach step 2",
    )
    workers("busy", **timings)
    # About 2 s each on the one free worker slot: some 50 s of backlog ahead of any message
    # published after it.
    backlog = [start_steps(pause=0.4) for _ in range(24)]

    frozen.signal(signal.SIGSTOP)
    stopped = time.monotonic()
    wait_for(
        lambda: AuditEvent.objects.filter(thread__in=held, action="run.lease_expired").count() == 2,
        timeout=90,
        what="the frozen worker's two runs to be taken back",
        every=0.1,
    )
    took = time.monotonic() - stopped

    assert took <= lease + every + margin, f"took {took:.1f}s"
    # The backlog was still there: recovery did not wait for it to drain.
    assert (
        Thread.objects.filter(pk__in=[thread.pk for thread in backlog]).exclude(status="completed").exists()
    )
