"""Who wants to be told what, and every email or chat webhook sent. Written only by
`notifications.services`."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

ADDRESS_MAX_LENGTH = 2000


class Preference(models.Model):
    """How one user hears about one workflow's reviews. No row means the default, immediately."""

    class Delivery(models.TextChoices):
        IMMEDIATELY = "immediately", "Immediately"
        DIGEST = "digest", "Daily digest"
        OFF = "off", "Off"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notification_preferences"
    )
    workflow = models.CharField(max_length=100)
    delivery = models.CharField(max_length=20, choices=Delivery, default=Delivery.IMMEDIATELY)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "workflow"], name="notification_preference_once")
        ]

    def __str__(self) -> str:
        return f"{self.user_id} {self.workflow}: {self.delivery}"


class ChatEndpoint(models.Model):
    """An admin's webhook endpoint (api.WebhookEndpoint) that also gets the workflow's review
    notifications, as a message a Slack- or Teams-compatible incoming webhook accepts."""

    endpoint = models.OneToOneField(
        "api.WebhookEndpoint", on_delete=models.PROTECT, related_name="chat_notifications"
    )
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        verbose_name = "chat notification endpoint"

    def __str__(self) -> str:
        return f"chat notifications to {self.endpoint}"


class Send(models.Model):
    """One notification to one recipient (an email address or a webhook URL), with every
    attempt's outcome."""

    class Channel(models.TextChoices):
        EMAIL = "email"
        WEBHOOK = "webhook"

    class Kind(models.TextChoices):
        OPENED = "opened"
        ESCALATED = "escalated"
        OVERDUE = "overdue"
        DUE_SOON = "due_soon"
        FOLLOW_UP = "follow_up"
        REASSIGNED = "reassigned"
        DIGEST = "digest"

    class Status(models.TextChoices):
        PENDING = "pending"
        SENT = "sent"
        FAILED = "failed"

    recipient = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    # The email address or webhook URL, as it was when the send was queued.
    address = models.CharField(max_length=ADDRESS_MAX_LENGTH)
    channel = models.CharField(max_length=20, choices=Channel)
    kind = models.CharField(max_length=20, choices=Kind)
    review = models.ForeignKey(
        "approvals.Review", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    endpoint = models.ForeignKey(
        "api.WebhookEndpoint", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # What the signal said beside the review (groups and holders by name); never state values.
    details = models.JSONField(default=dict, blank=True)
    # The day a digest covers: at most one digest per user and day (the constraint below).
    digest_date = models.DateField(null=True, blank=True)
    # The webhook-id header; the Message-ID of an email. The same on every attempt.
    message_id = models.CharField(max_length=100, unique=True, editable=False)
    subject = models.CharField(max_length=300, blank=True)
    status = models.CharField(max_length=20, choices=Status, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    # When the next attempt is due (the sweep publishes again a pending send left past it).
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "notification"
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["recipient", "digest_date"],
                condition=models.Q(kind="digest"),
                name="notification_one_digest_a_day",
            )
        ]
        indexes = [
            models.Index(
                fields=["next_attempt_at"], name="notification_due", condition=models.Q(status="pending")
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.channel} to {self.address} ({self.status})"
