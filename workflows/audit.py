"""The audit trail's chain and its head (invariant 5).

Every event's hash is an HMAC-SHA256, with SIGNOFF_AUDIT_KEY, of its contents and the hash
of the event before it: someone who can write to the table but does not have the key cannot
edit an event and recompute the chain. Events written before the chain was keyed carry the
scheme "sha256" (a plain hash anyone can recompute); they are sealed by the first keyed event
after them, whose HMAC covers the last plain hash, so a trail may start with plain events but
never end with one (migration 0006 appends the sealing event, `audit.keyed`).

What a chain cannot show by itself is its own end: deleting the newest events leaves a valid
chain. So the *head* (how many events, the last id and its hash, signed with the key) is saved
to SIGNOFF_AUDIT_HEAD_FILE by beat and logged, `manage.py audit_head` prints it for staff to
keep, and `verify_audit` compares the trail with it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import connection, models
from django.db.models import Count, Max
from django.utils import timezone

from workflows.canonical import canonical_json
from workflows.models import AuditEvent

if TYPE_CHECKING:
    from django.contrib.auth.models import AnonymousUser, User

    from workflows.models import Run, Thread

logger = logging.getLogger(__name__)

# Who an event is credited to when no person made the change.
WORKER = "system:worker"
PERMISSION = "workflows.view_auditevent"
KEYED = "hmac-sha256"
PLAIN = "sha256"
# One key for the whole audit chain: appends are serialized so each sees the last hash.
_AUDIT_LOCK = 0x5160FF


def can_read(user: User | AnonymousUser | None) -> bool:
    """Who may read the audit trail (its pages, exports, links and admin): active staff
    holding `workflows.view_auditevent` (superusers hold every permission, but must be staff
    too). is_staff is asked first, so a reviewer's page costs no permission query."""
    return bool(
        user is not None
        and user.is_authenticated
        and user.is_active
        and user.is_staff
        and user.has_perm(PERMISSION)
    )


class Action(models.TextChoices):
    """Every action the audit trail records. The trail's filter offers these, rather than
    reading them with SELECT DISTINCT, which would scan an index of millions of rows on every
    page. `record_event` takes only these (mypy checks the callers); they are not choices on
    AuditEvent.action, which would add a migration and nothing the type does not already give."""

    THREAD_STARTED = "thread.started"
    THREAD_RESUMED = "thread.resumed"
    THREAD_RETRIED = "thread.retried"
    THREAD_CANCELLED = "thread.cancelled"
    THREAD_ROLLED_BACK = "thread.rolled_back"
    # Threads made, edited and copied through the HTTP API (POST /api/threads, .../state, .../copy);
    # a made one has no workflow yet (status NEW) until its first run names one.
    THREAD_CREATED = "thread.created"
    THREAD_STATE_UPDATED = "thread.state_updated"
    THREAD_COPIED = "thread.copied"
    # A finished thread given new input (an API run on a completed thread).
    THREAD_CONTINUED = "thread.continued"
    RUN_STARTED = "run.started"
    RUN_INTERRUPTED = "run.interrupted"
    RUN_COMPLETED = "run.completed"
    RUN_FAILED = "run.failed"
    RUN_RELEASED = "run.released"
    RUN_REPUBLISHED = "run.republished"
    RUN_LEASE_EXPIRED = "run.lease_expired"
    # multitask_strategy="enqueue": a run waits behind the active one, then takes its turn.
    RUN_ENQUEUED = "run.enqueued"
    RUN_DEQUEUED = "run.dequeued"
    REVIEW_OPENED = "review.opened"
    REVIEW_CLAIMED = "review.claimed"
    REVIEW_RELEASED = "review.released"
    REVIEW_DECIDED = "review.decided"
    REVIEW_CANCELLED = "review.cancelled"
    # Deadlines (approvals/deadlines.py). A default decided at the due time is review.decided
    # with the actor "timeout"; these are the other things a due time does.
    REVIEW_ESCALATED = "review.escalated"
    REVIEW_OVERDUE = "review.overdue"
    REVIEW_REMINDED = "review.reminded"
    REVIEW_DUE_SOON = "review.due_soon"
    REVIEW_FOLLOW_UP_SET = "review.follow_up_set"
    REVIEW_FOLLOWED_UP = "review.followed_up"
    # Four-eyes and quorum: one partial approval of a review that needs several; and earlier
    # approvals that stopped counting because a later approver changed the edits.
    REVIEW_APPROVED = "review.approved"
    REVIEW_APPROVALS_RESET = "review.approvals_reset"
    # Claims moved by someone other than the claimant's own release (approvals.services):
    # a lead or an admin took it, or gave it to a reviewer; the holder gave it to a colleague.
    REVIEW_TAKEN_OVER = "review.taken_over"
    REVIEW_REASSIGNED = "review.reassigned"
    REVIEW_HANDED_ON = "review.handed_on"
    # Written once, by migration 0006, which spells it out (a migration keeps its own copy).
    AUDIT_KEYED = "audit.keyed"
    CHECKPOINT_UNREADABLE = "checkpoint.unreadable"
    LOGIN_FAILED = "login.failed"
    LOGIN_LOCKED_OUT = "login.locked_out"
    # API keys (api.services): the data names the key by id and prefix, never its secret.
    # One word before the dot, like every other action (the trail's filter reads them so).
    API_KEY_CREATED = "apikey.created"
    API_KEY_REVOKED = "apikey.revoked"
    # Webhook endpoints (api.webhooks): the data names the endpoint by id, never its secret.
    WEBHOOK_CREATED = "webhook.created"
    WEBHOOK_CHANGED = "webhook.changed"
    # Notifications (notifications.services): a user's choices, and an endpoint's chat messages.
    NOTIFICATION_PREFERENCES_CHANGED = "notification.preferences_changed"
    NOTIFICATION_ENDPOINT_CHANGED = "notification.endpoint_changed"
    # One-click links (approvals.links): issued for a recipient, or refused (tampered, expired,
    # used, someone else's). The data names the link by id, never its token.
    # Saved queue filters (approvals.services): a reviewer's own, by name and query string.
    FILTER_SAVED = "filter.saved"
    FILTER_DELETED = "filter.deleted"
    LINK_ISSUED = "link.issued"
    LINK_REFUSED = "link.refused"


# What verify reports, by name.
TRUNCATED = "truncated"
TAMPERED = "tampered"
REWRITTEN = "rewritten"
BROKEN_CHAIN = "broken chain"
FORGED_HEAD = "forged head"


def event_hash(
    *,
    prev_hash: str,
    actor_label: str,
    actor_id: int | None,
    action: str,
    thread_id: int | None,
    run_id: int | None,
    data: Any,
    created_at: datetime,
    key: bytes | None = None,
) -> str:
    """The event's hash: HMAC-SHA256 with `key`, or plain SHA-256 (the scheme of old events)
    without one."""
    body = json.dumps(
        [prev_hash, actor_label, actor_id, action, thread_id, run_id, data, created_at.isoformat()],
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    if key is None:
        return hashlib.sha256(body).hexdigest()
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def _expected_hash(event: AuditEvent, key: bytes | None) -> str:
    return event_hash(
        prev_hash=event.prev_hash,
        actor_label=event.actor_label,
        actor_id=event.actor_id,
        action=event.action,
        thread_id=event.thread_id,
        run_id=event.run_id,
        data=event.data,
        created_at=event.created_at,
        key=key,
    )


def record_event(
    *,
    action: Action,
    actor: User | None = None,
    actor_label: str = "",
    thread: Thread | None = None,
    run: Run | None = None,
    data: Mapping[str, Any] | None = None,
) -> AuditEvent:
    """Append one audit event, chained to the last; only inside the change's transaction.
    Takes the audit lock (PostgreSQL), held until the transaction ends."""
    if not connection.in_atomic_block:
        raise RuntimeError("audit events are written inside the transaction of the change they record")
    last: str | None
    if connection.vendor == "postgresql":
        # The lock and the read of the last hash in one round trip: two statements, each with a
        # snapshot of its own (READ COMMITTED), so the read sees the event of whoever held the
        # lock before us. This runs while the lock is held, by every change that is audited.
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT pg_advisory_xact_lock(%s); SELECT hash FROM {AuditEvent._meta.db_table}"
                " ORDER BY id DESC LIMIT 1",
                [_AUDIT_LOCK],
            )
            cursor.nextset()
            row = cursor.fetchone()
            last = row[0] if row else None
    else:
        # SQLite needs no lock: every transaction starts with BEGIN IMMEDIATE, one writer at a time.
        last = AuditEvent.objects.order_by("-id").values_list("hash", flat=True).first()
    label = actor_label or (actor.get_username() if actor is not None else WORKER)
    payload = canonical_json(dict(data or {}))
    event = AuditEvent(
        actor_id=actor.pk if actor is not None else None,
        actor_label=label,
        action=action,
        thread=thread,
        run=run,
        data=payload,
        created_at=timezone.now(),
        prev_hash=last or "",
        scheme=KEYED,
    )
    event.hash = _expected_hash(event, settings.SIGNOFF_AUDIT_KEY)
    event.save(force_insert=True)
    return event


@dataclass(frozen=True)
class ChainBreak:
    event_id: int
    reason: str
    # One of TRUNCATED, TAMPERED, REWRITTEN, BROKEN_CHAIN, FORGED_HEAD.
    kind: str = BROKEN_CHAIN


# -- the head ---------------------------------------------------------------------------


class HeadError(Exception):
    """A head record that cannot be read, or (saving) one the trail no longer matches."""


@dataclass(frozen=True)
class AuditHead:
    """The end of the trail at one moment: `events` events, the last `last_id` with `hash`."""

    events: int
    last_id: int
    hash: str
    at: str
    mac: str

    def line(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    def is_signed(self, key: bytes) -> bool:
        return hmac.compare_digest(self.mac, _head_mac(self.events, self.last_id, self.hash, self.at, key))


def _head_mac(events: int, last_id: int, hash: str, at: str, key: bytes) -> str:
    body = json.dumps(
        {"events": events, "last_id": last_id, "hash": hash, "at": at}, sort_keys=True, separators=(",", ":")
    )
    # The prefix keeps a head's signature from ever being taken for an event's, and back.
    return hmac.new(key, b"signoff audit head\n" + body.encode(), hashlib.sha256).hexdigest()


def current_head() -> AuditHead:
    """The trail's head now, signed."""
    # One statement, one snapshot. Appends hold the audit lock until they commit, so ids
    # commit in order and no event below `last_id` can appear later.
    totals = AuditEvent.objects.aggregate(events=Count("id"), last_id=Max("id"))
    events, last_id = totals["events"], totals["last_id"] or 0
    hash = AuditEvent.objects.filter(pk=last_id).values_list("hash", flat=True).first() or ""
    at = timezone.now().isoformat()
    return AuditHead(
        events, last_id, hash, at, _head_mac(events, last_id, hash, at, settings.SIGNOFF_AUDIT_KEY)
    )


def read_head(path: Path | str) -> AuditHead:
    """The head in a file: the JSON `audit_head` prints, alone or at the end of a log line."""
    try:
        lines = [line for line in Path(path).read_text().splitlines() if "{" in line]
        if not lines:
            raise ValueError("no head record in it")
        raw = json.loads(lines[-1][lines[-1].index("{") :])
        return AuditHead(
            events=int(raw["events"]),
            last_id=int(raw["last_id"]),
            hash=str(raw["hash"]),
            at=str(raw["at"]),
            mac=str(raw["mac"]),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise HeadError(f"cannot read the audit head in {path}: {exc}") from exc


def _unsigned(head: AuditHead) -> ChainBreak:
    return ChainBreak(
        head.last_id,
        f"the head record (saved {head.at}) is not signed with SIGNOFF_AUDIT_KEY: "
        "it was edited, or made with another key",
        FORGED_HEAD,
    )


def _ends_short(head: AuditHead, checked: int, last_id: int) -> ChainBreak:
    ends = f"ends at event {last_id} after {checked}" if last_id else "is empty"
    return ChainBreak(
        head.last_id,
        f"the head records {head.events} events up to event {head.last_id} (saved {head.at}); "
        f"the trail {ends}",
        TRUNCATED,
    )


def _head_differs(head: AuditHead, event: AuditEvent, count: int) -> ChainBreak | None:
    if event.hash != head.hash:
        return ChainBreak(
            event.pk, f"its hash is not the one the head recorded for it (saved {head.at})", REWRITTEN
        )
    if count != head.events:
        return ChainBreak(
            event.pk,
            f"the head recorded {head.events} events up to it (saved {head.at}); the trail has {count}",
            REWRITTEN,
        )
    return None


def check_head(head: AuditHead) -> ChainBreak | None:
    """Does the trail still reach `head` unchanged? A few queries, no walk of the chain."""
    if not head.is_signed(settings.SIGNOFF_AUDIT_KEY):
        return _unsigned(head)
    if head.events == 0:
        return None
    event = AuditEvent.objects.filter(pk=head.last_id).first()
    if event is None:
        later = AuditEvent.objects.filter(pk__gt=head.last_id).exists()
        if later:
            return ChainBreak(
                head.last_id, "the event the head ends at is gone, and later ones exist", REWRITTEN
            )
        totals = AuditEvent.objects.aggregate(events=Count("id"), last_id=Max("id"))
        return _ends_short(head, totals["events"], totals["last_id"] or 0)
    return _head_differs(head, event, AuditEvent.objects.filter(pk__lte=head.last_id).count())


def save_head(path: Path | str | None = None) -> AuditHead:
    """Write the current head to `path` (SIGNOFF_AUDIT_HEAD_FILE) and log it, unless the head
    already there no longer matches the trail: that file is then the evidence, and is kept."""
    target = Path(path or settings.SIGNOFF_AUDIT_HEAD_FILE)
    if target.exists():
        broken = check_head(read_head(target))
        if broken is not None:
            raise HeadError(
                f"not saving the audit head: {target} shows the trail {broken.kind} at event "
                f"{broken.event_id}: {broken.reason}"
            )
    head = current_head()
    target.parent.mkdir(parents=True, exist_ok=True)
    # A whole file or the old one, never half of one: a crash mid-write must not lose the head.
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=".audit-head-")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(head.line() + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    # The log line is a second copy, off the machine wherever logs are shipped.
    logger.info("audit head: %s", head.line())
    return head


# -- verifying --------------------------------------------------------------------------


def _check_event(event: AuditEvent, prev: str, keyed_since: int | None) -> ChainBreak | None:
    if event.prev_hash != prev:
        return ChainBreak(event.pk, "its prev_hash is not the hash of the event before it", BROKEN_CHAIN)
    if event.scheme == KEYED:
        key: bytes | None = settings.SIGNOFF_AUDIT_KEY
    elif event.scheme == PLAIN and keyed_since is None:
        key = None
    elif event.scheme == PLAIN:
        return ChainBreak(
            event.pk,
            f"it is hashed without the key, after the chain became keyed at event {keyed_since}",
            TAMPERED,
        )
    else:
        return ChainBreak(event.pk, f"its hash scheme {event.scheme!r} is not one Signoff writes", TAMPERED)
    if event.hash != _expected_hash(event, key):
        return ChainBreak(event.pk, "its contents do not match its hash", TAMPERED)
    return None


def verify_audit_chain(*, batch: int = 2000, head: AuditHead | None = None) -> tuple[int, ChainBreak | None]:
    """Walk the audit chain in order; return how many events fit and the first that does not.
    With a head, the trail must also reach it unchanged."""
    if head is not None and not head.is_signed(settings.SIGNOFF_AUDIT_KEY):
        return 0, _unsigned(head)
    prev = ""
    checked = 0
    last: AuditEvent | None = None
    keyed_since: int | None = None
    while True:
        rows = list(AuditEvent.objects.filter(id__gt=last.pk if last else 0).order_by("id")[:batch])
        if not rows:
            break
        for event in rows:
            if head is not None and head.events and (last.pk if last else 0) < head.last_id < event.pk:
                return checked, ChainBreak(
                    head.last_id, "the event the head ends at is gone, and later ones exist", REWRITTEN
                )
            broken = _check_event(event, prev, keyed_since)
            if broken is not None:
                return checked, broken
            if event.scheme == KEYED and keyed_since is None:
                keyed_since = event.pk
            checked += 1
            if head is not None and head.events and event.pk == head.last_id:
                differs = _head_differs(head, event, checked)
                if differs is not None:
                    return checked - 1, differs
            prev = event.hash
            last = event
    if head is not None and head.events and (last is None or last.pk < head.last_id):
        return checked, _ends_short(head, checked, last.pk if last else 0)
    if last is not None and last.scheme != KEYED:
        # The plain events are trusted only because a keyed event after them signs the last
        # plain hash: a trail that ends in one was recomputed without the key, or cut short.
        return checked - 1, ChainBreak(
            last.pk,
            "it is not keyed and no keyed event follows it: the trail was rehashed without the key, "
            "or its keyed events were deleted",
            TAMPERED,
        )
    return checked, None
