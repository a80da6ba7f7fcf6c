"""Every write of notifications: queueing sends as reviews open and move, sending them, the
daily digest, users' preferences and the chat endpoints.

A review signal (approvals.signals) is received inside the transaction that made the change:
the receivers write one `Send` per recipient there, so a change that rolls back leaves none,
and publish each send's task once it commits. A worker sends it (Django's email framework, or
a signed POST for a chat endpoint) outside any transaction and records how it went; a failure
is retried with backoff (SIGNOFF_NOTIFY_RETRY_SECONDS) up to SIGNOFF_NOTIFY_MAX_ATTEMPTS tries.
Nothing is sent inside a request.
"""

from __future__ import annotations

import functools
import json
import logging
import smtplib
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

import httpx
from celery import current_app
from django.conf import settings
from django.contrib.auth.models import User
from django.core.mail import EmailMultiAlternatives
from django.core.mail.utils import DNS_NAME
from django.db import IntegrityError, transaction
from django.dispatch import receiver
from django.utils import timezone

from api import webhooks
from api.models import WebhookEndpoint
from approvals.models import Review
from approvals.signals import (
    review_due_soon,
    review_escalated,
    review_follow_up,
    review_opened,
    review_overdue,
    review_reassigned,
)
from notifications import messages, queries
from notifications.models import ChatEndpoint, Preference, Send
from workflows.audit import Action, record_event
from workflows.services import InvalidState

logger = logging.getLogger(__name__)

# The task's name (notifications/tasks.py), published by name: this module needs nothing of the
# tasks module, which imports it.
DELIVER = "notifications.tasks.deliver"
ERROR_MAX = 1000
Kind = Send.Kind
# The kinds a chat endpoint gets: news for the whole group, not one person's.
CHAT_KINDS = frozenset({Kind.OPENED, Kind.ESCALATED, Kind.OVERDUE})


# -- queueing (inside the change's transaction) --------------------------------------------------


def _publish(send_id: int) -> None:
    # Committed already: a broker outage must not fail the change. The sweep publishes it later.
    try:
        current_app.send_task(DELIVER, args=[send_id])
    except Exception:
        logger.exception("could not publish notification %s; the sweep will", send_id)


def _new_send(**fields: Any) -> Send:
    send = Send.objects.create(message_id=f"ntf_{uuid.uuid4().hex}", next_attempt_at=timezone.now(), **fields)
    transaction.on_commit(functools.partial(_publish, send.pk))
    return send


def _name(user: User | None) -> str:
    return user.get_username() if user is not None else ""


def queue_review_sends(
    *,
    kind: Kind,
    review: Review,
    users: Iterable[User],
    details: Mapping[str, Any] | None = None,
) -> list[Send]:
    """One email to each of `users` who wants `review.workflow`'s news now, and one POST to each
    of the workflow's chat endpoints for group news; only inside the change's transaction."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("notifications are queued inside the transaction of the change they report")
    unique = list({user.pk: user for user in users if user is not None}.values())
    sends = [
        _new_send(
            recipient=user,
            address=user.email,
            channel=Send.Channel.EMAIL,
            kind=kind,
            review=review,
            details=dict(details or {}),
        )
        for user in queries.told_now(unique, review.workflow)
    ]
    if kind in CHAT_KINDS:
        chats = ChatEndpoint.objects.filter(
            active=True, endpoint__active=True, endpoint__workflow=review.workflow
        ).select_related("endpoint")
        sends += [
            _new_send(
                address=chat.endpoint.url,
                channel=Send.Channel.WEBHOOK,
                endpoint=chat.endpoint,
                kind=kind,
                review=review,
                details=dict(details or {}),
            )
            for chat in chats
        ]
    return sends


def _never_fails_the_change(queue: Callable[..., None]) -> Callable[..., None]:
    """A receiver runs inside the change's transaction: notifications that cannot be queued (a
    bug, a bad address) are logged and left out, in a savepoint of their own, rather than
    failing the change they report."""

    @functools.wraps(queue)
    def guarded(**kwargs: Any) -> None:
        try:
            with transaction.atomic():
                queue(**kwargs)
        except Exception:
            logger.exception("could not queue the notifications of %s", queue.__name__)

    return guarded


@receiver(review_opened, dispatch_uid="notifications.opened")
@_never_fails_the_change
def on_opened(*, review: Review, **_: Any) -> None:
    queue_review_sends(kind=Kind.OPENED, review=review, users=queries.group_members(review.responsible_group))


@receiver(review_escalated, dispatch_uid="notifications.escalated")
@_never_fails_the_change
def on_escalated(
    *, review: Review, from_group: str, to_group: str, previous_holder: User | None = None, **_: Any
) -> None:
    # Both groups are told; only those who may see the review when the email is written (the
    # group it went to) get its values (messages.review_email).
    users = [*queries.group_members(to_group), *queries.group_members(from_group)]
    details = {"from_group": from_group, "to_group": to_group, "previous_holder": _name(previous_holder)}
    queue_review_sends(kind=Kind.ESCALATED, review=review, users=users, details=details)


@receiver(review_overdue, dispatch_uid="notifications.overdue")
@_never_fails_the_change
def on_overdue(*, review: Review, **_: Any) -> None:
    queue_review_sends(
        kind=Kind.OVERDUE, review=review, users=queries.group_members(review.responsible_group)
    )


@receiver(review_due_soon, dispatch_uid="notifications.due_soon")
@_never_fails_the_change
def on_due_soon(*, review: Review, **_: Any) -> None:
    # The claimant alone: nobody else is working on it.
    holder = review.claimed_by
    queue_review_sends(kind=Kind.DUE_SOON, review=review, users=[holder] if holder is not None else [])


@receiver(review_follow_up, dispatch_uid="notifications.follow_up")
@_never_fails_the_change
def on_follow_up(*, review: Review, user: User, **_: Any) -> None:
    queue_review_sends(kind=Kind.FOLLOW_UP, review=review, users=[user])


@receiver(review_reassigned, dispatch_uid="notifications.reassigned")
@_never_fails_the_change
def on_reassigned(
    *, review: Review, previous_holder: User | None, new_holder: User | None, actor: User | None, **_: Any
) -> None:
    details = {
        "previous_holder": _name(previous_holder),
        "new_holder": _name(new_holder),
        "actor": _name(actor),
    }
    users = [user for user in (previous_holder, new_holder) if user is not None and user != actor]
    queue_review_sends(kind=Kind.REASSIGNED, review=review, users=users, details=details)


# -- sending (the worker) ----------------------------------------------------------------------


# One delivery's outcome, as a webhook's (api.webhooks).
Attempt = webhooks.Attempt


def retry_delay(attempts: int) -> float:
    """After the `attempts`-th failed try (SIGNOFF_NOTIFY_RETRY_SECONDS)."""
    return webhooks.backoff(attempts, settings.SIGNOFF_NOTIFY_RETRY_SECONDS)


def deliver(*, send_id: int) -> Attempt:
    """Send a pending notification once and record how it went: sent; pending with the time of
    its next try; or failed after SIGNOFF_NOTIFY_MAX_ATTEMPTS tries (or at once when trying again
    is no use). Locks the send's row only, briefly, before and after; the SMTP conversation or
    POST runs outside any transaction, so two copies of the message never both send it."""
    in_flight = timedelta(seconds=settings.SIGNOFF_EMAIL_TIMEOUT_SECONDS * 3)
    with transaction.atomic(durable=True):
        send = (
            Send.objects.select_for_update(of=("self",))
            .select_related("recipient", "review__thread", "endpoint")
            .filter(pk=send_id)
            .first()
        )
        if send is None or send.status != Send.Status.PENDING:
            return Attempt(send.status if send is not None else "missing")
        now = timezone.now()
        if send.next_attempt_at is not None and send.next_attempt_at > now + timedelta(seconds=1):
            # Another copy of the message while this one is scheduled or in flight: dropped.
            return Attempt(send.status)
        send.attempts += 1
        send.next_attempt_at = now + in_flight
        send.save(update_fields=["attempts", "next_attempt_at"])
    try:
        subject, error, final = _send(send)
    except Exception as exc:
        # A bug in writing the message must not leave the send in flight for ever.
        logger.exception("notification %s could not be written", send_id)
        subject, error, final = "", f"{type(exc).__name__}: {exc}", True
    now = timezone.now()
    with transaction.atomic(durable=True):
        locked = Send.objects.select_for_update().get(pk=send_id)
        if locked.status != Send.Status.PENDING:
            return Attempt(locked.status)
        locked.last_error = error[:ERROR_MAX]
        locked.subject = subject[:300] or locked.subject
        retry_in = None
        if not error:
            locked.status, locked.sent_at, locked.next_attempt_at = Send.Status.SENT, now, None
        elif final or locked.attempts >= settings.SIGNOFF_NOTIFY_MAX_ATTEMPTS:
            locked.status, locked.next_attempt_at = Send.Status.FAILED, None
        else:
            retry_in = retry_delay(locked.attempts)
            locked.next_attempt_at = now + timedelta(seconds=retry_in)
        locked.save(update_fields=["last_error", "subject", "status", "sent_at", "next_attempt_at"])
    if error:
        logger.warning(
            "notification %s to %s, attempt %s: %s", send_id, locked.address, locked.attempts, error
        )
    return Attempt(locked.status, retry_in=retry_in)


def _send(send: Send) -> tuple[str, str, bool]:
    """Send it: (subject, error or "", whether trying again is no use)."""
    if send.channel == Send.Channel.WEBHOOK:
        return _post(send)
    recipient = send.recipient
    if recipient is None or not recipient.is_active or not recipient.email:
        return "", "the recipient is gone, inactive or has no email address", True
    if send.kind == Kind.DIGEST:
        ids = [int(pk) for pk in send.details.get("reviews", [])]
        reviews = list(Review.objects.filter(pk__in=ids).select_related("thread").order_by("due_at", "id"))
        email = messages.digest_email(send, reviews)
    else:
        if send.review is None:
            return "", "the review is gone", True
        email = messages.review_email(send, send.review)
    message = EmailMultiAlternatives(
        subject=email.subject,
        body=email.text,
        from_email=settings.DEFAULT_FROM_EMAIL,
        # The address now: a user who changed theirs since the send was queued gets it there.
        to=[recipient.email],
        headers={"Message-ID": f"<{send.message_id}@{DNS_NAME}>"},
    )
    message.attach_alternative(email.html, "text/html")
    try:
        # MAILERS["default"]: SMTP in production, the console under `make run`.
        message.send()
    except smtplib.SMTPRecipientsRefused as exc:
        return email.subject, f"the SMTP server refused the address: {exc.recipients}", False
    except (smtplib.SMTPException, OSError) as exc:
        return email.subject, f"{type(exc).__name__}: {exc}", False
    return email.subject, "", False


def _post(send: Send) -> tuple[str, str, bool]:
    endpoint = send.endpoint
    if endpoint is None or send.review is None:
        return "", "the endpoint or the review is gone", True
    if not endpoint.active:
        return "", "the endpoint was turned off", True
    refusal = webhooks.url_refusal(endpoint.url)
    if refusal:
        return "", refusal, True
    payload = messages.chat_payload(send, send.review)
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    headers = {
        "content-type": "application/json",
        "user-agent": webhooks.USER_AGENT,
        **webhooks.signed_headers(message_id=send.message_id, body=body, secret=endpoint.secret),
    }
    subject = payload["text"][:300]
    try:
        # As api.webhooks: no redirects, no proxy from the environment.
        response = httpx.post(
            endpoint.url,
            content=body.encode(),
            headers=headers,
            timeout=settings.SIGNOFF_WEBHOOK_TIMEOUT_SECONDS,
            follow_redirects=False,
            trust_env=False,
        )
    except httpx.HTTPError as exc:
        return subject, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, False
    if 200 <= response.status_code < 300:
        return subject, "", False
    return subject, f"HTTP {response.status_code} {response.reason_phrase}".strip(), False


# -- the daily digest and the sweep ---------------------------------------------------------------


def queue_digests(*, now: datetime | None = None) -> list[int]:
    """Queue today's digest for each user who chose it for a workflow and has open reviews to
    act on there (none: no email), from SIGNOFF_DIGEST_HOUR on. At most one per user and day,
    whoever asks and however often (a database constraint, so also across restarts and two
    beats). Returns the new sends' ids."""
    now = now or timezone.now()
    local = timezone.localtime(now)
    if local.hour < settings.SIGNOFF_DIGEST_HOUR:
        return []
    day = local.date()
    done = set(Send.objects.filter(kind=Kind.DIGEST, digest_date=day).values_list("recipient_id", flat=True))
    queued: list[int] = []
    for user in queries.digest_users().exclude(pk__in=done):
        reviews = queries.digest_reviews(user, now=now)
        if not reviews:
            continue
        try:
            with transaction.atomic(durable=True):
                send = _new_send(
                    recipient=user,
                    address=user.email,
                    channel=Send.Channel.EMAIL,
                    kind=Kind.DIGEST,
                    digest_date=day,
                    details={"reviews": [review.pk for review in reviews]},
                )
        except IntegrityError:
            # Another sweep queued this user's digest for the day a moment ago.
            continue
        queued.append(send.pk)
    return queued


def republish_lost(*, grace: float | None = None) -> list[int]:
    """Publish again the pending sends whose time passed `grace` seconds ago (their message was
    lost: a broker restart, a worker killed mid-send). Returns their ids."""
    grace = settings.SIGNOFF_QUEUED_GRACE_SECONDS if grace is None else grace
    due = timezone.now() - timedelta(seconds=grace)
    ids = list(
        Send.objects.filter(status=Send.Status.PENDING, next_attempt_at__lt=due)
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[: settings.SIGNOFF_SWEEP_BATCH]
    )
    for send_id in ids:
        _publish(send_id)
    return ids


def sweep() -> dict[str, list[int]]:
    return {"digests": queue_digests(), "republished": republish_lost()}


# -- preferences (the settings page) ---------------------------------------------------------------


class InvalidPreferences(InvalidState):
    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{name}: {error}" for name, error in errors.items()))
        self.errors = errors


def set_preferences(*, user: User, choices: Mapping[str, str]) -> dict[str, str]:
    """Set how `user` hears of each workflow in `choices` (immediately, digest, off), only for
    workflows they review. All or nothing: a bad entry raises InvalidPreferences naming it and
    changes nothing. Audited with what changed; returns the choices now. Locks the user's row
    (then the audit lock): two saves at once take turns, so neither finds a row missing that
    the other is inserting."""
    allowed = {spec.name for spec in queries.reviewed_workflows(user)}
    values = set(Preference.Delivery.values)
    errors = {name: "you do not review this workflow" for name in choices if name not in allowed} | {
        name: f"choose one of {', '.join(sorted(values))}"
        for name, value in choices.items()
        if name in allowed and value not in values
    }
    if errors:
        raise InvalidPreferences(errors)
    with transaction.atomic(durable=True):
        User.objects.select_for_update().filter(pk=user.pk).exists()
        existing = {row.workflow: row for row in Preference.objects.filter(user=user)}
        before: dict[str, str] = {}
        after: dict[str, str] = {}
        now = timezone.now()
        for name, value in sorted(choices.items()):
            row = existing.get(name)
            old = row.delivery if row is not None else Preference.Delivery.IMMEDIATELY
            if old == value:
                continue
            before[name], after[name] = old, value
            if row is None:
                Preference.objects.create(user=user, workflow=name, delivery=value, updated_at=now)
            else:
                row.delivery, row.updated_at = value, now
                row.save(update_fields=["delivery", "updated_at"])
        if after:
            record_event(
                action=Action.NOTIFICATION_PREFERENCES_CHANGED,
                actor=user,
                data={"before": before, "after": after},
            )
    return queries.preferences(user)


# -- chat endpoints (the admin) ----------------------------------------------------------------


def set_chat_notifications(*, endpoint: WebhookEndpoint, active: bool, actor: User | None) -> ChatEndpoint:
    """Whether an admin's webhook endpoint also gets its workflow's review notifications (opened,
    escalated, overdue) as chat messages. Audited. Locks the endpoint's row (then the audit
    lock), so two admins saving at once take turns."""
    if active and not endpoint.active:
        raise InvalidState("the webhook endpoint is turned off: turn it on first")
    with transaction.atomic(durable=True):
        WebhookEndpoint.objects.select_for_update().filter(pk=endpoint.pk).exists()
        chat = ChatEndpoint.objects.filter(endpoint=endpoint).first()
        before = chat.active if chat is not None else False
        if chat is None:
            chat = ChatEndpoint.objects.create(endpoint=endpoint, active=active)
        elif chat.active != active:
            chat.active = active
            chat.save(update_fields=["active"])
        if before != active:
            record_event(
                action=Action.NOTIFICATION_ENDPOINT_CHANGED,
                actor=actor,
                data={"endpoint_id": endpoint.pk, "workflow": endpoint.workflow, "active": active},
            )
    return chat
