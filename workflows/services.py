"""Every write to threads, runs and the audit trail.

Each public function is one transaction: it checks the change is allowed, makes it,
writes its audit event in the same transaction, and rings the doorbell (workflows.doorbell)
for a queued run, which publishes only once the transaction has committed. Views, admin
actions, commands and tasks call these; they never save the models themselves.

The transactions are durable (`atomic(durable=True)`): a service called inside another
transaction raises instead of quietly becoming a savepoint of it, whose audit event and
doorbell would then wait on a change it knows nothing of. A service that must make another's
change as part of its own (a decision resumes or cancels the thread) calls the
`*_in_transaction` helper, which joins the caller's transaction and refuses to run outside one.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import socket
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone
from langgraph.errors import InvalidUpdateError
from langgraph.types import StateSnapshot

from workflows import audit, doorbell, engine, limits, registry

# The audit chain lives in workflows.audit and the JSON the app stores in workflows.canonical;
# these names stay importable from here.
from workflows.audit import Action
from workflows.audit import ChainBreak as ChainBreak
from workflows.audit import event_hash as event_hash
from workflows.audit import record_event as record_event
from workflows.audit import verify_audit_chain as verify_audit_chain
from workflows.canonical import canonical_json as canonical_json
from workflows.canonical import load_canonical_json as load_canonical_json
from workflows.models import ACTIVE_RUN_STATUSES, AuditEvent, Checkpoint, Run, Thread
from workflows.signals import PendingInterrupt, interrupts_withdrawn, run_ended, thread_interrupted
from workflows.timings import WriteTimings

logger = logging.getLogger(__name__)

WORKER = audit.WORKER
SWEEPER = "system:sweeper"

Actor = User | None


class ServiceError(Exception):
    """A change that is not allowed now; the message says why, for the person who asked."""


class ThreadBusy(ServiceError):
    pass


class InvalidState(ServiceError):
    pass


class EditConflict(ServiceError):
    """An edit of a field another answer already changed at this pause."""


class ThreadNotReady(ServiceError):
    """The thread is in no state to take this run (input while it waits at an interrupt, a run
    on a cancelled thread, another workflow's input); the message says what would work."""


@dataclass(frozen=True)
class RunOptions:
    """What an HTTP API client asked of a run beyond what it does: its metadata, the URL to POST
    to when it ends, the stream modes the worker publishes, and what it asked should another
    run be active. Runs started in the browser take the defaults (nothing streamed)."""

    metadata: Mapping[str, Any] = field(default_factory=dict)
    webhook: str = ""
    stream_modes: Sequence[str] = ()
    multitask_strategy: str = "reject"
    # Static breakpoints for this run only, on top of the workflow's (node names or "*"); they
    # travel in the run's command (workflows.engine.breakpoints_for), and each pause they make
    # opens a review like any other.
    interrupt_before: Sequence[str] | str = ()
    interrupt_after: Sequence[str] | str = ()

    def command(self) -> dict[str, Any]:
        """The part of the run's command these options add."""
        if not self.interrupt_before and not self.interrupt_after:
            return {}
        return {
            "breakpoints": {
                "before": self._nodes(self.interrupt_before),
                "after": self._nodes(self.interrupt_after),
            }
        }

    @staticmethod
    def _nodes(nodes: Sequence[str] | str) -> list[str] | str:
        return "*" if nodes == "*" else list(nodes)

    def fields(self) -> dict[str, Any]:
        return {
            "metadata": dict(self.metadata),
            "webhook": self.webhook,
            "stream_modes": list(self.stream_modes),
            "multitask_strategy": self.multitask_strategy,
        }


def _queue_run(
    *,
    thread: Thread,
    kind: str,
    actor: Actor,
    command: dict[str, Any],
    from_checkpoint_id: str = "",
    options: RunOptions | None = None,
) -> Run:
    options = options or RunOptions()
    try:
        with transaction.atomic():  # a savepoint: the caller's transaction goes on after a refusal
            run = Run.objects.create(
                thread=thread,
                kind=kind,
                command=canonical_json({**command, **options.command()}),
                from_checkpoint_id=from_checkpoint_id,
                created_by=actor if actor is not None and actor.pk else None,
                enqueued_at=timezone.now(),
                **options.fields(),
            )
    except IntegrityError as exc:
        raise ThreadBusy("this thread already has a run queued or running; wait for it to finish") from exc
    doorbell.ring(run.pk)
    return run


def lock_thread(thread: Thread | int) -> tuple[Thread, Run | None]:
    """Lock the thread row, then its active run (if any), and return both, fresh.

    This is the first lock of every transaction that changes a thread or its runs: the one
    order (thread, then run, then reviews, then the audit lock in `record_event`, last) that
    keeps PostgreSQL from deadlocking a worker against a reviewer or an admin. A run becomes
    active or stops being active only under its thread's lock, so the run found here stays
    the active one until commit.
    """
    pk = thread.pk if isinstance(thread, Thread) else thread
    locked = Thread.objects.select_for_update(no_key=True).get(pk=pk)
    active = (
        Run.objects.select_for_update(no_key=True)
        .filter(thread_id=pk, status__in=ACTIVE_RUN_STATUSES)
        .order_by("id")
        .first()
    )
    if active is not None:
        active.thread = locked
    return locked, active


def _lock_run(run_id: int) -> Run | None:
    """Lock an active run for the worker: its thread's row first, then the run (the one lock
    order, see `lock_thread`). None when there is no such run or it is no longer active:
    nothing is left for a worker to claim or record then."""
    thread_id = Run.objects.filter(pk=run_id).values_list("thread_id", flat=True).first()
    if thread_id is None:
        return None
    _, active = lock_thread(thread_id)
    return active if active is not None and active.pk == run_id else None


def _inside_a_transaction(helper: str) -> None:
    """A helper that joins its caller's transaction refuses to run without one: its locks
    and its audit event would otherwise commit statement by statement."""
    if not connection.in_atomic_block:
        raise RuntimeError(f"{helper} runs inside the caller's transaction; outside one, call the service")


def _set_thread(thread: Thread, **changes: Any) -> None:
    for name, value in changes.items():
        setattr(thread, name, value)
    thread.save(update_fields=[*changes, "updated_at"])


def _head_checkpoint_id(thread: Thread) -> str:
    return engine.checkpoint_id_of(engine.head(thread.workflow, thread.thread_id))


def _refuse_unstorable(value: Any, *, what: str) -> None:
    """InvalidState for a value the checkpoint or the database cannot store (too deep, too
    large, a NUL or a lone surrogate): refused here, it can never fail a thread in the worker."""
    problem = limits.storable_problem(value)
    if problem:
        raise InvalidState(f"{what} cannot be stored: {problem}")


# -- threads --------------------------------------------------------------------------


def start_thread(*, workflow: str, input: Mapping[str, Any], actor: Actor, title: str = "") -> Thread:
    """Create a thread of `workflow` and queue its first run."""
    spec, payload = checked_input(workflow, input)
    with transaction.atomic(durable=True):
        thread = Thread.objects.create(
            workflow=spec.name,
            title=(title or spec.title)[:200],
            input=payload,
            metadata=registry.graph_metadata(spec.name),
            created_by=actor if actor is not None and actor.pk else None,
        )
        run = _queue_run(thread=thread, kind=Run.Kind.START, actor=actor, command={"input": payload})
        record_event(
            action=Action.THREAD_STARTED,
            actor=actor,
            thread=thread,
            run=run,
            data={"workflow": spec.name, "input": payload},
        )
    return thread


def checked_input(workflow: str, input: Mapping[str, Any]) -> tuple[registry.Workflow, dict[str, Any]]:
    """The workflow and the input as stored, refused (InvalidState) unless the input is a JSON
    object that fits the workflow's state schema and can be stored."""
    try:
        spec = registry.get(workflow)
    except LookupError as exc:
        raise InvalidState(str(exc)) from None
    if not isinstance(input, Mapping):
        raise InvalidState("the input must be a JSON object of state fields")
    _refuse_unstorable(input, what="the input")
    try:
        canonical_json(dict(input))
    except TypeError as exc:
        raise InvalidState(f"the input must be JSON: {exc}") from None
    try:
        # Checked against the schema now: a bad field would otherwise start a thread whose
        # review form then shows it as an edit nobody made.
        payload = canonical_json(spec.dump_input(input))
    except registry.InvalidUpdate as exc:
        raise InvalidState(f"the input does not fit the state schema of {spec.name}: {exc}") from None
    return spec, payload


def start_run(
    *,
    thread: Thread,
    workflow: str,
    input: Mapping[str, Any],
    actor: Actor,
    options: RunOptions | None = None,
    data: Mapping[str, Any] | None = None,
) -> Run:
    """Queue a run that gives the thread `input`: the first run of a NEW thread (it becomes a
    thread of `workflow`, its metadata stamped with `registry.graph_metadata`), or new input
    for a completed thread of that workflow, which runs the graph again from its start on the
    saved state.

    Another run active: ThreadBusy naming it, or with `options.multitask_strategy="enqueue"`
    the run waits (PENDING) and takes its turn when the thread next completes. A thread
    waiting at an interrupt, failed or cancelled: ThreadNotReady saying what would work.
    `data` joins the audit event (the API key that asked)."""
    options = options or RunOptions()
    spec, payload = checked_input(workflow, input)
    with transaction.atomic(durable=True):
        thread, active = lock_thread(thread)
        if thread.status != Thread.Status.NEW and thread.workflow != spec.name:
            raise ThreadNotReady(f"this thread runs the workflow {thread.workflow!r}, not {spec.name!r}")
        if active is not None:
            if options.multitask_strategy != "enqueue":
                raise ThreadBusy(
                    f"run {active.public_id} is {active.status} on this thread; wait for it to finish, "
                    'or send multitask_strategy="enqueue" to run after it'
                )
            return _enqueue_run(thread, active, payload, actor=actor, options=options, data=data)
        if thread.status == Thread.Status.NEW:
            return _start_new(thread, spec, payload, actor=actor, options=options, data=data)
        if thread.status == Thread.Status.COMPLETED:
            return _continue(thread, spec, payload, actor=actor, options=options, data=data)
        raise ThreadNotReady(_why_not_ready(thread))


def _why_not_ready(thread: Thread) -> str:
    if thread.status == Thread.Status.INTERRUPTED:
        return (
            "the thread is waiting at an interrupt; answer it with command.resume "
            "(new input would pass the review by)"
        )
    if thread.status == Thread.Status.FAILED:
        return "the thread failed; retry it (its failed step runs again) rather than give it new input"
    return f"the thread is {thread.status}; it takes no more runs"


def _start_new(
    thread: Thread,
    spec: registry.Workflow,
    payload: dict[str, Any],
    *,
    actor: Actor,
    options: RunOptions,
    data: Mapping[str, Any] | None,
) -> Run:
    _set_thread(
        thread,
        workflow=spec.name,
        title=spec.title[:200],
        input=payload,
        status=Thread.Status.QUEUED,
        metadata={**thread.metadata, **registry.graph_metadata(spec.name)},
    )
    run = _queue_run(
        thread=thread, kind=Run.Kind.START, actor=actor, command={"input": payload}, options=options
    )
    record_event(
        action=Action.THREAD_STARTED,
        actor=actor,
        thread=thread,
        run=run,
        data={**(data or {}), "workflow": spec.name, "input": payload},
    )
    return run


def _continue(
    thread: Thread,
    spec: registry.Workflow,
    payload: dict[str, Any],
    *,
    actor: Actor,
    options: RunOptions,
    data: Mapping[str, Any] | None,
) -> Run:
    # from_checkpoint_id pins the input to this head: a redelivery after the run made progress
    # goes on from there instead of giving the input again (workflows.execution).
    head_id = _head_checkpoint_id(thread)
    run = _queue_run(
        thread=thread,
        kind=Run.Kind.START,
        actor=actor,
        command={"input": payload},
        from_checkpoint_id=head_id,
        options=options,
    )
    _set_thread(thread, status=Thread.Status.QUEUED, error="")
    record_event(
        action=Action.THREAD_CONTINUED,
        actor=actor,
        thread=thread,
        run=run,
        data={**(data or {}), "input": payload, "checkpoint_id": head_id},
    )
    return run


def _enqueue_run(
    thread: Thread,
    active: Run,
    payload: dict[str, Any],
    *,
    actor: Actor,
    options: RunOptions,
    data: Mapping[str, Any] | None,
) -> Run:
    """A PENDING run behind the active one: not active, so the one-active-run constraint lets
    it be; `_dequeue` queues it when the thread completes."""
    run = Run.objects.create(
        thread=thread,
        kind=Run.Kind.START,
        status=Run.Status.PENDING,
        command=canonical_json({"input": payload, **options.command()}),
        created_by=actor if actor is not None and actor.pk else None,
        **options.fields(),
    )
    record_event(
        action=Action.RUN_ENQUEUED,
        actor=actor,
        thread=thread,
        run=run,
        data={**(data or {}), "input": payload, "behind": str(active.public_id)},
    )
    return run


def _dequeue(thread: Thread, *, checkpoint_id: str) -> Run | None:
    """Queue the thread's oldest PENDING run, now that the thread has completed: its input
    runs from `checkpoint_id`, the head. Called under the thread's lock, after its active
    run was closed."""
    waiting = (
        Run.objects.select_for_update(no_key=True)
        .filter(thread=thread, status=Run.Status.PENDING)
        .order_by("id")
        .first()
    )
    if waiting is None:
        return None
    waiting.status = Run.Status.QUEUED
    waiting.from_checkpoint_id = checkpoint_id
    waiting.enqueued_at = timezone.now()
    waiting.save(update_fields=["status", "from_checkpoint_id", "enqueued_at"])
    _set_thread(thread, status=Thread.Status.QUEUED, error="")
    record_event(
        action=Action.RUN_DEQUEUED,
        actor_label=WORKER,
        thread=thread,
        run=waiting,
        data={"checkpoint_id": checkpoint_id},
    )
    doorbell.ring(waiting.pk)
    return waiting


def _cancel_pending(thread: Thread) -> list[str]:
    """Cancel the runs waiting behind the active one (the thread stops for good); their ids."""
    now = timezone.now()
    cancelled = []
    for waiting in Run.objects.select_for_update(no_key=True).filter(
        thread=thread, status=Run.Status.PENDING
    ):
        waiting.save(update_fields=waiting.close(Run.Status.CANCELLED, now=now))
        cancelled.append(str(waiting.public_id))
    return cancelled


def cancel_pending_run(*, run: Run, actor: Actor, data: Mapping[str, Any] | None = None) -> Run:
    """Cancel one run that waits behind the active one (multitask_strategy="enqueue"); the
    thread and its active run go on. ThreadNotReady when it no longer waits."""
    with transaction.atomic(durable=True):
        thread, _ = lock_thread(run.thread_id)
        locked = Run.objects.select_for_update(no_key=True).get(pk=run.pk)
        if locked.status != Run.Status.PENDING:
            raise ThreadNotReady(f"run {locked.public_id} is {locked.status}, no longer waiting its turn")
        locked.save(update_fields=locked.close(Run.Status.CANCELLED, now=timezone.now()))
        locked.thread = thread
        record_event(
            action=Action.THREAD_CANCELLED,
            actor=actor,
            thread=thread,
            run=locked,
            data={**(data or {}), "reason": "a waiting run was cancelled", "run": str(locked.public_id)},
        )
    return locked


def resume_thread(
    *,
    thread: Thread,
    actor: Actor,
    resume: Mapping[str, Any] | None = None,
    updates: Mapping[str, Any] | None = None,
    as_node: str | None = None,
    proceed: bool = False,
    data: Mapping[str, Any] | None = None,
    options: RunOptions | None = None,
) -> Run:
    """Answer an interrupted thread and queue the run that continues it.

    `resume` maps interrupt ids to the values their `interrupt()` calls return;
    `proceed` passes a static breakpoint. `updates` are applied first with
    `update_state`, in this transaction. If a resume run is still queued, the answers
    join it, so two reviews decided in a row resume the thread once.
    """
    with transaction.atomic(durable=True):
        return resume_in_transaction(
            thread=thread,
            spec=registry.get(thread.workflow),
            actor=actor,
            resume=resume,
            updates=updates,
            as_node=as_node,
            proceed=proceed,
            data=data,
            options=options,
        )


def resume_in_transaction(
    *,
    thread: Thread,
    spec: registry.Workflow,
    actor: Actor,
    resume: Mapping[str, Any] | None = None,
    updates: Mapping[str, Any] | None = None,
    as_node: str | None = None,
    proceed: bool = False,
    data: Mapping[str, Any] | None = None,
    options: RunOptions | None = None,
) -> Run:
    """`resume_thread` inside the caller's transaction, for a service that resumes a thread
    as part of its own change (a decision, `open_reviews` applying waiting ones); `spec` is
    the thread's workflow, which the caller has resolved already. `options` are the new
    run's (an API client's); answers that join a queued run leave that run's as they are."""
    _inside_a_transaction("resume_in_transaction")
    if not resume and not proceed:
        raise InvalidState("a resume needs answers to interrupts or proceed=True for a breakpoint")
    _refuse_unstorable(dict(updates or {}), what="the edits")
    _refuse_unstorable(dict(resume or {}), what="the answers")
    thread, active = lock_thread(thread)
    before = engine.head(thread.workflow, thread.thread_id)
    if resume and updates:
        updates = _without_repeats(spec, before, updates, active)
    if active is not None:
        # A released run (attempts > 0) may have handed its edits to LangGraph already;
        # merging more into its command would send those again.
        if active.status != Run.Status.QUEUED or active.kind != Run.Kind.RESUME or active.attempts:
            raise ThreadBusy("this thread is running; its answers can be given when it pauses again")
    elif thread.status != Thread.Status.INTERRUPTED:
        raise InvalidState(f"the thread is {thread.status}, not waiting for input")
    typed = _typed_updates(spec, updates) if updates else {}
    # Answers to dynamic interrupts and a breakpoint's proceed can come together (parallel
    # reviews of both kinds decided in a row); each mode adds its part of the command.
    command: dict[str, Any] = {}
    if resume:
        command.update(_answer_interrupts(spec, resume, typed))
    if proceed:
        command.update(_proceed_past_breakpoint(thread, typed, as_node))
    head_id = _head_checkpoint_id(thread)
    if active is not None:
        run = _join_queued_run(active, command, from_checkpoint_id=head_id)
    else:
        run = _queue_run(
            thread=thread,
            kind=Run.Kind.RESUME,
            actor=actor,
            command=command,
            from_checkpoint_id=head_id,
            options=options,
        )
        _set_thread(thread, status=Thread.Status.QUEUED)
    record_event(
        action=Action.THREAD_RESUMED,
        actor=actor,
        thread=thread,
        run=run,
        data={
            **(data or {}),
            "resume": command.get("resume"),
            "proceed": proceed,
            "updates": {"before": _dumped_state(spec, before, typed), "after": spec.dump_updates(typed)}
            if typed
            else {},
            "checkpoint_id": head_id,
        },
    )
    return run


def _answer_interrupts(
    spec: registry.Workflow, resume: Mapping[str, Any], updates: Mapping[str, Any]
) -> dict[str, Any]:
    """The command part of answers to dynamic interrupts. Edits cannot be applied now: at a
    dynamic interrupt, update_state would start a new step and orphan the pending interrupts'
    ids. They travel with the answers as Command(update=...), stored as JSON the worker loads
    back into the schema's types."""
    command: dict[str, Any] = {"resume": dict(resume)}
    if updates:
        command["update"] = spec.dump_updates(updates)
    return command


def _proceed_past_breakpoint(
    thread: Thread, updates: Mapping[str, Any], as_node: str | None
) -> dict[str, Any]:
    """The command part of passing a static breakpoint. There is nothing to orphan there: the
    edits go into the saved state now, in the caller's transaction (the saver joins it)."""
    if updates:
        graph = engine.graph_for(thread.workflow)
        graph.update_state(engine.config_for(thread.thread_id), dict(updates), as_node=as_node)
    return {"proceed": True}


def _join_queued_run(active: Run, command: Mapping[str, Any], *, from_checkpoint_id: str) -> Run:
    """Merge more answers into the thread's resume run that is still queued, so two reviews
    decided in a row resume the thread once."""
    merged = dict(active.command)
    merged["resume"] = {**merged.get("resume", {}), **command.get("resume", {})}
    merged["update"] = {**merged.get("update", {}), **command.get("update", {})}
    merged["proceed"] = bool(merged.get("proceed") or command.get("proceed"))
    active.command = canonical_json({key: value for key, value in merged.items() if value})
    active.from_checkpoint_id = from_checkpoint_id
    active.save(update_fields=["command", "from_checkpoint_id"])
    return active


def _without_repeats(
    spec: registry.Workflow, head: StateSnapshot, updates: Mapping[str, Any], active: Run | None
) -> dict[str, Any]:
    """Edits at a dynamic interrupt travel as Command(update=...) and land in the paused
    step, where a field without a reducer takes one value: a second edit of it at the same
    pause (by another answer, stored on the head or riding on the active run) would fail the
    step. The same value again is dropped; a different one is refused, so nobody overwrites
    an edit they did not see."""
    earlier = dict(engine.stored_edits(spec.name, head))
    if active is not None:
        earlier.update(spec.load_updates(active.command.get("update") or {}))
    single = engine.single_value_fields(spec.name, updates)
    kept: dict[str, Any] = {}
    conflicts: list[str] = []
    for name, value in updates.items():
        if name in single and name in earlier:
            if _edit_json(spec, name, earlier[name]) != _edit_json(spec, name, value):
                conflicts.append(name)
            continue
        kept[name] = value
    if conflicts:
        raise EditConflict(
            f"{', '.join(sorted(conflicts))} {'was' if len(conflicts) == 1 else 'were'} already changed "
            "at this pause by another answer; reload to see the new value, then decide again"
        )
    return kept


def _typed_updates(spec: registry.Workflow, updates: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return spec.validate_updates(updates)
    except registry.InvalidUpdate as exc:
        raise InvalidState(f"edits that do not fit: {exc}") from None


def _edit_json(spec: registry.Workflow, name: str, value: Any) -> Any:
    """One edited field's value as stored, to compare two edits of it."""
    try:
        return canonical_json(spec.dump_updates({name: value}))
    except registry.InvalidUpdate:
        return canonical_json({name: value})


def _dumped_state(spec: registry.Workflow, snapshot: StateSnapshot, fields: Mapping[str, Any]) -> Any:
    """The values `fields` had in `snapshot`, written like edits (a field not set yet is None)."""
    values = snapshot.values if isinstance(snapshot.values, dict) else {}
    return {name: _edit_json(spec, name, values[name])[name] if name in values else None for name in fields}


def retry_thread(*, thread: Thread, actor: Actor) -> Run:
    """Run a failed thread again from its last checkpoint: only the node that failed re-runs."""
    with transaction.atomic(durable=True):
        thread, _ = lock_thread(thread)
        if thread.status != Thread.Status.FAILED:
            raise InvalidState(f"only a failed thread can be retried; this one is {thread.status}")
        head_id = _head_checkpoint_id(thread)
        failed = thread.runs.order_by("-id").first()
        command: dict[str, Any] = {}
        # The failed run may have been carrying answers past a pause (a reviewer's
        # approval, then the node after it raised): they still stand for the retry.
        if failed is not None and failed.from_checkpoint_id == head_id:
            command = {
                key: value
                for key, value in failed.command.items()
                if key in ("resume", "update", "proceed", "breakpoints")
            }
        run = _queue_run(
            thread=thread, kind=Run.Kind.RETRY, actor=actor, command=command, from_checkpoint_id=head_id
        )
        error = thread.error
        _set_thread(thread, status=Thread.Status.QUEUED, error="")
        record_event(
            action=Action.THREAD_RETRIED,
            actor=actor,
            thread=thread,
            run=run,
            data={"checkpoint_id": head_id, "error": error},
        )
    return run


def cancel_thread(
    *, thread: Thread, actor: Actor, reason: str = "", data: Mapping[str, Any] | None = None
) -> Thread:
    """Stop a thread for good. A running run loses its lease, so it can write nothing more;
    runs waiting their turn behind it are cancelled too. `data` joins the audit event."""
    with transaction.atomic(durable=True):
        return cancel_in_transaction(thread=thread, actor=actor, reason=reason, data=data)


def cancel_in_transaction(
    *, thread: Thread, actor: Actor, reason: str = "", data: Mapping[str, Any] | None = None
) -> Thread:
    """`cancel_thread` inside the caller's transaction, for a service that cancels a thread
    as part of its own change (a reject at a breakpoint)."""
    _inside_a_transaction("cancel_in_transaction")
    thread, active = lock_thread(thread)
    if thread.status in (Thread.Status.COMPLETED, Thread.Status.CANCELLED):
        raise InvalidState(f"the thread is already {thread.status}")
    if active is not None:
        # The error of an earlier attempt (a release) stays on the cancelled run.
        active.save(update_fields=active.close(Run.Status.CANCELLED, now=timezone.now(), error=active.error))
    waiting = _cancel_pending(thread)
    before = thread.status
    _set_thread(thread, status=Thread.Status.CANCELLED)
    interrupts_withdrawn.send(sender=Thread, thread=thread, actor=actor, reason="thread cancelled")
    record_event(
        action=Action.THREAD_CANCELLED,
        actor=actor,
        thread=thread,
        run=active,
        data={
            **(data or {}),
            "reason": reason,
            "status": {"before": before, "after": thread.status},
            **({"waiting_runs": waiting} if waiting else {}),
        },
    )
    if active is not None:
        run_ended.send(sender=Run, run=active)
    return thread


def rollback_refusal(*, checkpoint_id: str, metadata: Mapping[str, Any] | None, head_id: str) -> str | None:
    """Why a thread cannot be rolled back to this checkpoint of its history (`metadata` is
    the checkpoint's, `head_id` the thread's head), or None when it can. The one rule that
    `rollback_thread`, the admin's rollback preview and its timeline's links ask."""
    if (metadata or {}).get("source") == "input":
        # Its state is still empty: the input sits in pending writes, which a copy leaves
        # behind, so a fork from it would run the workflow with no input at all.
        return (
            "that checkpoint is the thread's input, before any step ran; roll back to step 0 "
            "to run the workflow from its start"
        )
    if checkpoint_id == head_id:
        return "that checkpoint is the thread's head; a rollback to it would only copy it"
    return None


def rollback_thread(
    *,
    thread: Thread,
    actor: Actor,
    checkpoint_id: str,
    reason: str,
    updates: Mapping[str, Any] | None = None,
) -> Run:
    """Fork the thread from an earlier checkpoint (history stays) and run on from there."""
    if not reason.strip():
        raise InvalidState("a rollback needs a reason")
    _refuse_unstorable(dict(updates or {}), what="the corrections")
    with transaction.atomic(durable=True):
        thread, active = lock_thread(thread)
        if active is not None:
            raise ThreadBusy("this thread has a run queued or running; cancel it or wait before rolling back")
        spec = registry.get(thread.workflow)
        if updates:
            try:
                updates = spec.validate_updates(updates)
            except registry.InvalidUpdate as exc:
                raise InvalidState(f"corrections that do not fit: {exc}") from None
        graph = engine.graph_for(thread.workflow)
        target = graph.get_state(engine.config_for(thread.thread_id, checkpoint_id=checkpoint_id))
        if engine.checkpoint_id_of(target) != checkpoint_id or target.created_at is None:
            raise InvalidState(f"checkpoint {checkpoint_id} is not in this thread's history")
        before = engine.head(thread.workflow, thread.thread_id)
        refusal = rollback_refusal(
            checkpoint_id=checkpoint_id, metadata=target.metadata, head_id=engine.checkpoint_id_of(before)
        )
        if refusal:
            raise InvalidState(refusal)
        fork = graph.update_state(target.config, None, as_node="__copy__")
        copy_id = str(fork["configurable"]["checkpoint_id"])
        if updates:
            fork = graph.update_state(fork, dict(updates))
        head_id = str(fork["configurable"]["checkpoint_id"])
        run = _queue_run(
            thread=thread, kind=Run.Kind.ROLLBACK, actor=actor, command={}, from_checkpoint_id=head_id
        )
        status_before = thread.status
        _set_thread(thread, status=Thread.Status.QUEUED, error="")
        interrupts_withdrawn.send(sender=Thread, thread=thread, actor=actor, reason="thread rolled back")
        record_event(
            action=Action.THREAD_ROLLED_BACK,
            actor=actor,
            thread=thread,
            run=run,
            data={
                "from": engine.checkpoint_id_of(before),
                "to": checkpoint_id,
                "copy": copy_id,
                "fork": head_id,
                "reason": reason,
                "updates": {
                    "before": _dumped_state(spec, target, updates or {}),
                    "after": spec.dump_updates(updates or {}),
                },
                "status": {"before": status_before, "after": thread.status},
            },
        )
    return run


# -- threads made and changed through the HTTP API ---------------------------------------------


class ThreadExists(ServiceError):
    """A thread with the asked-for thread_id exists already."""


class UnknownCheckpoint(InvalidState):
    """A checkpoint_id that is not in the thread's history."""


class BadStateUpdate(InvalidState):
    """A state update that does not fit: `errors` maps each field it names (a state field,
    or "as_node") to what is wrong with it."""

    def __init__(self, errors: Mapping[str, str]) -> None:
        self.errors = dict(errors)
        super().__init__("; ".join(f"{name}: {message}" for name, message in self.errors.items()))


class ForkNotAllowed(ServiceError):
    """An update from an earlier checkpoint (a fork) by an actor not allowed to roll back."""


def create_thread(
    *,
    thread_id: uuid.UUID | None,
    metadata: Mapping[str, Any],
    actor: Actor,
    data: Mapping[str, Any] | None = None,
) -> Thread:
    """A NEW thread (no workflow, no run yet: its first run names the workflow) with the
    client's thread_id and metadata. ThreadExists if that thread_id is taken."""
    metadata = dict(metadata)
    problem = limits.storable_problem(metadata)
    if problem:
        raise BadStateUpdate({"metadata": f"cannot be stored: {problem}"})
    try:
        metadata = canonical_json(metadata)
    except TypeError as exc:
        raise BadStateUpdate({"metadata": f"must be JSON: {exc}"}) from None
    with transaction.atomic(durable=True):
        try:
            # A savepoint: a duplicate id (two clients creating it at once) fails here, and the
            # caller hears ThreadExists rather than a broken transaction.
            with transaction.atomic():
                thread = Thread.objects.create(
                    public_id=thread_id or uuid.uuid4(),
                    workflow="",
                    status=Thread.Status.NEW,
                    metadata=metadata,
                    created_by=actor if actor is not None and actor.pk else None,
                )
        except IntegrityError:
            raise ThreadExists(f"Thread '{thread_id}' already exists") from None
        record_event(
            action=Action.THREAD_CREATED,
            actor=actor,
            thread=thread,
            data={**(data or {}), "thread_id": thread.thread_id, "metadata": metadata},
        )
    return thread


def update_thread_state(
    *,
    thread: Thread,
    actor: Actor,
    values: Mapping[str, Any] | None,
    as_node: str | None = None,
    checkpoint_id: str = "",
    may_fork: bool = False,
    data: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """LangGraph's update_state on the thread: `values` (the workflow's editable fields, typed
    as a reviewer's edits are; None for none) written as if `as_node` had just run, on the
    head or, with `checkpoint_id`, on an earlier checkpoint (a fork: `may_fork` says whether
    the actor may roll back). Returns the new checkpoint's config.

    The new head sets the thread's status: no next node, it is COMPLETED (Agent Inbox's
    "mark as resolved" is `values=None, as_node="__end__"`); otherwise it waits, FAILED if it
    was (retry runs it on), INTERRUPTED else. Every open review was pinned to an earlier
    checkpoint and is withdrawn; a pause the new head stops at (a static breakpoint) opens
    its review. Refused while a run is queued or running (ThreadBusy), and for a NEW or a
    CANCELLED thread."""
    if values is not None and not isinstance(values, Mapping):
        raise BadStateUpdate({"values": "must be a JSON object of state fields, or null"})
    problem = limits.storable_problem(dict(values or {}))
    if problem:
        raise BadStateUpdate({"values": f"cannot be stored: {problem}"})
    with transaction.atomic(durable=True):
        thread, active = lock_thread(thread)
        if active is not None:
            raise ThreadBusy(
                "this thread has a run queued or running; update its state when it pauses or ends"
            )
        if thread.status == Thread.Status.NEW:
            raise InvalidState("this thread has not run yet, so it has no state to update; start a run first")
        if thread.status == Thread.Status.CANCELLED:
            raise InvalidState("this thread was cancelled; its state can no longer be updated")
        try:
            spec = registry.get(thread.workflow)
        except LookupError as exc:
            raise InvalidState(str(exc)) from None
        graph = engine.graph_for(thread.workflow)
        if as_node is not None and as_node != "__end__" and as_node not in graph.builder.nodes:
            nodes = ", ".join([*graph.builder.nodes, "__end__"])
            raise BadStateUpdate({"as_node": f"the workflow has no node {as_node!r} (nodes: {nodes})"})
        try:
            typed = spec.validate_updates(values or {})
        except registry.InvalidUpdate as exc:
            raise BadStateUpdate(exc.errors) from None
        before = engine.head(thread.workflow, thread.thread_id)
        head_id = engine.checkpoint_id_of(before)
        base = before
        if checkpoint_id and checkpoint_id != head_id:
            base = graph.get_state(engine.config_for(thread.thread_id, checkpoint_id=checkpoint_id))
            if engine.checkpoint_id_of(base) != checkpoint_id or base.created_at is None:
                raise UnknownCheckpoint(f"Checkpoint '{checkpoint_id}' not found in this thread's history")
            if not may_fork:
                raise ForkNotAllowed("updating an earlier checkpoint forks the thread, which is a rollback")
            refusal = rollback_refusal(checkpoint_id=checkpoint_id, metadata=base.metadata, head_id=head_id)
            if refusal:
                raise InvalidState(refusal)
        try:
            config = graph.update_state(
                base.config, dict(typed) if values is not None else None, as_node=as_node
            )
        except InvalidUpdateError as exc:
            # LangGraph cannot tell which node the update is from: the client must say.
            raise BadStateUpdate({"as_node": str(exc)}) from None
        after = graph.get_state(config)
        status_before = thread.status
        if not after.next:
            _set_thread(thread, status=Thread.Status.COMPLETED, error="")
        elif thread.status != Thread.Status.FAILED:
            _set_thread(thread, status=Thread.Status.INTERRUPTED)
        else:
            _set_thread(thread)
        # Every open review was pinned to an earlier checkpoint: none can be decided now.
        reason = "thread ended by a state update" if not after.next else "the thread's state was updated"
        interrupts_withdrawn.send(sender=Thread, thread=thread, actor=actor, reason=reason)
        pending = engine.pending_interrupts(thread.workflow, after) if after.next else []
        if pending:
            # The new head stops at a pause (a static breakpoint) that no run announced.
            thread_interrupted.send(sender=Thread, thread=thread, run=None, interrupts=pending)
        record_event(
            action=Action.THREAD_STATE_UPDATED,
            actor=actor,
            thread=thread,
            data={
                **(data or {}),
                "as_node": as_node,
                "from": head_id,
                "base": engine.checkpoint_id_of(base),
                "fork": base is not before,
                "checkpoint_id": engine.checkpoint_id_of(after),
                "updates": {"before": _dumped_state(spec, base, typed), "after": spec.dump_updates(typed)}
                if typed
                else {},
                "status": {"before": status_before, "after": thread.status},
            },
        )
    return dict(config)


def copy_thread(*, thread: Thread, actor: Actor, data: Mapping[str, Any] | None = None) -> Thread:
    """A new thread with this one's workflow, title, input, metadata, status and every
    checkpoint, to go on from separately. The copy's pauses open reviews of their own.
    Refused (ThreadBusy) while a run is queued or running: the copy would have no run."""
    with transaction.atomic(durable=True):
        source, active = lock_thread(thread)
        if active is not None:
            raise ThreadBusy("this thread has a run queued or running; copy it when it pauses or ends")
        copy = Thread.objects.create(
            workflow=source.workflow,
            title=source.title,
            status=source.status,
            input=source.input,
            error=source.error,
            metadata=source.metadata,
            created_by=actor if actor is not None and actor.pk else None,
        )
        if source.workflow:
            engine.graph_for(source.workflow).checkpointer.copy_thread(  # type: ignore[union-attr]
                source.thread_id, copy.thread_id
            )
        if copy.status == Thread.Status.INTERRUPTED:
            pending = engine.pending_interrupts(copy.workflow, engine.head(copy.workflow, copy.thread_id))
            if pending:
                thread_interrupted.send(sender=Thread, thread=copy, run=None, interrupts=pending)
        record_event(
            action=Action.THREAD_COPIED,
            actor=actor,
            thread=copy,
            data={**(data or {}), "from": source.thread_id, "to": copy.thread_id, "status": copy.status},
        )
    return copy


def report_unreadable_checkpoint(*, thread: Thread, actor: Actor, error: BaseException) -> bool:
    """Audit that the thread's checkpoint could not be read (a page asked for it), once per
    head checkpoint: reloading the page does not add another event. True if one was written.
    Locks the thread row, so two requests at once write one event, then the audit lock."""
    with transaction.atomic(durable=True):
        thread, _ = lock_thread(thread)
        # The newest row's id, read without decoding anything: decoding is what failed.
        checkpoint_id = (
            Checkpoint.objects.filter(thread_id=thread.thread_id, checkpoint_ns="")
            .order_by("-checkpoint_id")
            .values_list("checkpoint_id", flat=True)
            .first()
        ) or ""
        last = (
            AuditEvent.objects.filter(thread=thread, action=Action.CHECKPOINT_UNREADABLE)
            .order_by("-id")
            .values_list("data", flat=True)
            .first()
        )
        if isinstance(last, dict) and last.get("checkpoint_id") == checkpoint_id:
            return False
        logger.error("thread %s: checkpoint %s cannot be read: %s", thread.pk, checkpoint_id, error)
        record_event(
            action=Action.CHECKPOINT_UNREADABLE,
            actor=actor,
            thread=thread,
            data={"checkpoint_id": checkpoint_id, "error": f"{type(error).__name__}: {error}"[:1000]},
        )
    return True


# -- runs (called by the worker) --------------------------------------------------------


@functools.cache
def _pid_scope() -> str:
    """Where this process's pid means something: the kernel's boot id and our PID namespace,
    hashed short. Two containers sharing a hostname differ here, and so does the same host
    after a reboot. Without /proc (not Linux) the scope is random per process, so no other
    process is ever judged dead and only lease expiry hands its runs on."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return uuid.uuid4().hex[:16]
    return hashlib.sha256(f"{boot}/{namespace}".encode()).hexdigest()[:16]


def lease_holder() -> str:
    """This process as a lease holder: `host:scope:pid` (see `_pid_scope`)."""
    return f"{socket.gethostname()}:{_pid_scope()}:{os.getpid()}"


def _holder_is_dead(holder: str) -> bool:
    """True when the lease holder's pid is one this process can see (same host, boot and PID
    namespace) and that process is gone. Anything else, including a holder written before
    scopes existed (`host:pid`), is left to its lease."""
    parts = holder.split(":")
    if len(parts) != 3:
        return False
    host, scope, pid = parts
    if host != socket.gethostname() or scope != _pid_scope() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


@dataclass(frozen=True)
class Claim:
    run: Run | None = None
    token: str = ""
    # Seconds until a live lease held by someone else runs out (try again then).
    busy_for: float = 0.0


def claim_run(*, run_id: int, holder: str) -> Claim:
    """Take a queued run (or one whose holder lost its lease) with a fresh token."""
    with transaction.atomic(durable=True):
        run = _lock_run(run_id)
        if run is None:
            return Claim()
        now = timezone.now()
        if run.status == Run.Status.RUNNING:
            assert run.lease_expires_at is not None
            live = run.lease_expires_at > now
            if live and not _holder_is_dead(run.lease_holder):
                return Claim(busy_for=(run.lease_expires_at - now).total_seconds())
        if run.attempts >= settings.SIGNOFF_MAX_ATTEMPTS:
            _fail(run, run.gave_up_error(), actor_label=WORKER)
            return Claim()
        token = uuid.uuid4()
        run.save(
            update_fields=run.claim(
                token=token, holder=holder, now=now, lease_seconds=settings.SIGNOFF_LEASE_SECONDS
            )
        )
        _set_thread(run.thread, status=Thread.Status.RUNNING, error="")
        record_event(
            action=Action.RUN_STARTED,
            actor_label=WORKER,
            thread=run.thread,
            run=run,
            data={"attempt": run.attempts, "holder": holder, "kind": run.kind},
        )
    return Claim(run=run, token=str(token))


def renew_lease(*, run_id: int, token: str) -> bool:
    """Push the lease out; False when the run is no longer ours (nothing is written then)."""
    expires = timezone.now() + timedelta(seconds=settings.SIGNOFF_LEASE_SECONDS)
    return bool(
        Run.objects.filter(pk=run_id, lease_token=token, status=Run.Status.RUNNING).update(
            lease_expires_at=expires
        )
    )


def _own_run(run_id: int, token: str) -> Run | None:
    """Lock the run (thread row first, see `lock_thread`) if this token still holds it."""
    run = _lock_run(run_id)
    if run is None or run.status != Run.Status.RUNNING or str(run.lease_token) != str(token):
        return None
    return run


def _fail(run: Run, error: str, *, actor_label: str) -> None:
    run.save(update_fields=run.close(Run.Status.FAILED, now=timezone.now(), error=error))
    _set_thread(run.thread, status=Thread.Status.FAILED, error=error)
    record_event(
        action=Action.RUN_FAILED,
        actor_label=actor_label,
        thread=run.thread,
        run=run,
        data={"attempt": run.attempts, "error": error},
    )
    run_ended.send(sender=Run, run=run)


def finish_run(
    *,
    run_id: int,
    token: str,
    interrupts: list[PendingInterrupt],
    checkpoint_id: str,
    values: Mapping[str, Any] | None = None,
    writes: WriteTimings | None = None,
) -> bool:
    """Record where the graph stopped: at interrupts (reviews open) or at its end, adding the
    delivery's timed checkpoint `writes` to the run. False, with nothing written, when the run
    lost its lease meanwhile."""
    with transaction.atomic(durable=True):
        run = _own_run(run_id, token)
        if run is None:
            return False
        if interrupts:
            run.save(
                update_fields=run.close(Run.Status.INTERRUPTED, now=timezone.now()) + run.count_writes(writes)
            )
            _set_thread(run.thread, status=Thread.Status.INTERRUPTED)
            thread_interrupted.send(sender=Thread, thread=run.thread, run=run, interrupts=interrupts)
            record_event(
                action=Action.RUN_INTERRUPTED,
                actor_label=WORKER,
                thread=run.thread,
                run=run,
                data={"checkpoint_id": checkpoint_id, "interrupts": [i.as_json() for i in interrupts]},
            )
        else:
            run.save(
                update_fields=run.close(Run.Status.SUCCEEDED, now=timezone.now()) + run.count_writes(writes)
            )
            _set_thread(run.thread, status=Thread.Status.COMPLETED)
            interrupts_withdrawn.send(sender=Thread, thread=run.thread, actor=None, reason="thread completed")
            record_event(
                action=Action.RUN_COMPLETED,
                actor_label=WORKER,
                thread=run.thread,
                run=run,
                data={"checkpoint_id": checkpoint_id, "values": dict(values or {})},
            )
            # A run an API client enqueued behind this one takes its turn now the thread is
            # idle. Not at an interrupt (its input would pass the review by) nor after a
            # failure: it waits for the thread to complete, or is cancelled with it.
            _dequeue(run.thread, checkpoint_id=checkpoint_id)
        run_ended.send(sender=Run, run=run)
    return True


def fail_run(*, run_id: int, token: str, error: str, writes: WriteTimings | None = None) -> bool:
    """A node raised: the thread fails now, keeping the error; `retry_thread` resumes it."""
    with transaction.atomic(durable=True):
        run = _own_run(run_id, token)
        if run is None:
            return False
        if fields := run.count_writes(writes):
            run.save(update_fields=fields)
        _fail(run, error, actor_label=WORKER)
    return True


def release_run(
    *, run_id: int, token: str, error: str, countdown: float, writes: WriteTimings | None = None
) -> bool:
    """Give a run back to the queue after a transient failure (the database went away)."""
    with transaction.atomic(durable=True):
        run = _own_run(run_id, token)
        if run is None:
            return False
        run.save(update_fields=run.requeue(now=timezone.now(), error=error) + run.count_writes(writes))
        _set_thread(run.thread, status=Thread.Status.QUEUED)
        record_event(
            action=Action.RUN_RELEASED,
            actor_label=WORKER,
            thread=run.thread,
            run=run,
            data={"attempt": run.attempts, "error": error},
        )
        doorbell.ring(run.pk, countdown=countdown)
    return True


# -- recovery -------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepResult:
    republished: list[int]
    reclaimed: list[int]
    failed: list[int]


def sweep() -> SweepResult:
    """Re-ring queued runs whose message went missing and take back runs whose lease ran
    out; a run that used up its attempts fails instead of looping.

    Each run is taken in its own short transaction, locking its thread row and then the run
    (the one lock order, see `lock_thread`), so the audit lock of one run's event is never
    held while the next thread is locked. A thread locked by someone else right now is
    skipped: the next sweep looks again.
    """
    now = timezone.now()
    grace = timedelta(seconds=settings.SIGNOFF_QUEUED_GRACE_SECONDS)
    republished: list[int] = []
    reclaimed: list[int] = []
    failed: list[int] = []
    due = Q(status=Run.Status.QUEUED, enqueued_at__lt=now - grace) | Q(
        status=Run.Status.RUNNING, lease_expires_at__lt=now
    )
    candidates = list(
        Run.objects.filter(due).order_by("id").values_list("pk", "thread_id")[: settings.SIGNOFF_SWEEP_BATCH]
    )
    for run_id, thread_id in candidates:
        with transaction.atomic(durable=True):
            thread = (
                Thread.objects.select_for_update(no_key=True, skip_locked=True).filter(pk=thread_id).first()
            )
            if thread is None:
                continue
            # Still due? A worker may have claimed, renewed or finished it since the first read.
            run = Run.objects.select_for_update(no_key=True).filter(due, pk=run_id).first()
            if run is None:
                continue
            run.thread = thread
            if run.status == Run.Status.RUNNING and run.attempts >= settings.SIGNOFF_MAX_ATTEMPTS:
                _fail(run, run.gave_up_error(), actor_label=SWEEPER)
                failed.append(run.pk)
                continue
            action = Action.RUN_REPUBLISHED if run.status == Run.Status.QUEUED else Action.RUN_LEASE_EXPIRED
            if run.status == Run.Status.RUNNING:
                _set_thread(run.thread, status=Thread.Status.QUEUED)
                reclaimed.append(run.pk)
            else:
                republished.append(run.pk)
            # A lease that ran out is taken back; a queued run only gets a new message.
            run.save(update_fields=run.requeue(now=now))
            record_event(
                action=action,
                actor_label=SWEEPER,
                thread=run.thread,
                run=run,
                data={"attempt": run.attempts, "holder": run.lease_holder},
            )
            doorbell.ring(run.pk)
    return SweepResult(republished, reclaimed, failed)
