"""What a worker does with one run: claim it, advance the graph, record where it stopped.

The graph runs outside any transaction (its checkpoint writes commit one by one,
each fenced by the run's lease token), between two short transactions of
`services`: the claim and the outcome.
"""

from __future__ import annotations

import logging
import threading
import traceback
from dataclasses import dataclass
from typing import Any, Literal

from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, close_old_connections, connection
from langgraph.types import Command, StateSnapshot

from workflows import engine, registry, services, streams, timings
from workflows.checkpointer import Lease, LeaseLost
from workflows.models import Run

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """What became of one delivery of a run, for the task and for tests."""

    status: Literal["done", "busy", "fenced", "released", "failed", "recorded"]
    busy_for: float = 0.0


class _Heartbeat(threading.Thread):
    """Renews the lease while one long node runs (the writes renew it between steps).
    A stopped process stops this too, so a frozen worker still loses its lease."""

    def __init__(self, run_id: int, token: str) -> None:
        super().__init__(name=f"lease-{run_id}", daemon=True)
        self.run_id, self.token = run_id, token
        self.stopped = threading.Event()

    def run(self) -> None:
        interval = settings.SIGNOFF_LEASE_SECONDS / 3
        try:
            while not self.stopped.wait(interval):
                try:
                    if not services.renew_lease(run_id=self.run_id, token=self.token):
                        # Not ours any more: the next fenced write raises LeaseLost.
                        return
                except DatabaseError:
                    logger.warning("could not renew the lease of run %s; retrying", self.run_id)
        finally:
            connection.close()


def execute_run(run_id: int) -> Outcome:
    claim = services.claim_run(run_id=run_id, holder=services.lease_holder())
    if claim.run is None:
        return Outcome("busy", claim.busy_for) if claim.busy_for else Outcome("done")
    run, token = claim.run, claim.token
    thread = run.thread
    lease = Lease(run.pk, token, settings.SIGNOFF_LEASE_SECONDS)
    config = engine.config_for(thread.thread_id, lease=lease, run_id=run.pk)
    heartbeat = _Heartbeat(run.pk, token)
    heartbeat.start()
    # A run an API client streams publishes its events as the graph runs (workflows.streams).
    publisher = streams.publisher_for(run)
    try:
        publisher.begin(attempt=run.attempts)
        graph = engine.graph_for(thread.workflow)
        snapshot = graph.get_state(config)
        action = _first_action(run, thread.workflow, snapshot)
        breakpoints = engine.breakpoints_for(thread.workflow, run.command)
        if action is not None:
            streams.advance(
                graph,
                action.value,
                config,
                publisher,
                durability="sync",
                interrupt_before=breakpoints.before,
                interrupt_after=breakpoints.after,
            )
        snapshot = graph.get_state(engine.config_for(thread.thread_id))
        publisher.stopped(snapshot)
        recorded = services.finish_run(
            run_id=run.pk,
            token=token,
            interrupts=engine.pending_interrupts(thread.workflow, snapshot, breakpoints),
            checkpoint_id=engine.checkpoint_id_of(snapshot),
            values=_summary(snapshot.values),
            writes=timings.take(run.pk),
        )
        if recorded:
            publisher.end()
        return Outcome("recorded" if recorded else "fenced")
    except LeaseLost:
        logger.warning("run %s lost its lease; another worker owns it now", run.pk)
        return Outcome("fenced")
    except DatabaseError as exc:
        if not is_transient(exc):
            # The same statement would fail the same way on every attempt (a constraint, data
            # the column refuses): fail the thread now with the real reason, not after the
            # attempts run out with a false one.
            logger.exception("run %s failed on a database error that will not pass", run.pk)
            return _fail(run.pk, token, exc, publisher)
        # The database, not the graph, failed: hand the run back rather than fail the thread.
        logger.exception("run %s: database error; releasing it", run.pk)
        close_old_connections()
        try:
            released = services.release_run(
                run_id=run.pk,
                token=token,
                error=_describe(exc),
                countdown=settings.SIGNOFF_RETRY_DELAY_SECONDS,
                writes=timings.take(run.pk),
            )
        except DatabaseError:
            # Still down: the lease runs out and the sweeper takes the run back.
            return Outcome("released")
        return Outcome("released" if released else "fenced")
    except Exception as exc:
        logger.exception("run %s failed", run.pk)
        return _fail(run.pk, token, exc, publisher)
    finally:
        heartbeat.stopped.set()
        heartbeat.join()
        # What no outcome recorded (lease lost, the outcome's own write failed) is dropped.
        timings.take(run.pk)


# The database errors that may pass. Django wraps the driver's errors by their DB-API class:
# a lost or refused connection, a serialization failure and a deadlock (psycopg's
# SerializationFailure and DeadlockDetected) arrive as OperationalError, as does SQLite's
# "database is locked"; a closed connection as InterfaceError. IntegrityError, DataError,
# ProgrammingError and the rest come back the same on every attempt.
TRANSIENT_DATABASE_ERRORS = (OperationalError, InterfaceError)


def is_transient(exc: DatabaseError) -> bool:
    """Whether another attempt may succeed (see TRANSIENT_DATABASE_ERRORS)."""
    return isinstance(exc, TRANSIENT_DATABASE_ERRORS)


def _fail(run_id: int, token: str, exc: BaseException, publisher: streams.Publisher) -> Outcome:
    if isinstance(exc, DatabaseError):
        # The connection may be unusable after the driver's error: record on a sound one.
        close_old_connections()
    try:
        failed = services.fail_run(
            run_id=run_id, token=token, error=_describe(exc), writes=timings.take(run_id)
        )
    except DatabaseError:
        # Not even the failure can be written: the lease runs out and the sweeper retries.
        logger.exception("run %s: could not record its failure", run_id)
        return Outcome("released")
    if failed:
        publisher.error(exc)
    return Outcome("failed" if failed else "fenced")


@dataclass(frozen=True)
class _Action:
    value: Any


def _first_action(run: Run, workflow: str, snapshot: StateSnapshot) -> _Action | None:
    """What to invoke the graph with, or None when it is already at a pause.

    `invoke(None)` walks past a static breakpoint it is sitting at, so a run passes a
    pause only when it carries the answer to it (a resume, or a retry inheriting one)
    and the head is still where that answer was given. A redelivered run whose
    earlier attempt already reached the next pause records it instead.

    An earlier attempt (or the failed run a retry inherits its answers from) may have
    handed the Command to LangGraph without finishing the step: the edits are then
    stored on the head as pending writes, which LangGraph applies again by itself, and
    an answered interrupt is no longer pending. Sending either again would apply an
    edit twice, or answer the task's next interrupt with the previous answer.
    """
    command = run.command
    spec = registry.get(workflow)
    head = engine.checkpoint_id_of(snapshot)
    if not head:
        # The command holds JSON; the graph gets the schema's types (a Decimal, not "99.50").
        return _Action(spec.load_input(command.get("input")))
    # The run's own breakpoints count: invoke(None) would walk past one it sits at.
    pending = engine.pending_interrupts(workflow, snapshot, engine.breakpoints_for(workflow, command))
    if head == run.from_checkpoint_id and "input" in command:
        # New input for a completed thread (workflows.services.start_run), given once: the
        # head has moved on if an earlier attempt already took it.
        return _Action(spec.load_input(command["input"]))
    if head == run.from_checkpoint_id and "resume" in command:
        waiting = {interrupt.id for interrupt in pending}
        resume = {key: value for key, value in command["resume"].items() if key in waiting}
        update = spec.load_updates(command.get("update") or {})
        if update and (run.attempts > 1 or run.kind == Run.Kind.RETRY):
            tail = engine.stored_edits(workflow, snapshot)[-len(update) :]
            if len(tail) == len(update) and dict(tail) == update:
                update = {}
        if resume or update:
            return _Action(Command(resume=resume or None, update=update or None))
    elif head == run.from_checkpoint_id and command.get("proceed"):
        return _Action(None)
    if pending:
        return None
    return _Action(None)


def _describe(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc, limit=-8))[-8000:]


def _summary(values: Any) -> dict[str, Any]:
    """The final state for the audit record, JSON-safe and bounded."""
    if not isinstance(values, dict):
        return {}
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, (str, int, float, bool)) or value is None:
            out[key] = value if not isinstance(value, str) else value[:500]
        else:
            out[key] = repr(value)[:500]
    return out
