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
    # The workflow's summary fields (the queue's columns) in the state the review was raised
    # at, {name: JSON value}, written when it opens: the queue shows them without reading the
    # sealed checkpoints, and they cannot change while it is open (it is pinned to that state).
    # Sealed with a key set like the payload, since a field may be declared secret.
    summary = SealedJSONField(default=dict, blank=True)
    # The workflow's sort field (its first money, else number, summary field), for the queue's
    # amount sort; null without one, and for a secret field while an encryption key is set.
    summary_amount = models.DecimalField(max_digits=30, decimal_places=6, null=True, blank=True)
    status = models.CharField(max_length=20, choices=Status, default=Status.OPEN)
    claimed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    claim_expires_at = models.DateTimeField(null=True, blank=True)
    # When someone first claimed it (the metrics' time to first claim); kept through releases.
    first_claimed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # When the workflow wants an answer by (its review_hours after the review opened, or the
    # hours the interrupt's payload asked for).
    due_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)

    # -- deadlines (approvals/deadlines.py) --
    # The group responsible for the review: the workflow's reviewer group when it opened, the
    # target group once escalated. Until it is escalated the review follows its workflow's
    # group as registered now (`responsible_group`), as reviews always did; from then on, this.
    reviewer_group = models.CharField(max_length=150, blank=True, default="")
    # What happens when it is past due, as registry.DuePolicy.as_json wrote it when the review
    # opened: a later change to the workflow does not change an open review.
    due_policy = models.JSONField(default=dict, blank=True)
    escalated_at = models.DateTimeField(null=True, blank=True)
    escalated_from = models.CharField(max_length=150, blank=True, default="")
    # When the policy's one action (escalate, decide) was applied, or found impossible: set in
    # the transaction of the action, so no sweep applies it twice.
    due_applied_at = models.DateTimeField(null=True, blank=True)
    # The first "overdue" notice, the last reminder and when the next one is due (remind).
    overdue_notified_at = models.DateTimeField(null=True, blank=True)
    reminded_at = models.DateTimeField(null=True, blank=True)
    next_reminder_at = models.DateTimeField(null=True, blank=True)
    # The claimant was told it is due soon (once).
    due_soon_notified_at = models.DateTimeField(null=True, blank=True)
    # "Remind me tomorrow": set by the claimant, cleared when the sweep has told them.
    follow_up_at = models.DateTimeField(null=True, blank=True)
    follow_up_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

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
            # What the deadline sweep scans: open reviews by due time, and follow-ups set.
            models.Index(fields=["due_at"], name="review_open_due", condition=models.Q(status="open")),
            # The queue's keyset pages (approvals.queries.SORTS): each sort key with the id.
            models.Index(
                fields=["summary_amount", "id"],
                name="review_open_amount",
                condition=models.Q(status="open"),
            ),
            models.Index(
                fields=["created_at", "id"], name="review_open_age", condition=models.Q(status="open")
            ),
            models.Index(
                fields=["due_at", "id"], name="review_open_due_id", condition=models.Q(status="open")
            ),
            models.Index(
                fields=["follow_up_at"],
                name="review_open_follow_up",
                condition=models.Q(status="open", follow_up_at__isnull=False),
            ),
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

    @property
    def responsible_group(self) -> str:
        """The group that reviews it now ("" for superusers only)."""
        if self.escalated_at is not None:
            return self.reviewer_group
        from workflows import registry

        try:
            return registry.get(self.workflow).reviewer_group
        except LookupError:
            return ""


class Decision(models.Model):
    class Action(models.TextChoices):
        APPROVE = "approve"
        REJECT = "reject"
        EDIT = "edit"
        RESPOND = "respond"
        IGNORE = "ignore"

    review = models.OneToOneField(Review, on_delete=models.CASCADE, related_name="decision")
    # None for a decision the system took (`actor_label` says which: "timeout").
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    actor_label = models.CharField(max_length=150, blank=True, default="")
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

    class Meta:
        constraints = [
            # Every decision names who took it: a reviewer, or the system by its label.
            models.CheckConstraint(
                condition=models.Q(actor__isnull=False) | ~models.Q(actor_label=""),
                name="decision_has_an_actor",
            )
        ]

    def __str__(self) -> str:
        return f"{self.action} by {self.decided_by} on review {self.review_id}"

    @property
    def decided_by(self) -> str:
        """Who decided, for people to read: the reviewer's user name, or the system's label."""
        if self.actor_id is None:
            return self.actor_label or "system"
        assert self.actor is not None
        return self.actor.get_username()


class Approval(models.Model):
    """One reviewer's approval of a review whose workflow needs several (four-eyes, quorum).

    The review stays open, pinned to its checkpoint, until enough approvals count; then the
    last approver's `Decision` closes it and the thread resumes once with the edits approved.
    An approval stops counting (`superseded_at`) when a later approver changes the edits, and
    is never deleted: the review page and the audit trail show it.
    """

    review = models.ForeignKey(Review, on_delete=models.CASCADE, related_name="approvals")
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    # With approvals_required="all": the approval group this approval stands for.
    group = models.CharField(max_length=150, blank=True, default="")
    # Every edit this approver approved, as {"after": {...}} (Workflow.dump_updates's JSON),
    # their own and the earlier approvers' they accepted; {} for none. Sealed like a decision's.
    updates = SealedJSONField(default=dict, blank=True)
    # Whether this approver changed the edits they were shown (which restarted the count).
    edited = models.BooleanField(default=False)
    comment = SealedTextField(blank=True)
    checkpoint_id = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    # Set when a later approver's edits restarted the count; who did it.
    superseded_at = models.DateTimeField(null=True, blank=True)
    superseded_by = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        constraints = [
            # The same person cannot count twice towards one review.
            models.UniqueConstraint(
                fields=["review", "actor"],
                condition=models.Q(superseded_at__isnull=True),
                name="approval_one_counting_per_actor",
            )
        ]
        indexes = [models.Index(fields=["review", "created_at"], name="approval_review")]

    def __str__(self) -> str:
        return f"approval by {self.actor_id} of review {self.review_id}"

    @property
    def counts(self) -> bool:
        return self.superseded_at is None


class SavedFilter(models.Model):
    """A queue filter a reviewer saved under a name: the queue's query string, as
    `queries.QueueFilters.query` writes it (no cursor). Written only by approvals.services."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=100)
    query = models.CharField(max_length=1000)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "name"], name="saved_filter_one_name")]

    def __str__(self) -> str:
        return f"{self.name} ({self.user_id})"


class Link(models.Model):
    """One emailed one-click link (approvals.links): approve, reject or open one review, for
    one recipient, pinned to the checkpoint the review was raised at, until `expires_at`.

    The token in the URL is signed and carries a random secret; only the secret's SHA-256 is
    kept here, so this table cannot be read back into a working link. Written only by
    approvals.links.
    """

    class Action(models.TextChoices):
        APPROVE = "approve"
        REJECT = "reject"
        OPEN = "open"

    review = models.ForeignKey(Review, on_delete=models.CASCADE, related_name="links")
    recipient = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    action = models.CharField(max_length=20, choices=Action)
    checkpoint_id = models.CharField(max_length=64)
    # The group the review was with when the link was issued: a link does not follow an
    # escalation to another group.
    reviewer_group = models.CharField(max_length=150, blank=True, default="")
    secret_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    # Set in the decision's own transaction: a link decides once.
    used_at = models.DateTimeField(null=True, blank=True)
    decision = models.ForeignKey(Decision, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # The refusal reasons already written to the audit trail, space-separated: each reason is
    # audited once per link, so replaying a link cannot grow the chain without bound.
    refusals_logged = models.CharField(max_length=200, blank=True, default="")

    class Meta:
        indexes = [models.Index(fields=["review", "recipient"], name="link_review_recipient")]

    def __str__(self) -> str:
        return f"{self.action} link {self.pk} for {self.recipient_id} on review {self.review_id}"
