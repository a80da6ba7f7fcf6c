"""API keys: written only by `api.services`.

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
