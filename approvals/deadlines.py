"""Deadlines that act: what the sweep does once a review's due time passes.

Each open review carries the due policy that applied when it opened (`Review.due_policy`, a
snapshot of `registry.DuePolicy`). `sweep_deadlines`, run by beat every
SIGNOFF_DEADLINE_SWEEP_SECONDS (`approvals.tasks.sweep_deadlines`), then:

- notify: tells the group once (review_overdue, audited review.overdue);
- remind: the same at the due time, then again every `every_hours` (review.reminded);
- escalate: moves the review to the target group, ends the claim and any follow-up
  (review_escalated with from/to, audited review.escalated), and gives the new group a due
  time as far off as the first group's (an hour at least), with a plain notify policy;
- decide: answers it through `approvals.services.decide` as the system actor "timeout", with
  the same pinning to the review's checkpoint and the same review.decided event.

The marker that a due time was handled (`Review.due_applied_at`) is written in the
transaction of the action, under the review's lock, so a second sweep, or one after a restart,
finds nothing left to do: each action happens at most once. A reviewer's decision at the same
moment wins or loses cleanly: whichever takes the thread's lock first goes ahead; the other
finds the review decided (AlreadyDecided, a 409) or escalated away (ReviewEscalated, a 409),
or, for the sweep, skips it.

It also tells a claimant once that their review is due within SIGNOFF_DUE_SOON_HOURS
(review_due_soon), and sends each follow-up date that has come (review_follow_up), then
clears it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from approvals import services
from approvals.models import Review
from approvals.signals import review_due_soon, review_escalated, review_follow_up, review_overdue
from workflows import registry
from workflows import services as engine_services
from workflows.audit import Action as AuditAction
from workflows.models import Thread

logger = logging.getLogger(__name__)

# Who the sweep's own events name (a default decision names TIMEOUT, as its Decision does).
DEADLINES = "system:deadlines"


@dataclass
class DeadlineSweep:
    """What one sweep did. `skipped`: reviews someone else held locked (a worker, a reviewer,
    an admin) or that changed meanwhile; the next sweep looks at them again."""

    escalated: int = 0
    timed_out: int = 0
    overdue: int = 0
    reminded: int = 0
    due_soon: int = 0
    followed_up: int = 0
    skipped: int = 0


def sweep_deadlines(*, now: datetime | None = None, batch: int | None = None) -> DeadlineSweep:
    """Apply every due action that is owed at `now` (default: the clock), at most `batch`
    (SIGNOFF_SWEEP_BATCH) reviews of each kind per call; the rest wait for the next sweep.

    Each review is handled in a transaction of its own that locks its thread, then the review
    (the one order: thread, run, review, audit; these actions write no run), with SKIP
    LOCKED: a review whose thread is busy is left for the next sweep rather than waited for.
    A default decision goes through `services.decide`, which takes the same locks (waiting
    for them, as any decision does)."""
    now = now or timezone.now()
    batch = batch or settings.SIGNOFF_SWEEP_BATCH
    result = DeadlineSweep()
    open_reviews = Review.objects.filter(status=Review.Status.OPEN)
    owed = open_reviews.filter(due_at__lte=now).filter(
        Q(due_applied_at__isnull=True) | Q(next_reminder_at__lte=now)
    )
    for pk in owed.order_by("due_at", "id").values_list("pk", flat=True)[:batch]:
        _past_due(pk, now, result)
    soon = (
        open_reviews.filter(
            Review.live_claim(now),
            due_at__gt=now,
            due_at__lte=now + timedelta(hours=settings.SIGNOFF_DUE_SOON_HOURS),
            due_soon_notified_at__isnull=True,
        )
        .order_by("due_at", "id")
        .values_list("pk", flat=True)
    )
    for pk in soon[:batch]:
        _count(result, _in_sweep_transaction(pk, now, _due_soon))
    follow_ups = open_reviews.filter(follow_up_at__lte=now).order_by("follow_up_at", "id")
    for pk in follow_ups.values_list("pk", flat=True)[:batch]:
        _count(result, _in_sweep_transaction(pk, now, _follow_up))
    return result


def _count(result: DeadlineSweep, outcome: str | None) -> None:
    name = outcome or "skipped"
    setattr(result, name, getattr(result, name) + 1)


def _past_due(pk: int, now: datetime, result: DeadlineSweep) -> None:
    policy = Review.objects.filter(pk=pk).values_list("due_policy", flat=True).first() or {}
    if policy.get("action") == registry.DECIDE:
        _count(result, _decide_default(pk, now, policy))
    elif policy.get("action") == registry.ESCALATE:
        _count(result, _in_sweep_transaction(pk, now, _escalate))
    else:
        _count(result, _in_sweep_transaction(pk, now, _notify))


def _in_sweep_transaction(
    pk: int, now: datetime, act: Callable[[Review, datetime], str | None]
) -> str | None:
    """Run `act` on the review in a durable transaction that holds its thread and the review
    (SKIP LOCKED: None when either is busy). `act` re-checks what it acts on under the
    lock and returns the DeadlineSweep counter it adds to, or None."""
    with transaction.atomic(durable=True):
        review = _locked(pk)
        if review is None:
            return None
        return act(review, now)


def _locked(pk: int) -> Review | None:
    thread_id = Review.objects.filter(pk=pk).values_list("thread_id", flat=True).first()
    if thread_id is None:
        return None
    thread = Thread.objects.select_for_update(no_key=True, skip_locked=True).filter(pk=thread_id).first()
    if thread is None:
        return None
    # The sweep's own actions write no run, so the run row (next in the order) is not taken.
    review = (
        # As services._locked_review: only the review row, the claimant is only read.
        Review.objects.select_for_update(no_key=True, skip_locked=True, of=("self",))
        .select_related("thread", "claimed_by", "follow_up_by")
        .filter(pk=pk, status=Review.Status.OPEN)
        .first()
    )
    if review is not None:
        review.thread = thread
    return review


def _is_owed(review: Review, now: datetime) -> bool:
    return review.due_at is not None and review.due_at <= now and review.due_applied_at is None


# -- the policies --------------------------------------------------------------------------------


def _notify(review: Review, now: datetime, reason: str = "") -> str | None:
    """The overdue notice (notify, remind, and a default decision that could not be taken)."""
    first = _is_owed(review, now)
    repeat = review.next_reminder_at is not None and review.next_reminder_at <= now
    if not first and not repeat:
        return None
    policy = review.due_policy or {}
    fields = []
    if first:
        review.due_applied_at = review.overdue_notified_at = now
        fields += ["due_applied_at", "overdue_notified_at"]
    if policy.get("action") == registry.REMIND:
        review.reminded_at = now
        review.next_reminder_at = now + timedelta(hours=float(policy["every_hours"]))
        fields += ["reminded_at", "next_reminder_at"]
    else:
        review.next_reminder_at = None
        fields.append("next_reminder_at")
    review.save(update_fields=fields)
    review_overdue.send(sender=Review, review=review)
    engine_services.record_event(
        action=AuditAction.REVIEW_OVERDUE if first else AuditAction.REVIEW_REMINDED,
        actor_label=DEADLINES,
        thread=review.thread,
        data={
            "review": review.pk,
            "due_at": review.due_at,
            "group": review.responsible_group,
            "next_reminder_at": review.next_reminder_at,
            **({"reason": reason} if reason else {}),
        },
    )
    return "overdue" if first else "reminded"


MIN_ESCALATED_WINDOW = timedelta(hours=1)


def _window(review: Review, due_at: datetime | None) -> timedelta:
    """How long the review's first group had to decide it."""
    return due_at - review.created_at if due_at is not None else timedelta(0)


def _escalate(review: Review, now: datetime) -> str | None:
    if not _is_owed(review, now):
        return None
    from_group = review.responsible_group
    to_group = str(review.due_policy["to_group"])
    previous_holder = review.claim_holder(now)
    missed = review.due_at
    review.reviewer_group = to_group
    review.escalated_from = from_group
    review.escalated_at = now
    # The new group gets the time the first one had (an hour at least), and is told when that
    # passes too; escalation itself happened, once: the policy is now only to notify.
    review.due_at = now + max(_window(review, missed), MIN_ESCALATED_WINDOW)
    review.due_policy = registry.DuePolicy(action=registry.NOTIFY).as_json()
    review.due_applied_at = review.due_soon_notified_at = None
    # The old group's claim and follow-up end with it: the review is the new group's to take.
    review.claimed_by = review.follow_up_by = None
    review.claim_expires_at = review.follow_up_at = None
    review.save(
        update_fields=[
            "reviewer_group",
            "escalated_from",
            "escalated_at",
            "due_at",
            "due_policy",
            "due_applied_at",
            "due_soon_notified_at",
            "claimed_by",
            "claim_expires_at",
            "follow_up_by",
            "follow_up_at",
        ]
    )
    review_escalated.send(
        sender=Review,
        review=review,
        from_group=from_group,
        to_group=to_group,
        previous_holder=previous_holder,
    )
    engine_services.record_event(
        action=AuditAction.REVIEW_ESCALATED,
        actor_label=DEADLINES,
        thread=review.thread,
        data={
            "review": review.pk,
            "from": from_group,
            "to": to_group,
            "due_at": missed,
            "new_due_at": review.due_at,
            "previous_holder": previous_holder.get_username() if previous_holder else None,
        },
    )
    return "escalated"


def _decide_default(pk: int, now: datetime, policy: dict[str, object]) -> str | None:
    """The workflow's default, decided as TIMEOUT by the one decision service. A default that
    can no longer be taken (the thread moved on, the workflow is gone) becomes the overdue
    notice, with the reason, so it is not tried again on every sweep."""
    review = Review.objects.filter(pk=pk).first()
    if review is None or not _is_owed(review, now):
        return None
    try:
        services.decide(
            review=pk,
            actor=None,
            actor_label=services.TIMEOUT,
            action=str(policy["decision"]),
            checkpoint_id=review.checkpoint_id,
            response=policy.get("response"),
            comment="No decision by the due time: the workflow's default was applied.",
            data={"due_at": review.due_at, "policy": policy},
        )
    except (services.AlreadyDecided, services.ReviewEscalated):
        return None
    except services.DecisionRefused as exc:
        logger.warning("review %s: the default decision cannot be taken (%s); notifying instead", pk, exc)
        reason = f"the default decision could not be taken: {exc}"
        return _in_sweep_transaction(pk, now, functools.partial(_notify, reason=reason))
    return "timed_out"


def _due_soon(review: Review, now: datetime) -> str | None:
    holder = review.claim_holder(now)
    soon = now + timedelta(hours=settings.SIGNOFF_DUE_SOON_HOURS)
    if (
        holder is None
        or review.due_soon_notified_at is not None
        or review.due_at is None
        or not now < review.due_at <= soon
    ):
        return None
    review.due_soon_notified_at = now
    review.save(update_fields=["due_soon_notified_at"])
    review_due_soon.send(sender=Review, review=review)
    engine_services.record_event(
        action=AuditAction.REVIEW_DUE_SOON,
        actor_label=DEADLINES,
        thread=review.thread,
        data={"review": review.pk, "due_at": review.due_at, "holder": holder.get_username()},
    )
    return "due_soon"


def _follow_up(review: Review, now: datetime) -> str | None:
    if review.follow_up_at is None or review.follow_up_at > now:
        return None
    user = review.follow_up_by
    at = review.follow_up_at
    review.follow_up_at = None
    review.follow_up_by = None
    review.save(update_fields=["follow_up_at", "follow_up_by"])
    if user is not None and user.is_active:
        review_follow_up.send(sender=Review, review=review, user=user)
    engine_services.record_event(
        action=AuditAction.REVIEW_FOLLOWED_UP,
        actor_label=DEADLINES,
        thread=review.thread,
        data={"review": review.pk, "at": at, "user": user.get_username() if user else None},
    )
    return "followed_up"
