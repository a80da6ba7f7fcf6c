"""Webhooks: every write to endpoints and deliveries, the allow-list, signing and sending.

When a run ends (`workflows.signals.run_ended`) or a review opens
(`approvals.signals.review_opened`), a `WebhookDelivery` is written for each URL that wants
the event, inside the transaction that made the change: a change that rolls back leaves no
delivery, and nothing is sent. Once it commits, the delivery's message is published
(`api.tasks.deliver_webhook`, by name); a worker POSTs it and records the outcome, retrying with
backoff (SIGNOFF_WEBHOOK_RETRY_SECONDS) up to SIGNOFF_WEBHOOK_MAX_ATTEMPTS POSTs. The run's own
transaction only writes rows and enqueues: a slow or dead receiver never holds a run up.

Signing is the Standard Webhooks scheme (webhook-id, webhook-timestamp, webhook-signature
`v1,<base64 HMAC-SHA256 of "id.timestamp.body">`), done by the `standardwebhooks` package, the
scheme's own reference library (pure Python, no dependencies). An admin's endpoint signs with
its own secret, shown once when it is made; a run's `webhook` (from the API) with the
deployment's SIGNOFF_WEBHOOK_SECRET.

Delivery is at least once: a worker that dies after the POST but before recording it, or a
republished message, sends the same webhook-id again, which receivers use to drop repeats.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import logging
import secrets
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

import httpx
from celery import current_app
from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.dispatch import receiver
from django.urls import reverse
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from api import convert
from api.models import REVIEW_OPENED, RUN_ENDED, URL_MAX_LENGTH, WebhookDelivery, WebhookEndpoint
from approvals.models import Review
from approvals.signals import review_opened
from workflows import registry
from workflows.audit import Action, record_event
from workflows.models import Run, Thread
from workflows.services import InvalidState
from workflows.signals import run_ended

logger = logging.getLogger(__name__)

# The tasks' names (api/tasks.py): published by name, as the doorbell does, so this module
# needs nothing of the tasks module, which imports it.
DELIVER = "api.tasks.deliver_webhook"
SWEEP = "api.tasks.sweep_webhooks"
USER_AGENT = "Signoff-Webhooks/1"
# How much of a receiver's error is kept on the delivery.
ERROR_MAX = 1000


# -- the allow-list ----------------------------------------------------------------------------


def url_refusal(url: str) -> str | None:
    """Why webhooks may not be POSTed to `url` (a message for the person who gave it), or None
    when they may: an http(s) URL with a host and no user name or password, that an entry of
    SIGNOFF_WEBHOOK_ALLOWED_URLS allows. Asked when a URL is given (a run's `webhook`, an
    admin's endpoint) and again before every POST, so taking an entry off the list stops the
    deliveries already queued for it."""
    if not url:
        return "the webhook URL is empty"
    if len(url) > URL_MAX_LENGTH:
        return f"the webhook URL is too long (at most {URL_MAX_LENGTH} characters)"
    if any(ord(char) <= 32 or ord(char) == 127 for char in url):
        return "the webhook URL has spaces or control characters in it"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - reading it checks it is a number in range
    except ValueError as exc:
        return f"the webhook URL cannot be read: {exc}"
    if parts.scheme not in ("http", "https"):
        given = f"{parts.scheme}:" if parts.scheme else "a relative URL"
        return f"webhook URLs must be http:// or https://, not {given}"
    if parts.username is not None or parts.password is not None:
        # The URL is not repeated: it holds a password.
        return "the webhook URL has a user name or password in it; webhooks are signed instead, so remove it"
    if not parts.hostname:
        return "the webhook URL has no host"
    if any(unquote(segment) in (".", "..") for segment in parts.path.split("/")):
        return "the webhook URL's path has . or .. segments; give it as the receiver serves it"
    allowed = settings.SIGNOFF_WEBHOOK_ALLOWED_URLS
    if not allowed:
        return (
            "webhooks are off on this server: SIGNOFF_WEBHOOK_ALLOWED_URLS lists no host or URL "
            "they may be sent to"
        )
    if not any(_allows(entry, parts) for entry in allowed):
        return (
            f"{url} is not allowed: webhooks go only to the hosts and URL prefixes that "
            "SIGNOFF_WEBHOOK_ALLOWED_URLS lists"
        )
    return None


def _port(parts: SplitResult) -> int:
    return parts.port or (443 if parts.scheme == "https" else 80)


def _allows(entry: str, url: SplitResult) -> bool:
    """Whether one allow-list entry (checked at start-up, config/settings.py) allows `url`."""
    host = url.hostname or ""
    if "://" in entry:
        prefix = urlsplit(entry)
        if (prefix.scheme, prefix.hostname, _port(prefix)) != (url.scheme, host, _port(url)):
            return False
        base = prefix.path or "/"
        path = url.path or "/"
        # A prefix ends at a path segment: /hooks allows /hooks and /hooks/x, not /hooksevil.
        return path.startswith(base) if base.endswith("/") else path == base or path.startswith(base + "/")
    if entry.startswith("*."):
        return host.endswith(entry[1:].lower())
    bare = urlsplit("//" + entry)
    return bare.hostname == host and (bare.port is None or bare.port == _port(url))


# -- endpoints (the admin's) -------------------------------------------------------------------


@dataclass(frozen=True)
class NewEndpoint:
    endpoint: WebhookEndpoint
    # `whsec_` + base64, as Standard Webhooks verifiers take it. Shown once.
    secret: str


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def _check_endpoint(*, workflow: str, url: str, run_ended: bool, review_opened: bool) -> None:
    try:
        registry.get(workflow)
    except LookupError as exc:
        raise InvalidState(str(exc)) from None
    refusal = url_refusal(url)
    if refusal:
        raise InvalidState(refusal)
    if not run_ended and not review_opened:
        raise InvalidState("choose at least one event to send: run ended, review opened, or both")


def _endpoint_data(endpoint: WebhookEndpoint) -> dict[str, Any]:
    return {
        "url": endpoint.url,
        "events": endpoint.events(),
        "active": endpoint.active,
    }


def create_endpoint(
    *,
    workflow: str,
    url: str,
    run_ended: bool = True,
    review_opened: bool = True,
    actor: User | None,
    actor_label: str = "",
) -> NewEndpoint:
    """A new endpoint getting `workflow`'s events at `url`, with a new signing secret."""
    url = url.strip()
    _check_endpoint(workflow=workflow, url=url, run_ended=run_ended, review_opened=review_opened)
    secret = new_secret()
    with transaction.atomic(durable=True):
        endpoint = WebhookEndpoint.objects.create(
            workflow=workflow,
            url=url,
            run_ended=run_ended,
            review_opened=review_opened,
            secret=secret,
            created_by=actor if actor is not None and actor.pk else None,
        )
        record_event(
            action=Action.WEBHOOK_CREATED,
            actor=actor,
            actor_label=actor_label,
            data={"endpoint_id": endpoint.pk, "workflow": workflow, **_endpoint_data(endpoint)},
        )
    return NewEndpoint(endpoint=endpoint, secret=secret)


def change_endpoint(
    *,
    endpoint: WebhookEndpoint,
    url: str,
    run_ended: bool,
    review_opened: bool,
    active: bool,
    actor: User | None,
    actor_label: str = "",
) -> WebhookEndpoint:
    """Change where an endpoint sends, which events, and whether it is on. Turning it off
    also stops the retries of its deliveries still pending."""
    url = url.strip()
    with transaction.atomic(durable=True):
        locked = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
        if url != locked.url or active:
            # An endpoint being turned off may keep a URL the list no longer allows.
            _check_endpoint(
                workflow=locked.workflow, url=url, run_ended=run_ended, review_opened=review_opened
            )
        before = _endpoint_data(locked)
        locked.url, locked.run_ended, locked.review_opened, locked.active = (
            url,
            run_ended,
            review_opened,
            active,
        )
        after = _endpoint_data(locked)
        if before == after:
            raise InvalidState("nothing to change: the endpoint already is as given")
        locked.save(update_fields=["url", "run_ended", "review_opened", "active"])
        record_event(
            action=Action.WEBHOOK_CHANGED,
            actor=actor,
            actor_label=actor_label,
            data={"endpoint_id": locked.pk, "workflow": locked.workflow, "before": before, "after": after},
        )
    return locked


# -- queueing deliveries (inside the change's transaction) --------------------------------------


def _body(event: str, data: dict[str, Any]) -> str:
    envelope = {"type": event, "timestamp": timezone.now(), "data": data}
    return json.dumps(convert.jsonable(envelope), separators=(",", ":"), ensure_ascii=False)


def _queue(
    *,
    event: str,
    url: str,
    endpoint: WebhookEndpoint | None,
    thread: Thread,
    run: Run | None,
    review: Review | None,
    body: str,
) -> WebhookDelivery:
    now = timezone.now()
    delivery = WebhookDelivery(
        message_id=f"msg_{uuid.uuid4().hex}",
        event=event,
        endpoint=endpoint,
        thread=thread,
        run=run,
        review=review,
        url=url,
        body=body,
        next_attempt_at=now,
    )
    refusal = url_refusal(url)
    if refusal:
        # Allowed when it was given, not any more: recorded, never sent.
        delivery.status, delivery.last_error, delivery.finished_at = (
            WebhookDelivery.Status.FAILED,
            refusal,
            now,
        )
        delivery.next_attempt_at = None
    delivery.save(force_insert=True)
    if delivery.status == WebhookDelivery.Status.PENDING:
        transaction.on_commit(functools.partial(_publish, delivery.pk, 0.0))
    return delivery


def _publish(delivery_id: int, countdown: float) -> None:
    # Committed already: a broker outage must not become the run's error. The sweeper
    # publishes the delivery again later.
    try:
        current_app.send_task(DELIVER, args=[delivery_id], countdown=countdown or None)
    except Exception:
        logger.exception("could not publish webhook delivery %s; the sweeper will", delivery_id)


def run_payload(run: Run, thread: Thread) -> dict[str, Any]:
    """`run.ended`'s data: the run as langgraph_sdk's `Run`, and the thread's status after it.
    No state values: whoever holds the receiving end may not be allowed to see them."""
    return {**convert.run_json(run, thread=thread), "thread_status": convert.thread_status(thread)}


def review_url(review: Review) -> str:
    path = reverse("approvals:review", args=[review.pk])
    return f"{settings.SIGNOFF_BASE_URL}{path}"


def review_payload(review: Review) -> dict[str, Any]:
    """`review.opened`'s data: which review, where, when it is due, and its page."""
    return {
        "review_id": review.pk,
        "thread_id": review.thread.thread_id,
        "run_id": str(review.run.public_id) if review.run is not None else None,
        "assistant_id": review.workflow,
        "workflow": review.workflow,
        "node": review.node,
        "interrupt_id": review.interrupt_id,
        "kind": review.kind,
        "created_at": review.created_at,
        "due_at": review.due_at,
        "url": review_url(review),
    }


@contextlib.contextmanager
def _never_fails_the_change(what: str) -> Iterator[None]:
    """A receiver runs inside the run's or review's transaction: a webhook that cannot be queued
    (a bug, a row too large) is logged and left out, in a savepoint of its own, rather than
    failing the change it reports. The receivers read their endpoints before it: a change with
    none to tell (most of them) costs one query, not a savepoint's two more, and all of it runs
    while the change holds the audit lock. That read fails only when the database does, and the
    change could not commit then anyway."""
    try:
        with transaction.atomic():
            yield
    except Exception:
        logger.exception("could not queue the webhooks of %s", what)


@receiver(run_ended, dispatch_uid="api.webhooks.run_ended")
def queue_run_ended(*, run: Run, **_: Any) -> None:
    thread = run.thread
    endpoints = list(WebhookEndpoint.objects.filter(workflow=thread.workflow, active=True, run_ended=True))
    if not endpoints and not run.webhook:
        return
    with _never_fails_the_change("queue_run_ended"):
        body = _body(RUN_ENDED, run_payload(run, thread))
        targets: list[tuple[str, WebhookEndpoint | None]] = [
            (endpoint.url, endpoint) for endpoint in endpoints
        ]
        if run.webhook:
            targets.append((run.webhook, None))
        for url, endpoint in targets:
            _queue(
                event=RUN_ENDED, url=url, endpoint=endpoint, thread=thread, run=run, review=None, body=body
            )


@receiver(review_opened, dispatch_uid="api.webhooks.review_opened")
def queue_review_opened(*, review: Review, **_: Any) -> None:
    endpoints = list(
        WebhookEndpoint.objects.filter(workflow=review.workflow, active=True, review_opened=True)
    )
    if not endpoints:
        return
    with _never_fails_the_change("queue_review_opened"):
        body = _body(REVIEW_OPENED, review_payload(review))
        for endpoint in endpoints:
            _queue(
                event=REVIEW_OPENED,
                url=endpoint.url,
                endpoint=endpoint,
                thread=review.thread,
                run=review.run,
                review=review,
                body=body,
            )


# -- sending (the worker) -----------------------------------------------------------------------


def signed_headers(*, message_id: str, body: str, secret: str, now: datetime | None = None) -> dict[str, str]:
    """The Standard Webhooks headers for `body`, signed with `secret` (`whsec_...`)."""
    at = datetime.fromtimestamp(int((now or datetime.now(UTC)).timestamp()), UTC)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(message_id, at, body),
    }


@dataclass(frozen=True)
class Attempt:
    """What one delivery message did (a webhook's here, a notification's in
    notifications.services): the record's status after it, and when to try again."""

    status: str
    retry_in: float | None = None


def backoff(attempts: int, delays: Sequence[float]) -> float:
    """Seconds to wait after the `attempts`-th failed try: the `delays` in turn, the last repeating."""
    return delays[min(attempts, len(delays)) - 1]


def retry_delay(attempts: int) -> float:
    """After the `attempts`-th failed POST (SIGNOFF_WEBHOOK_RETRY_SECONDS)."""
    return backoff(attempts, settings.SIGNOFF_WEBHOOK_RETRY_SECONDS)


def attempt_delivery(*, delivery_id: int) -> Attempt:
    """POST a pending delivery once and record how it went: succeeded on a 2xx; otherwise
    pending with the time of its next try, or failed after SIGNOFF_WEBHOOK_MAX_ATTEMPTS. The
    POST runs outside any transaction, holding no lock."""
    timeout = settings.SIGNOFF_WEBHOOK_TIMEOUT_SECONDS
    with transaction.atomic(durable=True):
        delivery = (
            # Only the delivery's row: PostgreSQL cannot lock the nullable side of the join.
            WebhookDelivery.objects.select_for_update(of=("self",))
            .select_related("endpoint")
            .filter(pk=delivery_id)
            .first()
        )
        if delivery is None or delivery.status != WebhookDelivery.Status.PENDING:
            return Attempt(delivery.status if delivery is not None else "missing")
        now = timezone.now()
        if delivery.next_attempt_at is not None and delivery.next_attempt_at > now + timedelta(seconds=1):
            # A second copy of the message (the sweeper's, a redelivery) while another is
            # scheduled or in flight: dropped, so copies never multiply; the sweeper has its back.
            return Attempt(delivery.status)
        delivery.attempts += 1
        # While the POST is in flight: should this worker die, the sweeper sends it again after.
        delivery.next_attempt_at = now + timedelta(seconds=timeout * 2)
        delivery.save(update_fields=["attempts", "next_attempt_at"])
    code, error, final = _send(delivery, timeout)
    now = timezone.now()
    with transaction.atomic(durable=True):
        locked = WebhookDelivery.objects.select_for_update().get(pk=delivery_id)
        if locked.status != WebhookDelivery.Status.PENDING:
            return Attempt(locked.status)
        locked.last_status_code, locked.last_error = code, error[:ERROR_MAX]
        retry_in = None
        if not error:
            locked.status, locked.finished_at, locked.next_attempt_at = (
                WebhookDelivery.Status.SUCCEEDED,
                now,
                None,
            )
        elif final or locked.attempts >= settings.SIGNOFF_WEBHOOK_MAX_ATTEMPTS:
            locked.status, locked.finished_at, locked.next_attempt_at = (
                WebhookDelivery.Status.FAILED,
                now,
                None,
            )
        else:
            retry_in = retry_delay(locked.attempts)
            locked.next_attempt_at = now + timedelta(seconds=retry_in)
        locked.save(
            update_fields=["last_status_code", "last_error", "status", "finished_at", "next_attempt_at"]
        )
    if error:
        logger.warning(
            "webhook delivery %s to %s, attempt %s: %s", delivery_id, locked.url, locked.attempts, error
        )
    return Attempt(locked.status, retry_in=retry_in)


def _send(delivery: WebhookDelivery, timeout: float) -> tuple[int | None, str, bool]:
    """POST the delivery: (HTTP status or None, error or "", whether trying again is no use)."""
    if delivery.endpoint is not None and not delivery.endpoint.active:
        return None, "the endpoint was turned off", True
    refusal = url_refusal(delivery.url)
    if refusal:
        return None, refusal, True
    secret = delivery.endpoint.secret if delivery.endpoint is not None else settings.SIGNOFF_WEBHOOK_SECRET
    if not secret:
        return None, "SIGNOFF_WEBHOOK_SECRET is not set: a run's webhook cannot be signed", True
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        **signed_headers(message_id=delivery.message_id, body=delivery.body, secret=secret),
    }
    try:
        # No redirects (the allow-list checked this URL, not where it points), and no proxy
        # from the environment: the POST goes where the list says.
        response = httpx.post(
            delivery.url,
            content=delivery.body.encode(),
            headers=headers,
            timeout=timeout,
            follow_redirects=False,
            trust_env=False,
        )
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, False
    if 200 <= response.status_code < 300:
        return response.status_code, "", False
    reason = f"HTTP {response.status_code} {response.reason_phrase}".strip()
    if response.is_redirect:
        reason += " (redirects are not followed: give the URL it redirects to)"
    return response.status_code, reason, False


def sweep_deliveries(*, grace: float | None = None, batch: int | None = None) -> list[int]:
    """Publish again the pending deliveries whose time passed `grace` seconds ago (their retry
    message was lost: a broker restart, a worker killed in the POST). Returns their ids."""
    grace = settings.SIGNOFF_QUEUED_GRACE_SECONDS if grace is None else grace
    due = timezone.now() - timedelta(seconds=grace)
    ids = list(
        WebhookDelivery.objects.filter(status=WebhookDelivery.Status.PENDING, next_attempt_at__lt=due)
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[: batch or settings.SIGNOFF_SWEEP_BATCH]
    )
    for delivery_id in ids:
        _publish(delivery_id, 0.0)
    return ids
