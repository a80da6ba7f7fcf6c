"""Every write to reviews and decisions. Each public function is one durable transaction with
its audit event (see workflows.services); the signal receivers run inside the engine's."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractUser, User
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.dispatch import receiver
from django.utils import timezone
from django.utils.text import capfirst

from approvals import queries
from approvals.models import Approval, Decision, Review, SavedFilter
from approvals.signals import review_opened, review_reassigned
from workflows import audit, engine, limits, registry
from workflows import services as engine_services
from workflows.audit import Action as AuditAction
from workflows.canonical import canonical_json
from workflows.models import Run, Thread
from workflows.signals import PendingInterrupt, interrupts_withdrawn, thread_interrupted

logger = logging.getLogger(__name__)

AGENT_INBOX_ACTIONS = {
    # our action -> (HumanInterruptConfig flag, HumanResponse type)
    Decision.Action.APPROVE: ("allow_accept", "accept"),
    Decision.Action.EDIT: ("allow_edit", "edit"),
    Decision.Action.RESPOND: ("allow_respond", "response"),
    Decision.Action.IGNORE: ("allow_ignore", "ignore"),
}
PLAIN_ACTIONS = (Decision.Action.APPROVE, Decision.Action.REJECT, Decision.Action.RESPOND)
BREAKPOINT_ACTIONS = (Decision.Action.APPROVE, Decision.Action.REJECT)
# The answers that say no: they end a review at once, whatever its quorum, and the thread's
# starter may give them (segregation of duties forbids only saying yes to one's own thread).
SAYS_NO = (Decision.Action.REJECT, Decision.Action.IGNORE)


class DecisionRefused(Exception):
    """The decision cannot be taken; nothing was written. The message says why."""


class AlreadyDecided(DecisionRefused):
    def __init__(self, decision: Decision) -> None:
        self.decision = decision
        when = timezone.localtime(decision.created_at).strftime("%Y-%m-%d %H:%M:%S %Z")
        super().__init__(
            f"This review was already decided ({decision.action}) by {decision.decided_by} at {when}."
        )


class ReviewEscalated(DecisionRefused):
    """The review passed its due time and moved to another group, which the actor is not in."""

    def __init__(self, review: Review) -> None:
        self.review = review
        assert review.escalated_at is not None
        when = timezone.localtime(review.escalated_at).strftime("%Y-%m-%d %H:%M:%S %Z")
        super().__init__(
            f"This review passed its due time and was escalated from {review.escalated_from or 'its group'} "
            f"to {review.reviewer_group} at {when}; it is theirs to decide now."
        )


# The actor label of the decisions the deadline sweep takes (a workflow's default at its due time).
TIMEOUT = "timeout"


class StaleReview(DecisionRefused):
    pass


class InvalidDecision(DecisionRefused):
    pass


def is_agent_inbox(value: Any) -> bool:
    """Agent Inbox graphs call interrupt([HumanInterrupt]): a list of requests with a config."""
    return (
        isinstance(value, list)
        and len(value) > 0
        and all(isinstance(item, dict) and "action_request" in item and "config" in item for item in value)
    )


def search_text(thread: Thread, node: str, value: Any, *, summary: Mapping[str, Any] | None = None) -> str:
    """What the queue's search matches a review on, as one lowercase text.

    It is stored unencrypted, so with SIGNOFF_ENCRYPTION_KEY set it holds only what is not
    secret: the thread's title, the node, the workflow's title and the values of the
    workflow's declared summary fields (`summary`). Without a key it also holds the thread's
    input and the interrupt's payload.
    """
    # ensure_ascii off: a search for "café" must find "café", not "caf\u00e9".
    dump = functools.partial(json.dumps, default=str, ensure_ascii=False)
    try:
        workflow_title = registry.get(thread.workflow).title
    except LookupError:
        workflow_title = ""
    parts = [thread.title, node, workflow_title]
    parts += [item if isinstance(item, str) else dump(item) for item in (summary or {}).values()]
    if settings.SIGNOFF_ENCRYPTION_KEY is None:
        parts += [dump(thread.input), dump(value)]
    return "\n".join(parts).lower()[:20_000]


def _summary(thread: Thread, spec: registry.Workflow) -> dict[str, Any]:
    """The values of the workflow's summary fields in the thread's paused state."""
    fields = spec.summary_names
    if not fields:
        return {}
    values = engine.head(thread.workflow, thread.thread_id).values
    if not isinstance(values, Mapping):
        return {}
    return {name: values[name] for name in fields if name in values}


# A summary text longer than this is cut in the review's snapshot: a row shows a few words.
SUMMARY_TEXT_MAX = 500
# What Review.summary_amount holds (DecimalField(max_digits=30, decimal_places=6)).
_AMOUNT_PLACES = Decimal("0.000001")
_AMOUNT_LIMIT = Decimal(10) ** 24


def summary_snapshot(spec: registry.Workflow, summary: Mapping[str, Any]) -> dict[str, Any]:
    """The summary values as a review stores them (Review.summary): JSON, long texts cut."""
    stored: dict[str, Any] = {}
    for name, value in summary.items():
        try:
            item = canonical_json(value)
        except TypeError:
            item = str(value)
        if isinstance(item, str) and len(item) > SUMMARY_TEXT_MAX:
            item = item[: SUMMARY_TEXT_MAX - 1] + "…"
        stored[name] = item
    return stored


def summary_amount(spec: registry.Workflow, summary: Mapping[str, Any]) -> Decimal | None:
    """The value the queue's amount sort orders a review by: the workflow's sort field as a
    number, None without one (or one that is no number), and None for a secret field while
    an encryption key is set, which must not be stored in plaintext."""
    field_ = spec.sort_field
    if field_ is None or (field_.secret and settings.SIGNOFF_ENCRYPTION_KEY is not None):
        return None
    value = summary.get(field_.name)
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal | str):
        return None
    try:
        number = Decimal(str(value))
    except ArithmeticError:
        return None
    if not number.is_finite() or abs(number) >= _AMOUNT_LIMIT:
        return None
    return number.quantize(_AMOUNT_PLACES)


def _searchable(spec: registry.Workflow, summary: Mapping[str, Any]) -> dict[str, Any]:
    """The summary values the search text may hold: with a key set, not the secret ones."""
    if settings.SIGNOFF_ENCRYPTION_KEY is None:
        return dict(summary)
    return {name: value for name, value in summary.items() if name in spec.open_summary_names}


def allowed_actions(review: Review) -> list[str]:
    actions = allowed_actions_for(review.kind, review.value)
    spec = _workflow_or_none(review.workflow)
    if spec is not None and spec.needs_quorum:
        # Only an approve can be counted towards a quorum; an answer (respond, edit and accept)
        # would carry one reviewer's yes past the others. Saying no stays open to everyone.
        return [action for action in actions if action == Decision.Action.APPROVE or action in SAYS_NO]
    return actions


def allowed_actions_for(kind: str, value: Any) -> list[str]:
    if kind == Review.Kind.BREAKPOINT:
        return list(BREAKPOINT_ACTIONS)
    if kind == Review.Kind.AGENT_INBOX:
        config = value[0].get("config", {})
        return [action for action, (flag, _) in AGENT_INBOX_ACTIONS.items() if config.get(flag)]
    return list(PLAIN_ACTIONS)


# Who may read the audit trail: one rule, kept with the trail so its admin asks it too.
can_read_audit = audit.can_read


def implied_updates(review: Review, action: str, spec: registry.Workflow) -> dict[str, Any]:
    """What the action itself sets at a breakpoint (the workflow's on_approve / on_reject),
    over the reviewer's own edits of the same fields; nothing elsewhere."""
    if review.kind != Review.Kind.BREAKPOINT:
        return {}
    if action == Decision.Action.APPROVE:
        return dict(spec.on_approve)
    if action == Decision.Action.REJECT:
        return dict(spec.on_reject or {})
    return {}


def can_review(user: User | None, workflow: str) -> bool:
    return _is_reviewer(user, _workflow_or_none(workflow))


def may_review(user: User | None, review: Review) -> bool:
    """Whether `user` may claim and decide this review: its workflow's reviewers until it is
    escalated, then the members of the group it was escalated to (and superusers always)."""
    spec = _workflow_or_none(review.workflow)
    if review.escalated_at is None:
        return _is_reviewer(user, spec)
    return _is_reviewer(user, None) or (spec is not None and _is_member(user, review.reviewer_group))


def _is_reviewer(user: User | None, spec: registry.Workflow | None) -> bool:
    """Superusers review every workflow, even one no longer registered (`spec` None); others
    those whose reviewer group they belong to."""
    if user is None or not user.is_active:
        return False
    if isinstance(user, AbstractUser) and user.is_superuser:
        return True
    if spec is None:
        return False
    return _is_member(user, spec.reviewer_group)


def _is_member(user: User | None, group: str) -> bool:
    return (
        bool(group)
        and isinstance(user, AbstractUser)
        and user.is_active
        and user.groups.filter(name=group).exists()
    )


# -- reviews open and close with the thread ------------------------------------------------


@receiver(thread_interrupted, dispatch_uid="approvals.open_reviews")
def open_reviews(*, thread: Thread, run: Run | None, interrupts: list[PendingInterrupt], **_: Any) -> None:
    """Turn each pending interrupt into an open review, inside the run's outcome transaction.

    An interrupt that was already answered while the thread was busy (two parallel
    reviews decided in a row) gets no new review: its waiting decision resumes the thread.
    """
    spec = registry.get(thread.workflow)
    pending_ids = {pending.id for pending in interrupts}
    passed = Review.objects.filter(thread=thread, status=Review.Status.OPEN).exclude(
        interrupt_id__in=pending_ids
    )
    _cancel(passed, thread=thread, actor=None, reason="its pause was passed")
    waiting: list[Decision] = []
    fresh: list[PendingInterrupt] = []
    for pending in interrupts:
        existing = Review.objects.filter(thread=thread, interrupt_id=pending.id).order_by("-id").first()
        if existing is None or existing.status == Review.Status.CANCELLED:
            fresh.append(pending)
        elif existing.status == Review.Status.DECIDED and existing.decision.applied_at is None:
            waiting.append(existing.decision)
    if fresh:
        summary = _summary(thread, spec)
        for pending in fresh:
            _open_review(thread, spec, run, pending, summary=summary)
    if waiting:
        _apply_waiting(thread, spec, waiting)


def _open_review(
    thread: Thread,
    spec: registry.Workflow,
    run: Run | None,
    pending: PendingInterrupt,
    *,
    summary: dict[str, Any],
) -> Review:
    kind = (
        Review.Kind.BREAKPOINT
        if pending.kind == "breakpoint"
        else Review.Kind.AGENT_INBOX
        if is_agent_inbox(pending.value)
        else Review.Kind.INTERRUPT
    )
    hours, policy = _due_of(thread, spec, pending, kind)
    review = Review.objects.create(
        due_at=timezone.now() + timedelta(hours=hours),
        reviewer_group=spec.reviewer_group,
        due_policy=policy.as_json(),
        thread=thread,
        workflow=thread.workflow,
        run=run,
        interrupt_id=pending.id,
        kind=kind,
        node=pending.node,
        checkpoint_id=pending.checkpoint_id,
        value=canonical_json(pending.value),
        search_text=search_text(thread, pending.node, pending.value, summary=_searchable(spec, summary)),
        summary=summary_snapshot(spec, summary),
        summary_amount=summary_amount(spec, summary),
    )
    engine_services.record_event(
        action=AuditAction.REVIEW_OPENED,
        actor_label=engine_services.WORKER,
        thread=thread,
        run=run,
        data={"review": review.pk, "node": review.node, "interrupt_id": review.interrupt_id, "kind": kind},
    )
    review_opened.send(sender=Review, review=review)
    return review


def _due_of(
    thread: Thread, spec: registry.Workflow, pending: PendingInterrupt, kind: str
) -> tuple[float, registry.DuePolicy]:
    """When the review is due and what then happens: the payload's "due" if it is sound, else
    the workflow's. A bad one is logged and the workflow's applies: a graph's mistake must not
    lose the pause. A default decision the review's kind cannot take (a breakpoint cannot
    "respond") leaves only the overdue notice."""
    try:
        hours, policy = registry.payload_due(pending.value, spec)
    except ValueError as exc:
        logger.warning(
            "thread %s (%s) at %s: the interrupt's due policy is refused (%s); using the workflow's",
            thread.public_id,
            spec.name,
            pending.node,
            exc,
        )
        hours, policy = spec.review_hours, spec.on_due
    if policy.action == registry.DECIDE:
        allowed = allowed_actions_for(kind, pending.value)
        if policy.decision not in allowed:
            logger.warning(
                "thread %s (%s) at %s: the default decision %r is not one of %s here; the group is "
                "told when it is due instead",
                thread.public_id,
                spec.name,
                pending.node,
                policy.decision,
                ", ".join(allowed),
            )
            policy = registry.DuePolicy()
    return hours, policy


def _apply_waiting(thread: Thread, spec: registry.Workflow, waiting: list[Decision]) -> None:
    """Resume the thread with the decisions taken while it was busy, now that it paused."""
    try:
        _apply(thread, spec, waiting, actor=_sole_actor(waiting))
    except engine_services.EditConflict:
        # decide() refuses an edit that clashes with the running run's, so this is not
        # expected; recording the pause matters more than these answers, which stay
        # decided but unapplied (Decision.applied_at empty) for an admin to see.
        logger.exception("waiting decisions on thread %s clash; not applied", thread.pk)


@receiver(interrupts_withdrawn, dispatch_uid="approvals.withdraw_reviews")
def withdraw_reviews(*, thread: Thread, actor: User | None, reason: str, **_: Any) -> None:
    _cancel(
        Review.objects.filter(thread=thread, status=Review.Status.OPEN),
        thread=thread,
        actor=actor,
        reason=reason,
    )


def _cancel(reviews: QuerySet[Review], *, thread: Thread, actor: User | None, reason: str) -> None:
    now = timezone.now()
    for review in reviews.select_for_update():
        review.status = Review.Status.CANCELLED
        review.closed_at = now
        review.claimed_by = None
        review.save(update_fields=["status", "closed_at", "claimed_by"])
        engine_services.record_event(
            action=AuditAction.REVIEW_CANCELLED,
            actor=actor,
            actor_label="" if actor is not None else engine_services.WORKER,
            thread=thread,
            data={"review": review.pk, "node": review.node, "reason": reason},
        )


# -- deciding ------------------------------------------------------------------------------


def decide(
    *,
    review: Review | int,
    actor: User | None,
    action: str,
    checkpoint_id: str,
    updates: Mapping[str, Any] | None = None,
    response: Any = None,
    comment: str = "",
    data: Mapping[str, Any] | None = None,
    options: engine_services.RunOptions | None = None,
    actor_label: str = "",
    on_decided: Callable[[Decision | Approval], None] | None = None,
) -> Decision | Approval:
    """Record a reviewer's answer and resume the thread with it, once.

    `actor` None is the system deciding, named by `actor_label` (TIMEOUT: the deadline sweep
    applying a workflow's default); it needs no reviewer group and overrides a claim, and is
    otherwise refused exactly as a reviewer would be.

    Refused (nothing written) when the review is no longer open, was rendered from
    another checkpoint, or the action or edits are not allowed. Locks the thread row, its
    active run and the review, in that order, and writes its audit event last.

    In a workflow that needs several approvals (`Workflow.needs_quorum`) an approve is an
    `Approval` (returned) until the one that reaches the quorum, which returns the Decision
    and resumes the thread; a reject decides at once. See `_record_approval`.

    `data` joins the decision's audit event (the API key a decision came through) and
    `options` are the resume run's (an API client's metadata, webhook, stream modes).
    `on_decided(decision)` runs inside the transaction once the decision (or a partial
    approval) is written, before
    the resume and the audit lock (lock order: thread, run, review, its rows, audit), so
    what it writes (a one-click link marked used) commits with the decision or not at all;
    it may raise DecisionRefused to refuse the decision.
    """
    updates = dict(updates or {})
    if actor is None and not actor_label:
        raise InvalidDecision("A decision the system takes names itself (actor_label).")
    _refuse_unstorable(updates=updates, response=response, comment=comment)
    with transaction.atomic(durable=True):
        review = _locked_review(review)
        spec = _check_decidable(review, actor=actor, action=action, checkpoint_id=checkpoint_id)
        try:
            updates = spec.validate_updates(updates)
        except registry.InvalidUpdate as exc:
            raise InvalidDecision(f"Some edits do not fit: {exc}.") from None
        tally: Tally | None = None
        # The system's default (actor None: a timeout) decides at once: nobody is left to count.
        if action == Decision.Action.APPROVE and spec.needs_quorum and actor is not None:
            tally = _record_approval(
                review, spec=spec, actor=actor, checkpoint_id=checkpoint_id, updates=updates, comment=comment
            )
            if not tally.reached:
                if on_decided is not None:
                    on_decided(tally.approval)
                # The review stays open, pinned to its checkpoint, for the next approver.
                _write_events(tally.events, actor=actor, thread=review.thread, data=data)
                return tally.approval
            # The quorum is reached: the thread resumes with the edits every counting approver approved.
            updates = spec.load_updates(tally.updates)
        # What the workflow says approve / reject mean at its breakpoints (expense_approval:
        # approved=True / False). The button wins over a field edited the other way:
        # "reject" must never pay.
        updates = {**updates, **implied_updates(review, action, spec)}
        stored_updates = spec.dump_updates(updates)
        decision = _record_decision(
            review,
            actor=actor,
            actor_label=actor_label,
            action=action,
            checkpoint_id=checkpoint_id,
            stored_updates=stored_updates,
            answer=_answer(review, action, response, comment),
            comment=comment,
        )
        if on_decided is not None:
            on_decided(decision)
        _resume_or_cancel(review, decision, spec=spec, actor=actor, comment=comment, options=options)
        # Last, after update_state: the audit lock serializes every audited write, so it is
        # held only for the append and the commit (the one lock order: thread, run, review, audit).
        if tally is not None:
            _write_events(tally.events, actor=actor, thread=review.thread, data=data)
        engine_services.record_event(
            action=AuditAction.REVIEW_DECIDED,
            actor=actor,
            actor_label=actor_label,
            thread=review.thread,
            data={
                **(data or {}),
                "review": review.pk,
                "decision": decision.pk,
                "action": action,
                "node": review.node,
                "interrupt_id": review.interrupt_id,
                "checkpoint_id": checkpoint_id,
                "updates": stored_updates,
                "comment": comment,
                **({"approved_by": tally.approved_by} if tally is not None else {}),
            },
        )
    return decision


def _check_decidable(
    review: Review, *, actor: User | None, action: str, checkpoint_id: str
) -> registry.Workflow:
    """The review's workflow, if `actor` (None: the system) may take `action` on it now;
    DecisionRefused (with the reason, nothing written) if not."""
    thread = review.thread
    spec = _workflow_or_none(thread.workflow)
    if actor is not None and review.escalated_at is not None and not may_review(actor, review):
        if review.status == Review.Status.DECIDED:
            raise AlreadyDecided(Decision.objects.select_related("actor").get(review=review))
        # The loser of a race with the sweep's escalation: a 409 that says what happened.
        raise ReviewEscalated(review)
    if actor is not None and review.escalated_at is None and not _is_reviewer(actor, spec):
        raise InvalidDecision("You are not a reviewer of this workflow.")
    if spec is None:
        raise WorkflowGone(unregistered_message(thread.workflow))
    if review.status == Review.Status.DECIDED:
        raise AlreadyDecided(Decision.objects.select_related("actor").get(review=review))
    if review.status == Review.Status.CANCELLED:
        raise StaleReview("This review was withdrawn (the thread was cancelled or rolled back).")
    if checkpoint_id != review.checkpoint_id:
        raise StaleReview("The thread has moved on since this review was shown; reload it.")
    holder = claim_holder(review)
    if actor is not None and holder is not None and holder.pk != actor.pk:
        raise ReviewClaimed(_claimed_message(review, holder))
    if action not in allowed_actions(review):
        raise InvalidDecision(
            f"{action!r} is not allowed here; choose one of {', '.join(allowed_actions(review))}."
        )
    if action not in SAYS_NO and actor is not None:
        refusal = approval_refusal(review, spec=spec, actor=actor)
        if refusal:
            raise InvalidDecision(refusal)
    if thread.status not in (Thread.Status.INTERRUPTED, Thread.Status.QUEUED, Thread.Status.RUNNING):
        raise StaleReview(f"The thread is {thread.status}; this review no longer applies.")
    if engine.checkpoint_id_of(engine.head(spec.name, thread.thread_id)) != review.checkpoint_id:
        raise StaleReview("The thread has moved on since this review was opened; reload it.")
    return spec


def _record_decision(
    review: Review,
    *,
    actor: User | None,
    actor_label: str = "",
    action: str,
    checkpoint_id: str,
    stored_updates: dict[str, Any],
    answer: Any,
    comment: str,
) -> Decision:
    """Write the decision and close its review. A system decision (the timeout) also marks
    the review's due action applied, in this transaction: no sweep can apply it again."""
    try:
        # A savepoint: a second decision of the review (the unique constraint) is refused
        # as AlreadyDecided, and the transaction can still read who decided first.
        with transaction.atomic():
            decision = Decision.objects.create(
                review=review,
                actor=actor,
                actor_label="" if actor is not None else actor_label,
                action=action,
                updates={"after": canonical_json(stored_updates)} if stored_updates else {},
                response=canonical_json(answer),
                comment=comment,
                checkpoint_id=checkpoint_id,
            )
    except IntegrityError:
        raise AlreadyDecided(Decision.objects.select_related("actor").get(review=review)) from None
    review.status = Review.Status.DECIDED
    review.closed_at = decision.created_at
    review.claimed_by = None
    review.claim_expires_at = None
    fields = ["status", "closed_at", "claimed_by", "claim_expires_at"]
    if actor is None:
        review.due_applied_at = decision.created_at
        fields.append("due_applied_at")
    review.save(update_fields=fields)
    return decision


def _resume_or_cancel(
    review: Review,
    decision: Decision,
    *,
    spec: registry.Workflow,
    actor: User | None,
    comment: str,
    options: engine_services.RunOptions | None = None,
) -> None:
    """Act on the decision: a reject at a breakpoint whose workflow sets nothing for it
    cancels the thread; any other decision resumes it (now, or at its next pause)."""
    if (
        review.kind == Review.Kind.BREAKPOINT
        and decision.action == Decision.Action.REJECT
        and spec.on_reject is None
    ):
        try:
            engine_services.cancel_in_transaction(
                thread=review.thread, actor=actor, reason=comment or "rejected at review"
            )
        except engine_services.InvalidState as exc:
            # The thread completed or was cancelled after this review was read.
            raise StaleReview(f"This review no longer applies: {exc}.") from None
        decision.applied_at = timezone.now()
        decision.save(update_fields=["applied_at"])
        return
    # ThreadBusy: another answer is being applied right now; this one waits for the
    # thread's next pause, where open_reviews applies it.
    with contextlib.suppress(engine_services.ThreadBusy):
        try:
            _apply(review.thread, spec, [decision], actor=actor, options=options)
        except engine_services.InvalidState as exc:
            raise StaleReview(f"This review no longer applies: {exc}.") from None
        except engine_services.EditConflict as exc:
            raise StaleReview(f"{capfirst(str(exc))}.") from None


class WorkflowGone(DecisionRefused):
    """The review's workflow is no longer registered on this server."""


def unregistered_message(workflow: str) -> str:
    return (
        f"This thread's workflow, “{workflow}”, is no longer registered on this server, so its "
        "reviews cannot be shown or decided; ask an administrator to register it again."
    )


def _workflow_or_none(workflow: str) -> registry.Workflow | None:
    try:
        return registry.get(workflow)
    except LookupError:
        return None


def _refuse_unstorable(**values: Any) -> None:
    """InvalidDecision for edits, a response or a comment that the checkpoint or the database
    cannot store (workflows.limits); checked before anything is locked or written."""
    for what, value in values.items():
        problem = limits.storable_problem(value)
        if problem:
            name = "edits" if what == "updates" else what
            raise InvalidDecision(f"The {name} cannot be stored: {problem}.")


def _answer(review: Review, action: str, response: Any, comment: str) -> Any:
    """What the interrupt() call returns: Agent Inbox's [HumanResponse], or for a plain
    interrupt {"action", "response", "comment"}. None for a breakpoint."""
    if review.kind == Review.Kind.BREAKPOINT:
        return None
    if review.kind == Review.Kind.AGENT_INBOX:
        _, kind = AGENT_INBOX_ACTIONS[Decision.Action(action)]
        request = review.value[0]["action_request"]
        if kind == "edit":
            if not isinstance(response, dict):
                raise InvalidDecision("An edit needs the action's arguments as a JSON object.")
            args: Any = {"action": request.get("action"), "args": response}
        elif kind == "response":
            if not isinstance(response, str) or not response.strip():
                raise InvalidDecision("A response needs some text.")
            args = response
        else:
            args = None
        return [{"type": kind, "args": args}]
    return {"action": action, "response": response, "comment": comment}


def _sole_actor(decisions: list[Decision]) -> User | None:
    """Who the resume is credited to: the one reviewer who made all these decisions, or None
    (the worker, applying them at the pause) when several did; the event names each."""
    actors = {(decision.actor_id, decision.actor_label) for decision in decisions}
    return decisions[0].actor if len(actors) == 1 else None


def _apply(
    thread: Thread,
    spec: registry.Workflow,
    decisions: list[Decision],
    *,
    actor: User | None,
    options: engine_services.RunOptions | None = None,
) -> None:
    """Resume the thread with these decisions' answers (and edits) in one run. The audit
    event credits each decision's reviewer (decided_by, and edited_by for those with edits)."""
    resume: dict[str, Any] = {}
    updates: dict[str, Any] = {}
    proceed = False
    decided_by: list[str] = []
    edited_by: list[str] = []
    for decision in decisions:
        name = decision.decided_by
        decided_by.append(name)
        if decision.updates.get("after") and name not in edited_by:
            edited_by.append(name)
        review = decision.review
        # Stored as JSON; the resume and the graph get the schema's types back.
        updates.update(spec.load_updates(decision.updates.get("after", {})))
        if review.kind == Review.Kind.BREAKPOINT:
            proceed = True
        else:
            resume[review.interrupt_id] = decision.response
    # A savepoint: a resume refused part-way (ThreadBusy, EditConflict) leaves nothing of
    # itself in the caller's transaction, which goes on (or is refused) without it.
    with transaction.atomic():
        engine_services.resume_in_transaction(
            thread=thread,
            spec=spec,
            actor=actor,
            resume=resume or None,
            updates=updates or None,
            proceed=proceed,
            data={
                "decisions": [decision.pk for decision in decisions],
                "decided_by": decided_by,
                "edited_by": edited_by,
            },
            options=options,
        )
    now: datetime = timezone.now()
    Decision.objects.filter(pk__in=[decision.pk for decision in decisions]).update(applied_at=now)


# -- four-eyes and quorum --------------------------------------------------------------------


def starter_refusal(review: Review, *, spec: registry.Workflow, actor: User) -> str:
    """Why `actor` may not say yes to this review because they started its thread
    (segregation of duties, unless the workflow sets starter_may_approve); "" if they may."""
    if spec.starter_may_approve or review.thread.created_by_id is None:
        return ""
    if review.thread.created_by_id != actor.pk:
        return ""
    return (
        "You started this thread, so you may not approve it (segregation of duties): another "
        "reviewer must. You may still reject it."
    )


def approval_refusal(review: Review, *, spec: registry.Workflow, actor: User) -> str:
    """Why `actor` may not approve this review now, in words for them; "" if they may. The
    review page disables its approve choice with this reason, and decide() refuses with it."""
    refusal = starter_refusal(review, spec=spec, actor=actor)
    if refusal or not spec.needs_quorum:
        return refusal
    quorum = quorum_of(review, spec=spec)
    mine = next((approval for approval in quorum.counting if approval.actor_id == actor.pk), None)
    if mine is not None:
        when = timezone.localtime(mine.created_at).strftime("%Y-%m-%d %H:%M")
        return (
            f"You already approved this review at {when} ({quorum.progress}); "
            f"{quorum.still_needed_text()}, from someone else."
        )
    if spec.approvals_required == "all" and not _group_for(actor, quorum.missing_groups):
        return (
            f"This review still needs an approval from a member of {_either(quorum.missing_groups)}, "
            "and you are not in that group."
        )
    return ""


@dataclass(frozen=True)
class Quorum:
    """Where a review's approvals stand: those that count, in order, against what is needed."""

    needed: int
    counting: list[Approval]
    # With approvals_required="all": the approval groups no counting approval stands for yet.
    missing_groups: tuple[str, ...] = ()

    @property
    def given(self) -> int:
        return len(self.counting)

    @property
    def progress(self) -> str:
        return f"{self.given} of {self.needed}"

    @property
    def updates(self) -> dict[str, Any]:
        """The edits the counting approvals approved (stored JSON): each counting approval
        carries them all, since any change restarts the count."""
        return dict(self.counting[-1].updates.get("after", {})) if self.counting else {}

    def still_needed_text(self) -> str:
        if self.missing_groups:
            return f"it still needs an approval from a member of {_each(self.missing_groups)}"
        left = max(self.needed - self.given, 0)
        return f"it still needs {left} more approval{'s' if left != 1 else ''}"


def quorum_of(review: Review, *, spec: registry.Workflow) -> Quorum:
    counting = Approval.objects.filter(review=review, superseded_at__isnull=True)
    return _quorum(spec, list(counting.select_related("actor").order_by("id")))


def _quorum(spec: registry.Workflow, counting: list[Approval]) -> Quorum:
    missing: tuple[str, ...] = ()
    if spec.approvals_required == "all":
        covered = {approval.group for approval in counting}
        missing = tuple(group for group in spec.approval_groups if group not in covered)
    return Quorum(needed=spec.approvals_needed, counting=counting, missing_groups=missing)


def _group_for(actor: User, groups: tuple[str, ...]) -> str:
    """The first of `groups` (in the workflow's order) that `actor` belongs to, or ""."""
    if not groups:
        return ""
    mine = set(actor.groups.filter(name__in=groups).values_list("name", flat=True))
    return next((group for group in groups if group in mine), "")


def _either(groups: tuple[str, ...]) -> str:
    return " or ".join(f"“{group}”" for group in groups)


def _each(groups: tuple[str, ...]) -> str:
    return " and ".join(f"“{group}”" for group in groups)


def proposed_values(review: Review, *, spec: registry.Workflow, values: Mapping[str, Any]) -> dict[str, Any]:
    """The state as the next approver is asked to approve it: the checkpoint's values with the
    edits of the approvals that count. The review form starts from these, so a field the
    approver leaves as shown is no edit of theirs."""
    if not spec.needs_quorum or review.status != Review.Status.OPEN:
        return dict(values)
    return {**values, **spec.load_updates(quorum_of(review, spec=spec).updates)}


@dataclass
class Tally:
    """What `_record_approval` did: the new approval, whether the quorum is now reached (with
    the edits to resume with), and the audit events to write last (after any resume)."""

    approval: Approval
    reached: bool
    updates: dict[str, Any]
    approved_by: list[str]
    events: list[tuple[AuditAction, dict[str, Any]]] = field(default_factory=list)


def _record_approval(
    review: Review,
    *,
    spec: registry.Workflow,
    actor: User,
    checkpoint_id: str,
    updates: dict[str, Any],
    comment: str,
) -> Tally:
    """Record `actor`'s approval of a review that needs several, inside decide()'s
    transaction and under its locks (thread, run, review), so two approvers at the same moment
    are counted one after the other and only the one who completes the quorum resumes.

    `updates` are the approver's changes to what they were shown (`proposed_values`). A change
    restarts the count: the earlier approvals stop counting (recorded, audited) and this one is
    the first of the new count, carrying the edits it accepted with its own."""
    quorum = quorum_of(review, spec=spec)
    shown = quorum.updates
    values = engine.head(spec.name, review.thread.thread_id).values
    state = values if isinstance(values, Mapping) else {}
    changes = {
        name: value
        for name, value in spec.dump_updates(updates).items()
        if (shown[name] if name in shown else _stored(spec, name, state)) != value
    }
    now = timezone.now()
    events: list[tuple[AuditAction, dict[str, Any]]] = []
    superseded = quorum.counting if changes else []
    counting = [] if changes else list(quorum.counting)
    group = ""
    if spec.approvals_required == "all":
        group = _group_for(actor, _quorum(spec, counting).missing_groups)
    try:
        with transaction.atomic():  # a savepoint: the constraint's refusal leaves the rest usable
            approval = Approval.objects.create(
                review=review,
                actor=actor,
                group=group,
                updates={"after": canonical_json({**shown, **changes})} if shown or changes else {},
                edited=bool(changes),
                comment=comment,
                checkpoint_id=checkpoint_id,
            )
    except IntegrityError:
        raise InvalidDecision("You already approved this review; someone else must approve it too.") from None
    if superseded:
        Approval.objects.filter(pk__in=[old.pk for old in superseded]).update(
            superseded_at=now, superseded_by=approval
        )
        events.append(
            (
                AuditAction.REVIEW_APPROVALS_RESET,
                {
                    "review": review.pk,
                    "approval": approval.pk,
                    "superseded": [old.pk for old in superseded],
                    "superseded_approvers": [old.actor.get_username() for old in superseded],
                    "reason": "a later approver changed the edits",
                },
            )
        )
    counting.append(approval)
    after = _quorum(spec, counting)
    reached = after.given >= after.needed and not after.missing_groups
    events.append(
        (
            AuditAction.REVIEW_APPROVED,
            {
                "review": review.pk,
                "approval": approval.pk,
                "progress": after.progress,
                "given": after.given,
                "needed": after.needed,
                "group": group,
                "node": review.node,
                "interrupt_id": review.interrupt_id,
                "checkpoint_id": checkpoint_id,
                "updates": changes,
                "edited": bool(changes),
                "comment": comment,
            },
        )
    )
    if not reached:
        # Approved: the approver's claim ends, so the next approver can take the review.
        review.claimed_by = None
        review.claim_expires_at = None
        review.save(update_fields=["claimed_by", "claim_expires_at"])
    return Tally(
        approval=approval,
        reached=reached,
        updates=after.updates,
        approved_by=[counted.actor.get_username() for counted in counting],
        events=events,
    )


def _stored(spec: registry.Workflow, name: str, state: Mapping[str, Any]) -> Any:
    """A checkpoint value as an edit of it is stored (JSON), to tell an edit from no edit."""
    if name not in state:
        return None
    try:
        return spec.dump_updates({name: state[name]})[name]
    except registry.InvalidUpdate:
        return state[name]


def _write_events(
    events: list[tuple[AuditAction, dict[str, Any]]],
    *,
    actor: User | None,
    thread: Thread,
    data: Mapping[str, Any] | None,
) -> None:
    for action, event_data in events:
        engine_services.record_event(
            action=action, actor=actor, thread=thread, data={**(data or {}), **event_data}
        )


# -- claims ----------------------------------------------------------------------------------


class ReviewClaimed(DecisionRefused):
    """Someone else is working on this review right now."""


def claim_holder(review: Review, *, now: datetime | None = None) -> User | None:
    """Who holds a live claim on the review, if anyone (the rule is Review.claim_holder's)."""
    return review.claim_holder(now)


def claim_review(*, review: Review | int, actor: User) -> Review:
    """Take (or extend) the claim on an open review for SIGNOFF_CLAIM_SECONDS; others then see
    "being reviewed by ...". An expired claim is free to take."""
    with transaction.atomic(durable=True):
        locked = _locked_review(review)
        if not may_review(actor, locked):
            if locked.escalated_at is not None and locked.status == Review.Status.OPEN:
                raise ReviewEscalated(locked)
            raise InvalidDecision("You are not a reviewer of this workflow.")
        if locked.status != Review.Status.OPEN:
            raise StaleReview(f"This review is {locked.status}; there is nothing to claim.")
        holder = claim_holder(locked)
        if holder is not None and holder.pk != actor.pk:
            raise ReviewClaimed(_claimed_message(locked, holder))
        _give_claim(locked, actor)
        if holder is None:
            # Extending one's own claim changes only its expiry, which is not worth an event.
            engine_services.record_event(
                action=AuditAction.REVIEW_CLAIMED,
                actor=actor,
                thread=locked.thread,
                data={"review": locked.pk, "until": locked.claim_expires_at},
            )
    return locked


def release_review(*, review: Review | int, actor: User) -> Review:
    """Give a claimed review back to the queue (the holder, or a superuser)."""
    with transaction.atomic(durable=True):
        locked = _locked_review(review)
        holder = claim_holder(locked)
        if holder is None:
            return locked
        if holder.pk != actor.pk and not actor.is_superuser:
            raise ReviewClaimed(_claimed_message(locked, holder))
        locked.claimed_by = None
        locked.claim_expires_at = None
        locked.save(update_fields=["claimed_by", "claim_expires_at"])
        engine_services.record_event(
            action=AuditAction.REVIEW_RELEASED,
            actor=actor,
            thread=locked.thread,
            data={"review": locked.pk, "holder": holder.get_username()},
        )
    return locked


# The furthest ahead a follow-up may be set: a date years away is a typo, not a plan.
FOLLOW_UP_MAX_DAYS = 366


def set_follow_up(*, review: Review | int, actor: User, at: datetime | None) -> Review:
    """Set the date the claimant wants to be reminded of a review they hold ("remind me
    tomorrow"), or clear it (`at` None; also for whoever set it once the claim lapsed). The
    deadline sweep sends review_follow_up when it comes, once. Locks the thread, its run and
    the review (the one order), then the audit lock."""
    now = timezone.now()
    with transaction.atomic(durable=True):
        locked = _locked_review(review)
        if not may_review(actor, locked):
            raise InvalidDecision("You are not a reviewer of this review.")
        if locked.status != Review.Status.OPEN:
            raise StaleReview(f"This review is {locked.status}; there is nothing to follow up.")
        holder = claim_holder(locked, now=now)
        setter = locked.follow_up_by_id == actor.pk and at is None
        if not setter and (holder is None or holder.pk != actor.pk):
            if holder is not None:
                raise ReviewClaimed(_claimed_message(locked, holder))
            raise InvalidDecision("Claim the review first: a follow-up is for the reviewer who holds it.")
        if at is not None:
            if at <= now:
                raise InvalidDecision("A follow-up date must be in the future.")
            if at > now + timedelta(days=FOLLOW_UP_MAX_DAYS):
                raise InvalidDecision(f"A follow-up date must be within {FOLLOW_UP_MAX_DAYS} days.")
        locked.follow_up_at = at
        locked.follow_up_by = actor if at is not None else None
        locked.save(update_fields=["follow_up_at", "follow_up_by"])
        engine_services.record_event(
            action=AuditAction.REVIEW_FOLLOW_UP_SET,
            actor=actor,
            thread=locked.thread,
            data={"review": locked.pk, "at": at},
        )
    return locked


def _give_claim(review: Review, holder: User) -> None:
    """Make `holder` the review's claimant for SIGNOFF_CLAIM_SECONDS (the first claim is kept
    for the metrics' time to first claim). The review is locked by the caller."""
    now = timezone.now()
    review.claimed_by = holder
    review.claim_expires_at = now + timedelta(seconds=settings.SIGNOFF_CLAIM_SECONDS)
    review.first_claimed_at = review.first_claimed_at or now
    review.save(update_fields=["claimed_by", "claim_expires_at", "first_claimed_at"])


# -- claims moved by others (issue 12, item 5) ----------------------------------------------


class ClaimRefused(DecisionRefused):
    """A take-over, reassignment or hand-on cannot be done now (the review is not open, or not
    claimed as the asker thought); nothing was written."""


class NotAllowed(ClaimRefused):
    """The asker may not move this review's claim."""


class BadColleague(ClaimRefused):
    """The person named to receive the review cannot take it."""


def may_direct(user: User | None, workflow: str) -> bool:
    """Who may take over or reassign another's claim on the workflow's reviews: active
    superusers, and active members of the workflow's lead group."""
    if user is None or not user.is_active:
        return False
    if user.is_superuser:
        return True
    spec = _workflow_or_none(workflow)
    lead = spec.lead_group if spec else ""
    return bool(lead) and user.groups.filter(name=lead).exists()


def colleagues(review: Review, *, exclude: User | None = None) -> QuerySet[User]:
    """The active members of the review's group, by name: who it can be given to."""
    group = review.responsible_group
    people = User.objects.filter(is_active=True, groups__name=group) if group else User.objects.none()
    if exclude is not None:
        people = people.exclude(pk=exclude.pk)
    return people.order_by("username").distinct()


def take_over_review(*, review: Review | int, actor: User) -> Review:
    """A lead or an admin takes a review another reviewer holds: the claim becomes theirs.

    Locks the thread, its active run, then the review (`_locked_review`), then the audit
    lock: the order every service keeps, so a take-over racing the holder's decision waits
    for it and is then refused (the review is no longer open), or wins and the holder's
    decision is refused as claimed by someone else."""
    with transaction.atomic(durable=True):
        locked = _locked_review(review)
        if not may_direct(actor, locked.workflow):
            raise NotAllowed("Only an administrator or a lead of this workflow can take over a review.")
        if not may_review(actor, locked):
            raise NotAllowed(
                "You do not review this workflow, so you cannot hold its reviews; reassign it instead."
            )
        _check_open(locked, "take over")
        holder = claim_holder(locked)
        if holder is None:
            raise ClaimRefused("Nobody holds this review; claim it instead of taking it over.")
        if holder.pk == actor.pk:
            raise ClaimRefused("You already hold this review.")
        return _move_claim(locked, actor=actor, holder=holder, to=actor, action=AuditAction.REVIEW_TAKEN_OVER)


def reassign_review(*, review: Review | int, actor: User, to: User | str) -> Review:
    """A lead or an admin gives a review (claimed or not) to a named active member of its
    group; the claim becomes theirs. Locks as `take_over_review`."""
    with transaction.atomic(durable=True):
        locked = _locked_review(review)
        if not may_direct(actor, locked.workflow):
            raise NotAllowed("Only an administrator or a lead of this workflow can reassign a review.")
        _check_open(locked, "reassign")
        holder = claim_holder(locked)
        colleague = _colleague(locked, to)
        if holder is not None and holder.pk == colleague.pk:
            raise BadColleague(f"{colleague.get_username()} already holds this review.")
        return _move_claim(
            locked, actor=actor, holder=holder, to=colleague, action=AuditAction.REVIEW_REASSIGNED
        )


def hand_review(*, review: Review | int, actor: User, to: User | str) -> Review:
    """The holder of a review hands it to a named active colleague in its group; the claim
    becomes theirs. Locks as `take_over_review`."""
    with transaction.atomic(durable=True):
        locked = _locked_review(review)
        _check_open(locked, "hand on")
        holder = claim_holder(locked)
        if holder is None or holder.pk != actor.pk:
            raise NotAllowed("Only the reviewer who holds this review can hand it on.")
        colleague = _colleague(locked, to)
        if colleague.pk == actor.pk:
            raise BadColleague("You already hold this review; name a colleague.")
        return _move_claim(
            locked, actor=actor, holder=holder, to=colleague, action=AuditAction.REVIEW_HANDED_ON
        )


def _check_open(review: Review, what: str) -> None:
    if review.status == Review.Status.DECIDED:
        decision = Decision.objects.select_related("actor").get(review=review)
        raise ClaimRefused(f"There is nothing to {what}: {AlreadyDecided(decision)}")
    if review.status != Review.Status.OPEN:
        raise ClaimRefused(f"This review is {review.status}; there is nothing to {what}.")


def _colleague(review: Review, to: User | str) -> User:
    """`to` (a user or a user name), if they can take the review: active, in its group."""
    name = to.get_username() if isinstance(to, User) else str(to).strip()
    if not name:
        raise BadColleague("Name the colleague to give the review to.")
    user = User.objects.filter(username=name).first()
    group = review.responsible_group
    if user is None:
        raise BadColleague(f"There is no user named {name!r}.")
    if not user.is_active:
        raise BadColleague(f"{name} cannot take reviews: their account is inactive.")
    if not group or not user.groups.filter(name=group).exists():
        raise BadColleague(f"{name} is not in this review's group ({group or 'none'}), so cannot take it.")
    return user


def _move_claim(review: Review, *, actor: User, holder: User | None, to: User, action: AuditAction) -> Review:
    _give_claim(review, to)
    previous = holder.get_username() if holder else None
    review_reassigned.send(sender=Review, review=review, previous_holder=holder, new_holder=to, actor=actor)
    engine_services.record_event(
        action=action,
        actor=actor,
        thread=review.thread,
        data={
            "review": review.pk,
            "from": previous,
            "to": to.get_username(),
            "until": review.claim_expires_at,
        },
    )
    return review


def _locked_review(review: Review | int) -> Review:
    """Lock the review's thread row and active run (`lock_thread`), then the review: the
    one lock order, so a reviewer never waits on a row a worker or an admin holds while
    they wait on the review."""
    pk = review.pk if isinstance(review, Review) else review
    thread_id = Review.objects.filter(pk=pk).values_list("thread_id", flat=True).first()
    if thread_id is None:
        raise InvalidDecision("There is no such review.")
    engine_services.lock_thread(thread_id)
    locked = (
        # Only the review row is locked: PostgreSQL cannot lock the nullable side of the
        # outer join to the claimant, and the thread and claimant are only read.
        Review.objects.select_for_update(no_key=True, of=("self",))
        .select_related("thread", "claimed_by")
        .filter(pk=pk)
        .first()
    )
    if locked is None:
        raise InvalidDecision("There is no such review.")
    return locked


def _claimed_message(review: Review, holder: User) -> str:
    until = timezone.localtime(review.claim_expires_at).strftime("%H:%M")
    return f"This review is being reviewed by {holder.get_username()} (claimed until {until})."


# -- saved queue filters ------------------------------------------------------------------

# How many filters one reviewer may keep: a list on the queue page, not a store.
SAVED_FILTERS_MAX = 50


class InvalidFilter(ValueError):
    """A saved filter that cannot be kept as asked (no name, too long, too many)."""


def save_filter(*, user: User, name: str, query: str) -> SavedFilter:
    """Save the queue's filters (`query`, a query string) as `name` for `user`, replacing the
    user's filter of that name. The query is kept as the queue writes it (no page, only its
    own filters). Audited. InvalidFilter says what is wrong, and nothing is written."""
    name = " ".join(name.split())
    if not name:
        raise InvalidFilter("give it a name")
    if len(name) > 100:
        raise InvalidFilter("the name is longer than 100 characters")
    if "\x00" in name:
        raise InvalidFilter("the name contains a NUL character")
    if len(query) > 1000:
        raise InvalidFilter("the filters are longer than 1000 characters")
    clean = queries.QueueFilters.clean_query(query)
    with transaction.atomic(durable=True):
        # Taking turns on the user's row: two saves at once cannot both pass the count.
        User.objects.select_for_update().filter(pk=user.pk).exists()
        existing = SavedFilter.objects.filter(user=user, name=name).first()
        if existing is None and SavedFilter.objects.filter(user=user).count() >= SAVED_FILTERS_MAX:
            raise InvalidFilter(f"you have {SAVED_FILTERS_MAX} saved filters already: delete one first")
        before = existing.query if existing is not None else None
        if existing is None:
            saved = SavedFilter.objects.create(user=user, name=name, query=clean)
        else:
            saved = existing
            saved.query = clean
            saved.save(update_fields=["query"])
        engine_services.record_event(
            action=AuditAction.FILTER_SAVED,
            actor=user,
            data={"filter": saved.pk, "name": name, "query": clean, "before": before},
        )
    return saved


def delete_filter(*, user: User, saved_filter: int) -> str:
    """Delete the user's saved filter `saved_filter` (an id) and return its name. Audited.
    Another user's filter is not found: SavedFilter.DoesNotExist."""
    with transaction.atomic(durable=True):
        saved = SavedFilter.objects.select_for_update().get(pk=saved_filter, user=user)
        name = saved.name
        data = {"filter": saved.pk, "name": name, "query": saved.query}
        saved.delete()
        engine_services.record_event(action=AuditAction.FILTER_DELETED, actor=user, data=data)
    return name


# -- Sign-in attempts (deploy) ----------------------------------------------------------
# Written from approvals.security's receivers of Django's and django-axes' signals. The
# typed password is never stored: only the user name (which need not exist) and the client.
ANONYMOUS = "anonymous"


def record_login_failure(*, username: str, ip_address: str) -> None:
    """Audit one refused sign-in (a wrong password, or any password while locked out)."""
    _record_sign_in(AuditAction.LOGIN_FAILED, username=username, ip_address=ip_address)


def record_lockout(*, username: str, ip_address: str) -> None:
    """Audit that a user name is locked out for a client after too many failures."""
    _record_sign_in(AuditAction.LOGIN_LOCKED_OUT, username=username, ip_address=ip_address)


def _record_sign_in(action: AuditAction, *, username: str, ip_address: str) -> None:
    with transaction.atomic(durable=True):
        engine_services.record_event(
            action=action, actor_label=ANONYMOUS, data={"username": username, "ip_address": ip_address}
        )
