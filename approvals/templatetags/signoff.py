"""Filters for showing saved state: always as text, never as markup."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from django import template
from django.utils import timezone
from django.utils.timesince import timesince, timeuntil

from approvals import metrics, queries
from approvals.services import can_read_audit as _can_read_audit
from workflows import registry

register = template.Library()


@register.filter
def pretty(value: Any) -> str:
    """Indented JSON for a state value (escaped by the template like any other text)."""
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False)


@register.filter
def is_long(value: Any) -> bool:
    """Whether a value is worth folding away behind a summary."""
    return len(pretty(value)) > 120 or "\n" in pretty(value)


@register.filter
def summary(value: Any) -> str:
    text = pretty(value).replace("\n", " ")
    return text if len(text) <= 80 else text[:77] + "…"


@register.filter
def workflow_title(name: str) -> str:
    """A workflow's title from its registered name (the name itself if it is gone)."""
    try:
        return registry.get(name).title
    except LookupError:
        return name


@register.filter
def approval_progress(review: Any) -> str:
    """ "1 of 2 approvals" for a queue row of a workflow that needs several approvals (the row
    carries `approvals_given`), "" for any other."""
    try:
        spec = registry.get(review.workflow)
    except LookupError:
        return ""
    if not spec.needs_quorum:
        return ""
    # "all" of a single group needs one: "0 of 1 approval".
    return f"{getattr(review, 'approvals_given', 0)} of {counted(spec.approvals_needed, 'approval')}"


@register.filter
def can_read_audit(user: Any) -> bool:
    """`{% if user|can_read_audit %}`: the one rule for showing audit trail links."""
    return _can_read_audit(user)


@register.filter
def duration(seconds: float | None) -> str:
    """Seconds as people read them (approvals.metrics.duration): "12 min", "3 h 20 min"."""
    return metrics.duration(seconds)


# -- times and counts as people say them -------------------------------------------------------

JUST_NOW = timedelta(minutes=1)


@register.filter
def ago(moment: datetime | None, now: datetime | None = None) -> str:
    """`{{ review.created_at|ago:queue.now }}`: "just now" under a minute (Django's timesince
    says "0 minutes"), else "5 minutes ago", "2 days, 3 hours ago" (Django's plurals). A moment
    ahead of `now` by more than a minute is "in 5 minutes"; by less (clocks a little apart),
    "just now" too."""
    if moment is None:
        return ""
    now = now or timezone.now()
    if abs(now - moment) < JUST_NOW:
        return "just now"
    if moment > now:
        return f"in {timeuntil(moment, now)}"
    return f"{timesince(moment, now)} ago"


@register.filter
def counted(number: int | None, noun: str) -> str:
    """`{{ n|counted:"review" }}`: "1 review", "0 reviews", "2 reviews"; an irregular plural
    after a comma, `counted:"reply,replies"`."""
    singular, _, plural = noun.partition(",")
    count = number or 0
    return f"{count} {singular if count == 1 else plural or singular + 's'}"


@register.filter
def sees_workflows(user: Any) -> bool:
    """`{% if user|sees_workflows %}`: whether to link the threads page (the user reviews a workflow)."""
    return queries.sees_workflows(user)


# -- the queue's key fields (summary_fields) -------------------------------------------------


@register.filter
def key_fields(review: Any) -> list[Any]:
    """The row's summary fields as cells (queries.summary_cells)."""
    return queries.summary_cells(review)


@register.filter
def key_field(review: Any, name: str) -> str:
    """One summary field's text in a row, for a column ("" when the review has none)."""
    return next((cell.text for cell in queries.summary_cells(review) if cell.name == name), "")


# -- the review page's state table and preview (issue 13: long values fold) --------------------

# Past these a value is folded behind <details>: a screenful of JSON hides the fields after it.
FOLD_CHARS = 300
FOLD_ITEMS = 10


@register.filter
def folds(value: Any) -> bool:
    """Whether a value shows folded: over FOLD_CHARS characters as shown, or a JSON object or
    list of more than FOLD_ITEMS items."""
    if isinstance(value, (dict, list, tuple)) and len(value) > FOLD_ITEMS:
        return True
    return len(pretty(value)) > FOLD_CHARS


@register.filter
def fold_summary(value: Any) -> str:
    """The one line a folded value shows: its size and how it starts."""
    if isinstance(value, dict):
        size = f"{len(value)} keys"
    elif isinstance(value, (list, tuple)):
        size = f"{len(value)} items"
    else:
        size = f"{len(pretty(value)):,} characters"
    return f"{summary(value)} ({size})"
