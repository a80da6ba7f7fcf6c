"""Signed one-click links for emails: approve, reject or open one review (issue 12, item 4).

A link's URL carries a token: `django.core.signing` over [link id, random secret] with this
module's own salt (so no other signed value of the app passes for one). The database keeps
the link's row with the secret's SHA-256 only: a leaked table makes no working link, and a
token whose signature or secret does not match is "tampered".

Each link is bound to its recipient, its review, the checkpoint the review was raised at and
the group that reviewed it then; it expires after SIGNOFF_LINK_HOURS and decides once.
Following one never decides on GET (approvals.link_views shows a confirmation page with one
button); the POST decides through `services.decide` as the recipient, pinned to the link's
checkpoint, and marks the link used in the decision's own transaction. A refused decision
rolls that back with everything else, so the link stays usable when the refusal was not the
link's fault (a claim held by someone for a while); a decided, withdrawn or moved-on review
refuses every later use anyway.

Refusals (tampered, expired, used again, someone else's) are audited as `link.refused`, once
per link and reason: replaying a link cannot grow the audit chain without bound. A token that
does not verify names no link that can be trusted, so those are audited at most once a
minute in all (the throttle cache every web process shares); each refusal is also logged.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth.models import User
from django.core import signing
from django.core.cache import caches
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from approvals import queries, services
from approvals.models import Approval, Decision, Link, Review
from workflows import engine, registry
from workflows import services as engine_services
from workflows.audit import Action as AuditAction
from workflows.models import Thread

logger = logging.getLogger(__name__)

SALT = "signoff.approvals.links"
# Where the links point when SIGNOFF_BASE_URL is unset: `make run`'s address.
FALLBACK_BASE_URL = "http://127.0.0.1:8000"
DECIDING = (Link.Action.APPROVE, Link.Action.REJECT)
# The throttle cache's key for refusals of tokens that name no trustworthy link.
UNKNOWN_REFUSAL_KEY = "approvals.links.refused-unknown"
UNKNOWN_REFUSAL_SECONDS = 60


class Reason:
    TAMPERED = "tampered"
    EXPIRED = "expired"
    USED = "used"
    OTHER_USER = "other_user"


# -- issuing --------------------------------------------------------------------------------


def base_url() -> str:
    """Where the app is served, for absolute links: SIGNOFF_BASE_URL, else `make run`'s address."""
    configured: str = settings.SIGNOFF_BASE_URL
    if configured:
        return configured
    logger.warning("SIGNOFF_BASE_URL is not set; one-click links point at %s", FALLBACK_BASE_URL)
    return FALLBACK_BASE_URL


def links_for(*, recipient: User, review: Review) -> dict[str, str]:
    """Absolute URLs of new one-click links for `recipient` on `review`: "open" always, and
    "approve" and "reject" when the review is open, allows the action and the recipient may
    review it (a key is missing otherwise: callers use .get). Each expires after
    SIGNOFF_LINK_HOURS.

    Works inside the caller's transaction (the links and their `link.issued` event commit
    with it) or in one of its own. Takes the audit lock.
    """
    actions: list[str] = []
    if review.status == Review.Status.OPEN and services.may_review(recipient, review):
        allowed = services.allowed_actions(review)
        actions = [action for action in DECIDING if action in allowed]
        spec = registry.get(review.workflow) if _registered(review.workflow) else None
        # No approve link for someone decide() would refuse it to (the thread's starter, an
        # approver already counted): it could only lead to a 409.
        if spec is not None and services.approval_refusal(review, spec=spec, actor=recipient):
            actions = [action for action in actions if action != Link.Action.APPROVE]
    actions.append(Link.Action.OPEN)
    expires_at = timezone.now() + timedelta(hours=settings.SIGNOFF_LINK_HOURS)
    group = reviewer_group(review)
    urls: dict[str, str] = {}
    issued: dict[str, int] = {}
    # Not durable: the notification code may call this inside its own transaction.
    with transaction.atomic():
        for action in actions:
            secret = secrets.token_urlsafe(32)
            link = Link.objects.create(
                review=review,
                recipient=recipient,
                action=action,
                checkpoint_id=review.checkpoint_id,
                reviewer_group=group,
                secret_hash=_digest(secret),
                expires_at=expires_at,
            )
            issued[action] = link.pk
            urls[action] = base_url() + url_of(token_for(link, secret))
        engine_services.record_event(
            action=AuditAction.LINK_ISSUED,
            actor_label=engine_services.WORKER,
            thread=review.thread,
            data={
                "review": review.pk,
                "recipient": recipient.get_username(),
                "links": issued,
                "expires_at": expires_at,
            },
        )
    return urls


def token_for(link: Link, secret: str) -> str:
    return signing.dumps([link.pk, secret], salt=SALT, compress=False)


def url_of(token: str) -> str:
    # The token travels in the query string, not the path: Django logs the path of every
    # 4xx response (django.request), and a token refused to a stranger still works.
    return f"{reverse('approvals:link')}?{urlencode({'t': token})}"


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def reviewer_group(review: Review) -> str:
    """The group reviewing `review` now: its workflow's, or the one it was escalated to."""
    return review.responsible_group


# -- following ------------------------------------------------------------------------------


class LinkRefused(Exception):
    """A link that cannot be followed at all. `link` is None when the token names no link
    that can be trusted."""

    def __init__(self, reason: str, message: str, status: int, link: Link | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status
        self.link = link


TAMPERED_MESSAGE = (
    "This link is not valid: it was changed or cut short on its way to you. Open the review from "
    "the queue instead, or ask for a new email."
)
EXPIRED_MESSAGE = (
    "This link has expired (links in emails work for {hours:g} hours). Open the review from the "
    "queue instead."
)


def verify(token: str) -> Link:
    """The link a token names, if it is genuine and not expired; LinkRefused if not (400
    tampered, 410 expired). Used, decided or stale links are `conflict`s, not refusals."""
    try:
        pk, secret = signing.loads(token, salt=SALT)
    except (signing.BadSignature, ValueError, TypeError):
        raise LinkRefused(Reason.TAMPERED, TAMPERED_MESSAGE, 400) from None
    if not isinstance(pk, int) or not isinstance(secret, str):
        raise LinkRefused(Reason.TAMPERED, TAMPERED_MESSAGE, 400)
    link = queries.link(pk)
    if link is None:
        raise LinkRefused(Reason.TAMPERED, TAMPERED_MESSAGE, 400)
    if not hmac.compare_digest(_digest(secret), link.secret_hash):
        raise LinkRefused(Reason.TAMPERED, TAMPERED_MESSAGE, 400, link)
    if link.expires_at <= timezone.now():
        message = EXPIRED_MESSAGE.format(hours=settings.SIGNOFF_LINK_HOURS)
        raise LinkRefused(Reason.EXPIRED, message, 410, link)
    return link


def decides_without_session(link: Link) -> bool:
    """Whether the link's confirmation works for someone not signed in (the workflow's
    `email_decisions`)."""
    try:
        return registry.get(link.review.workflow).email_decisions
    except LookupError:
        return False


def conflict(link: Link) -> str | None:
    """Why the link's decision cannot apply now (the 409 page's message), or None. Names who
    decided and when, or who withdrew the review and when."""
    review = link.review
    if not _registered(review.workflow):
        return services.unregistered_message(review.workflow)
    if link.used_at is not None and link.decision is not None:
        return f"This link was already used. {services.AlreadyDecided(link.decision)}"
    if review.status == Review.Status.DECIDED:
        return str(services.AlreadyDecided(Decision.objects.select_related("actor").get(review=review)))
    if review.status == Review.Status.CANCELLED:
        return withdrawn_message(review)
    if link.used_at is not None:
        return "This link was already used."
    if reviewer_group(review) != link.reviewer_group:
        return (
            f"This review was escalated to {reviewer_group(review) or 'another group'} after this link "
            "was sent; it can no longer be decided from it."
        )
    if not queries.visible_reviews(link.recipient).filter(pk=review.pk).exists():
        return f"{link.recipient.get_username()} is no longer a reviewer of this workflow."
    return _moved_on(link)


def _registered(workflow: str) -> bool:
    try:
        registry.get(workflow)
    except LookupError:
        return False
    return True


def _moved_on(link: Link) -> str | None:
    review = link.review
    thread = review.thread
    if review.checkpoint_id != link.checkpoint_id:
        return "The thread has moved on since this link was sent."
    if thread.status not in (Thread.Status.INTERRUPTED, Thread.Status.QUEUED, Thread.Status.RUNNING):
        return f"The thread is {thread.status}; this review no longer applies."
    try:
        head = engine.checkpoint_id_of(engine.head(thread.workflow, thread.thread_id))
    except (LookupError, *engine.UNREADABLE):
        return "This thread's state cannot be read now; open the review for details."
    if head != link.checkpoint_id:
        return "The thread has moved on since this link was sent."
    holder = services.claim_holder(review)
    if holder is not None and holder.pk != link.recipient_id:
        # Not the link's fault: it works again once the claim ends.
        return f"This review is being reviewed by {holder.get_username()}; try this link again later."
    return None


def withdrawn_message(review: Review) -> str:
    event = queries.review_cancellation(review)
    if event is None:
        return "This review was withdrawn."
    when = timezone.localtime(event.created_at).strftime("%Y-%m-%d %H:%M:%S %Z")
    reason = event.data.get("reason") if isinstance(event.data, dict) else ""
    return f"This review was withdrawn ({reason or 'no reason given'}) by {event.actor_label} at {when}."


class LinkUsed(services.DecisionRefused):
    """The link was used (or expired) between the page and the click."""


class LinkEscalated(services.DecisionRefused):
    """The review moved to another group since the link was sent."""


def decide(*, link: Link, signed_in: bool) -> Decision | Approval:
    """Decide the link's review as its recipient, pinned to the link's checkpoint, and mark
    the link used in the same transaction. DecisionRefused (nothing written, the link still
    unused) when the decision cannot apply.

    Locks as services.decide does (thread, run, review), then the link row, then the audit
    lock: the conditional update of the link is what stops a second use.
    """
    assert link.action in DECIDING

    def mark_used(decision: Decision | Approval) -> None:
        # Under the review's lock, so an escalation cannot slip in between this check and the commit.
        if reviewer_group(decision.review) != link.reviewer_group:
            raise LinkEscalated("This review was escalated to another group after this link was sent.")
        now = timezone.now()
        marked = Link.objects.filter(pk=link.pk, used_at__isnull=True, expires_at__gt=now).update(
            # A partial approval (a quorum still short) uses the link too, with no Decision yet.
            used_at=now,
            decision=decision if isinstance(decision, Decision) else None,
        )
        if not marked:
            raise LinkUsed("This link was already used, or has just expired.")

    return services.decide(
        review=link.review_id,
        actor=link.recipient,
        action=link.action,
        checkpoint_id=link.checkpoint_id,
        data={"via": "link", "link": link.pk, "signed_in": signed_in},
        on_decided=mark_used,
    )


def progress(decided: Decision | Approval) -> str:
    """For a partial approval, where the review's quorum stands ("1 of 2"); "" for a decision."""
    if isinstance(decided, Decision):
        return ""
    spec = registry.get(decided.review.workflow)
    return services.quorum_of(decided.review, spec=spec).progress


@dataclass(frozen=True)
class Effect:
    """What the link's action will do, for its confirmation page."""

    verb: str
    text: str
    sets: dict[str, Any]
    workflow: str = ""


def effect(link: Link) -> Effect:
    review = link.review
    spec = registry.get(review.workflow)
    action = link.action
    verb = "Approve" if action == Link.Action.APPROVE else "Reject"
    sets = services.implied_updates(review, action, spec)
    if review.kind == Review.Kind.BREAKPOINT:
        if action == Link.Action.REJECT and spec.on_reject is None:
            return Effect(verb, "Rejecting cancels the thread; it will not go on.", {}, spec.title)
        return Effect(verb, f"The thread goes on from “{review.node}”.", sets, spec.title)
    if review.kind == Review.Kind.AGENT_INBOX:
        return Effect(verb, "Accepts the request as it stands; the thread goes on.", {}, spec.title)
    text = f"Answers “{review.node}” with {action}, without a comment; the thread goes on."
    return Effect(verb, text, {}, spec.title)


# -- refusals -------------------------------------------------------------------------------


def record_refusal(*, link: Link | None, reason: str, user: User | None, ip_address: str) -> bool:
    """Log a refused link and audit it (`link.refused`) unless that was already done: once
    per link and reason, and for a token that names no trusted link at most once every
    UNKNOWN_REFUSAL_SECONDS. True if an event was written. Locks the link row, then the
    audit lock."""
    logger.warning(
        "one-click link refused: %s (link %s, from %s)", reason, link.pk if link else "unknown", ip_address
    )
    actor_label = "" if user is not None else services.ANONYMOUS
    if link is None:
        try:
            first = caches["throttle"].add(UNKNOWN_REFUSAL_KEY, 1, timeout=UNKNOWN_REFUSAL_SECONDS)
        except Exception:  # noqa: BLE001 - a cache that is down must not turn a 400 into a 500
            logger.exception("the throttle cache is down; a refused link is only logged")
            return False
        if not first:
            return False
        with transaction.atomic(durable=True):
            engine_services.record_event(
                action=AuditAction.LINK_REFUSED,
                actor=user,
                actor_label=actor_label,
                data={"reason": reason, "ip_address": ip_address},
            )
        return True
    with transaction.atomic(durable=True):
        locked = Link.objects.select_for_update().filter(pk=link.pk).first()
        if locked is None or reason in locked.refusals_logged.split():
            return False
        locked.refusals_logged = f"{locked.refusals_logged} {reason}".strip()
        locked.save(update_fields=["refusals_logged"])
        engine_services.record_event(
            action=AuditAction.LINK_REFUSED,
            actor=user,
            actor_label=actor_label,
            thread=link.review.thread,
            data={
                "reason": reason,
                "link": link.pk,
                "review": link.review_id,
                "action": link.action,
                "recipient": link.recipient.get_username(),
                "ip_address": ip_address,
            },
        )
    return True
