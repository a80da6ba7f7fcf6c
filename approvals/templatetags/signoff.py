"""Filters for showing saved state: always as text, never as markup."""

from __future__ import annotations

import json
from typing import Any

from django import template

from approvals import metrics
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
    """ "1 of 2" for a queue row of a workflow that needs several approvals (the row carries
    `approvals_given`), "" for any other."""
    try:
        spec = registry.get(review.workflow)
    except LookupError:
        return ""
    if not spec.needs_quorum:
        return ""
    return f"{getattr(review, 'approvals_given', 0)} of {spec.approvals_needed}"


@register.filter
def can_read_audit(user: Any) -> bool:
    """`{% if user|can_read_audit %}`: the one rule for showing audit trail links."""
    return _can_read_audit(user)


@register.filter
def duration(seconds: float | None) -> str:
    """Seconds as people read them (approvals.metrics.duration): "12 min", "3 h 20 min"."""
    return metrics.duration(seconds)


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
