"""What a notification says: the email's subject and bodies, the chat webhook's payload.

An email carries the workflow's title, the thread's title, the node, the due date and links;
state values only from the workflow's `summary_fields`, and only to a recipient who may see the
review when the email is written (`queries.may_see`). A chat webhook carries no state values at
all: whoever reads the channel may not be allowed to see them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from approvals import links
from approvals.models import Review
from notifications import queries
from notifications.models import Send
from workflows import engine, registry

Kind = Send.Kind

HEADLINES = {
    Kind.OPENED: "A review is waiting",
    Kind.ESCALATED: "A review was escalated",
    Kind.OVERDUE: "A review is overdue",
    Kind.DUE_SOON: "A review you hold is due soon",
    Kind.FOLLOW_UP: "Your follow-up on a review",
    Kind.REASSIGNED: "A review changed hands",
}


def absolute(path: str) -> str:
    """`path` on SIGNOFF_BASE_URL (the path alone when it is unset)."""
    return f"{settings.SIGNOFF_BASE_URL}{path}"


def review_links(*, recipient: User, review: Review) -> dict[str, str]:
    """The signed one-click links an email about `review` carries for `recipient`, by name:
    "open" always, "approve" and "reject" when they may decide it now (approvals.links). The
    templates render whatever is here."""
    return links.links_for(recipient=recipient, review=review)


def summary_values(review: Review) -> dict[str, Any]:
    """The values of the workflow's summary fields in the thread's state now."""
    try:
        spec = registry.get(review.workflow)
    except LookupError:
        return {}
    if not spec.open_summary_names:
        return {}
    values = engine.head(review.workflow, review.thread.thread_id).values
    if not isinstance(values, Mapping):
        return {}
    return {name: values[name] for name in spec.open_summary_names if name in values}


def workflow_title(name: str) -> str:
    try:
        return registry.get(name).title
    except LookupError:
        return name


def _when(moment: datetime | None) -> str:
    if moment is None:
        return ""
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M %Z")


@dataclass(frozen=True)
class Email:
    subject: str
    text: str
    html: str


@dataclass(frozen=True)
class About:
    """What every message about one review may say, for one recipient."""

    headline: str
    workflow: str
    thread: str
    node: str
    due: str
    links: dict[str, str]
    lines: list[str] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)


def _details_lines(kind: str, details: Mapping[str, Any]) -> list[str]:
    if kind == Kind.ESCALATED:
        return [f"It moved from {details.get('from_group', '?')} to {details.get('to_group', '?')}."]
    if kind == Kind.REASSIGNED:
        before = details.get("previous_holder") or "nobody"
        after = details.get("new_holder") or "nobody"
        by = details.get("actor") or "someone"
        return [f"{by} passed it from {before} to {after}."]
    if kind == Kind.OVERDUE:
        return ["It is past its due time and still open."]
    if kind == Kind.FOLLOW_UP:
        return ["You asked to be reminded of it today."]
    return []


def about(send: Send, review: Review, *, with_values: bool) -> About:
    recipient = send.recipient
    links = (
        review_links(recipient=recipient, review=review)
        if recipient is not None
        else {"open": absolute(reverse("approvals:review", args=[review.pk]))}
    )
    return About(
        headline=HEADLINES.get(Kind(send.kind), "A review"),
        workflow=workflow_title(review.workflow),
        thread=str(review.thread),
        node=review.node,
        due=_when(review.due_at),
        links=links,
        lines=_details_lines(send.kind, send.details),
        values=summary_values(review) if with_values else {},
    )


def review_email(send: Send, review: Review) -> Email:
    """The email of a send about one review. Values only if its recipient may see it now."""
    assert send.recipient is not None
    facts = about(send, review, with_values=queries.may_see(send.recipient, review))
    context = {"about": facts, "recipient": send.recipient}
    return Email(
        subject=f"{facts.headline}: {facts.thread} ({facts.workflow})"[:300],
        text=render_to_string("notifications/email/review.txt", context),
        html=render_to_string("notifications/email/review.html", context),
    )


def digest_email(send: Send, reviews: list[Review]) -> Email:
    """The daily digest: one line per review, with its links; no state values."""
    assert send.recipient is not None
    recipient = send.recipient
    items = [
        {
            "review": review,
            "workflow": workflow_title(review.workflow),
            "thread": str(review.thread),
            "due": _when(review.due_at),
            "links": review_links(recipient=recipient, review=review),
        }
        for review in reviews
    ]
    day = send.digest_date.isoformat() if send.digest_date else ""
    context = {"items": items, "day": day, "recipient": recipient}
    count = len(items)
    return Email(
        subject=f"Your reviews for {day}: {count} open",
        text=render_to_string("notifications/email/digest.txt", context),
        html=render_to_string("notifications/email/digest.html", context),
    )


def _slack_escape(text: str) -> str:
    # The three characters Slack's mrkdwn reads as markup (its documented escapes).
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def chat_payload(send: Send, review: Review) -> dict[str, Any]:
    """`{"text": ...}`, which Slack's and Teams' incoming webhooks both take, plus Slack blocks
    with a button per link. No state values."""
    facts = about(send, review, with_values=False)
    due = f", due {facts.due}" if facts.due else ""
    summary = f"{facts.headline}: {facts.thread} ({facts.workflow}, at {facts.node}){due}."
    text = " ".join([summary, *facts.lines, f"Open: {facts.links['open']}"])
    detail = "\n".join(_slack_escape(line) for line in facts.lines)
    return {
        "text": text,
        "blocks": [
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": (
                        f"*{_slack_escape(facts.headline)}*\n"
                        f"<{facts.links['open']}|{_slack_escape(facts.thread)}> · "
                        f"{_slack_escape(facts.workflow)} · {_slack_escape(facts.node)}{_slack_escape(due)}"
                        + (f"\n{detail}" if detail else "")
                    ),
                },
            },
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": name.capitalize()},
                        "url": url,
                    }
                    for name, url in facts.links.items()
                ],
            },
        ],
    }
