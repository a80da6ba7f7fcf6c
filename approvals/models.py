"""The people's side: a pending interrupt becomes a `Review`; an answer is its `Decision`.

Written only by `approvals.services`.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import models
from django.utils import timezone

from workflows.models import Run, Thread
from workflows.sealed import SealedJSONField, SealedTextField

if TYPE_CHECKING:
    from django.contrib.auth.models import User


class Review(models.Model):
    class Status(models.TextChoices):
        OPEN = "open"
        DECIDED = "decided"
        CANCELLED = "cancelled"

    class Kind(models.TextChoices):
        # interrupt(value) in a node; the answer is what interrupt() returns.
        INTERRUPT = "interrupt"
        # interrupt([HumanInterrupt]) as Agent Inbox writes it; answered with [HumanResponse].
        AGENT_INBOX = "agent_inbox"
        # A static breakpoint (interrupt_before/after): answered by continuing.
        BREAKPOINT = "breakpoint"

    thread = models.ForeignKey(Thread, on_delete=models.CASCADE, related_name="reviews")
    # The thread's workflow, copied so the queue filters and sorts open reviews on one index
    # instead of joining every thread.
    workflow = models.CharField(max_length=100)
    run = models.ForeignKey(Run, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    interrupt_id = models.CharField(max_length=200)
    kind = models.CharField(max_length=20, choices=Kind)
    node = models.CharField(max_length=200)
    # The checkpoint the interrupt was raised at: a decision must be rendered from it.
    checkpoint_id = models.CharField(max_length=64)
    # Sealed (encrypted) with SIGNOFF_ENCRYPTION_KEY set: see workflows/sealed.py.
    value = SealedJSONField(default=dict, blank=True)
    # One lowercase text for the queue's search, never sealed: the thread's title, the node,
    # the workflow's title and its declared summary fields; without an encryption key also the
    # thread's input and the payload (approvals.services.search_text).
    search_text = models.TextField(blank=True, default="")
    status = models.CharField(max_length=20, choices=Status, default=Status.OPEN)
    claimed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    claim_expires_at = models.DateTimeField(null=True, blank=True)
    # When someone first claimed it (the metrics' time to first claim); kept through releases.
    first_claimed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # When the workflow wants an answer by (its review_hours after the review opened).
    due_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["thread", "interrupt_id"],
                condition=models.Q(status="open"),
                name="review_one_open_per_interrupt",
            )
        ]
        indexes = [
            models.Index(
                fields=["created_at"], name="review_open_waiting", condition=models.Q(status="open")
            ),
            models.Index(
                fields=["workflow", "created_at"],
                name="review_open_workflow",
                condition=models.Q(status="open"),
            ),
            models.Index(fields=["thread", "status"], name="review_thread"),
        ]

    def __str__(self) -> str:
        return f"{self.node} on {self.thread}"

    # -- the claim: the one rule for "is this review being reviewed", for the services that
    # claim and decide, the queue's counts and filters, and the pages.

    @staticmethod
    def live_claim(now: datetime) -> models.Q:
        """Reviews someone holds a live claim on at `now`: a holder, and a claim not yet
        expired (an expired claim holds nothing and is free to take)."""
        return models.Q(claimed_by__isnull=False, claim_expires_at__gt=now)

    def claim_is_live(self, now: datetime) -> bool:
        """`live_claim(now)` for this row, as loaded."""
        return (
            self.claimed_by_id is not None
            and self.claim_expires_at is not None
            and self.claim_expires_at > now
        )

    def claim_holder(self, now: datetime | None = None) -> User | None:
        """Who holds a live claim on the review, if anyone."""
        return self.claimed_by if self.claim_is_live(now or timezone.now()) else None


class Decision(models.Model):
    class Action(models.TextChoices):
        APPROVE = "approve"
        REJECT = "reject"
        EDIT = "edit"
        RESPOND = "respond"
        IGNORE = "ignore"

    review = models.OneToOneField(Review, on_delete=models.CASCADE, related_name="decision")
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    action = models.CharField(max_length=20, choices=Action)
    # The reviewer's field edits as {"after": {...}} (JSON, as Workflow.dump_updates writes
    # them), {} without edits. Applied with the resume: update_state at a breakpoint,
    # Command(update=...) at a dynamic interrupt.
    updates = SealedJSONField(default=dict, blank=True)
    # What the interrupt() call returns when the thread resumes (None for a breakpoint).
    response = SealedJSONField(null=True, blank=True)
    # The three are sealed with a key set, like the review's payload.
    comment = SealedTextField(blank=True)
    checkpoint_id = models.CharField(max_length=64)
    # Set when the answer reached the thread (a resume run was queued with it). A decision
    # made while the thread was busy on another answer waits until it pauses again.
    applied_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.action} by {self.actor_id} on review {self.review_id}"
