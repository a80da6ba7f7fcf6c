"""API keys (written only by `api.services`) and webhooks (written only by `api.webhooks`).

A key is shown once, when it is made; what is kept is a public prefix (to find the row, and
to name the key in the audit trail and the admin) and the SHA-256 of the whole key. The key
carries 256 random bits, so a fast hash is enough: nobody can guess a key from its hash,
and there is no password to stretch.
"""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.db import models
from django.utils import timezone

from workflows.sealed import SealedTextField

NAME_MAX_LENGTH = 100


class ApiKey(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(
        max_length=NAME_MAX_LENGTH, help_text="what the key is for, e.g. the script that uses it"
    )
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    hash = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    # Updated at most once a minute per key (`api.services.authenticate`).
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        verbose_name = "API key"
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    def state(self, now: datetime | None = None) -> str:
        """active, revoked or expired, as the admin lists it."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= (now or timezone.now()):
            return "expired"
        return "active"


# -- webhooks (written only by api.webhooks) ---------------------------------------------------

URL_MAX_LENGTH = 2000
# The events, as the payload's `type` names them.
RUN_ENDED = "run.ended"
REVIEW_OPENED = "review.opened"


class WebhookEndpoint(models.Model):
    """Where an admin wants a workflow's events POSTed. Never deleted (its deliveries name it):
    an admin turns it off instead."""

    workflow = models.CharField(max_length=100, help_text="the registered workflow whose events are sent")
    url = models.URLField(max_length=URL_MAX_LENGTH)
    run_ended = models.BooleanField(default=True, help_text="POST run.ended when a run of the workflow ends")
    review_opened = models.BooleanField(
        default=True, help_text="POST review.opened when a review of the workflow opens"
    )
    active = models.BooleanField(default=True)
    # `whsec_` + base64: shown once when made, then only used to sign. Sealed (encrypted) with
    # SIGNOFF_ENCRYPTION_KEY set. Kept, not hashed: signing needs the secret itself.
    secret = SealedTextField(editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        verbose_name = "webhook endpoint"
        ordering = ["workflow", "id"]
        indexes = [models.Index(fields=["workflow", "active"], name="webhook_endpoint_workflow")]

    def __str__(self) -> str:
        return f"{self.workflow} → {self.url}"

    def events(self) -> list[str]:
        return [
            event for event, on in ((RUN_ENDED, self.run_ended), (REVIEW_OPENED, self.review_opened)) if on
        ]


class WebhookDelivery(models.Model):
    """One event POSTed to one URL, with every attempt's outcome. `endpoint` is empty for a
    run's own `webhook` (signed with SIGNOFF_WEBHOOK_SECRET)."""

    class Event(models.TextChoices):
        RUN_ENDED = RUN_ENDED
        REVIEW_OPENED = REVIEW_OPENED

    class Status(models.TextChoices):
        PENDING = "pending"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    # The webhook-id header: the same on every attempt, so a receiver can drop repeats.
    message_id = models.CharField(max_length=40, unique=True, editable=False)
    event = models.CharField(max_length=20, choices=Event)
    endpoint = models.ForeignKey(
        WebhookEndpoint, null=True, blank=True, on_delete=models.PROTECT, related_name="deliveries"
    )
    thread = models.ForeignKey("workflows.Thread", on_delete=models.CASCADE, related_name="+")
    run = models.ForeignKey(
        "workflows.Run", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    review = models.ForeignKey(
        "approvals.Review", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    url = models.URLField(max_length=URL_MAX_LENGTH)
    # The exact bytes signed and sent, as text, so every attempt sends the same body.
    body = models.TextField()
    status = models.CharField(max_length=20, choices=Status, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    # When the next POST is due (the sweeper publishes again a pending delivery left past it).
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "webhook deliveries"
        ordering = ["-id"]
        indexes = [
            models.Index(
                fields=["next_attempt_at"], name="webhook_delivery_due", condition=models.Q(status="pending")
            )
        ]

    def __str__(self) -> str:
        return f"{self.event} to {self.url} ({self.status})"
