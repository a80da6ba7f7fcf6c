"""Every write to API keys: making one, revoking one, and noting when it was last used.

Making and revoking are one durable transaction each (called inside another transaction by
mistake, they raise), with their audit event in it; the audit data names the key by id and
prefix, never by its secret. Reading a key on a request (`authenticate`) writes only
`last_used_at`, at most once a minute per key, with one UPDATE and no audit event (like a
run's lease renewal): it records no decision, and a busy script would otherwise fill the trail.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from api.models import NAME_MAX_LENGTH, ApiKey
from workflows.audit import Action, record_event
from workflows.services import InvalidState

# What every key starts with, so a leaked one is recognised (secret scanners, logs).
SCHEME = "signoff"
# How often `last_used_at` is written at most, per key.
TOUCH_EVERY = timedelta(minutes=1)
# Unknown and revoked keys get the same answer: it does not tell a guesser which prefixes exist.
UNKNOWN = "invalid API key (unknown or revoked)"
MISSING = "an API key is needed: send it as the x-api-key header or as Authorization: Bearer <key>"


class KeyRefused(Exception):
    """A key that does not let its request in; the message says why, for the client."""


@dataclass(frozen=True)
class NewKey:
    key: ApiKey
    # The whole key as the client sends it. Shown once; only its hash is stored.
    secret: str


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_api_key(
    *,
    user: User,
    name: str,
    expires_at: datetime | None = None,
    actor: User | None,
    actor_label: str = "",
) -> NewKey:
    """A new key acting as `user`, which expires at `expires_at` (never without one)."""
    name = name.strip()
    if not name:
        raise InvalidState("a key needs a name: what it is for")
    if len(name) > NAME_MAX_LENGTH:
        raise InvalidState(f"the name is too long (at most {NAME_MAX_LENGTH} characters)")
    if not user.is_active:
        raise InvalidState(f"{user.get_username()} is not active: their key would be refused")
    if expires_at is not None and expires_at <= timezone.now():
        raise InvalidState("the expiry must be in the future")
    prefix = secrets.token_hex(6)
    secret = f"{SCHEME}_{prefix}_{secrets.token_urlsafe(32)}"
    with transaction.atomic(durable=True):
        key = ApiKey.objects.create(
            user=user, name=name, prefix=prefix, hash=digest(secret), expires_at=expires_at
        )
        record_event(
            action=Action.API_KEY_CREATED,
            actor=actor,
            actor_label=actor_label,
            data={
                "key_id": key.pk,
                "prefix": prefix,
                "name": name,
                "user": user.get_username(),
                "expires_at": expires_at.isoformat() if expires_at else None,
            },
        )
    return NewKey(key=key, secret=secret)


def revoke_api_key(*, key: ApiKey, actor: User | None, actor_label: str = "") -> ApiKey:
    """Revoke `key` for good: every request with it is refused from now on."""
    with transaction.atomic(durable=True):
        locked = ApiKey.objects.select_for_update().select_related("user").get(pk=key.pk)
        if locked.revoked_at is not None:
            raise InvalidState(
                f"key {locked.prefix} was already revoked at {locked.revoked_at:%Y-%m-%d %H:%M}"
            )
        locked.revoked_at = timezone.now()
        locked.save(update_fields=["revoked_at"])
        record_event(
            action=Action.API_KEY_REVOKED,
            actor=actor,
            actor_label=actor_label,
            data={
                "key_id": locked.pk,
                "prefix": locked.prefix,
                "name": locked.name,
                "user": locked.user.get_username(),
            },
        )
    return locked


def authenticate(*, presented: str, now: datetime | None = None) -> ApiKey:
    """The key `presented` names, if it may be used now; else KeyRefused saying why."""
    now = now or timezone.now()
    scheme, _, rest = presented.strip().partition("_")
    prefix, _, _ = rest.partition("_")
    if scheme != SCHEME or not prefix:
        raise KeyRefused(UNKNOWN)
    key = ApiKey.objects.select_related("user").filter(prefix=prefix).first()
    # compare_digest takes the same time wherever the hashes differ.
    if key is None or not hmac.compare_digest(key.hash, digest(presented.strip())):
        raise KeyRefused(UNKNOWN)
    if key.revoked_at is not None:
        raise KeyRefused(UNKNOWN)
    if key.expires_at is not None and key.expires_at <= now:
        raise KeyRefused(f"this API key expired at {key.expires_at.isoformat()}")
    if not key.user.is_active:
        raise KeyRefused("this API key's user is not active")
    _touch(key, now)
    return key


def _touch(key: ApiKey, now: datetime) -> None:
    if key.last_used_at is not None and key.last_used_at > now - TOUCH_EVERY:
        return
    # The condition again in SQL: of several requests at once, one writes.
    ApiKey.objects.filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lte=now - TOUCH_EVERY), pk=key.pk
    ).update(last_used_at=now)
    key.last_used_at = now
