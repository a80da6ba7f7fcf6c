"""What a checkpoint can store, checked before anything is written.

Reviewer edits, answers and rollback corrections end up in three places: the checkpoint
(strict msgpack, which gives up past 255 levels of nesting and cannot encode lone
surrogates), JSON columns (PostgreSQL's jsonb refuses the NUL character and lone
surrogates), and the audit trail. A value any of them refuses would be accepted at the form
and then fail a request with a 500, or worse fail the thread later in the worker. So every
path that stores such a value asks `storable_problem` first: the review form, the preview,
rollback corrections, and the services themselves (so no caller can get past it).

The limits are settings (environment variables, see docs/operations.md):
`SIGNOFF_MAX_VALUE_DEPTH` (default 64 levels, at most 200: the checkpoint and the audit event
wrap a value in a few more levels, and msgpack's limit is 255) and `SIGNOFF_MAX_VALUE_BYTES`
(default 1,000,000 bytes of text, about as much as one request may carry).
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import re
from typing import Any

from django.conf import settings

_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
# A scalar's share of the size: a number, a bool or None, roughly as JSON spells it.
_SCALAR_BYTES = 8


def max_depth() -> int:
    depth: int = settings.SIGNOFF_MAX_VALUE_DEPTH
    return depth


def max_bytes() -> int:
    size: int = settings.SIGNOFF_MAX_VALUE_BYTES
    return size


def json_depth(text: str) -> int:
    """How deep the arrays and objects of a JSON text nest, read without parsing it, so
    text nested thousands deep is measured without Python's parser hitting its recursion
    limit. Brackets inside strings do not count."""
    brackets = _NOT_BRACKETS.sub("", _JSON_STRING.sub("", text))
    # The running sum of +1 per opening and -1 per closing bracket, in C loops: a 64 KB field
    # of brackets takes a few milliseconds.
    return max(0, max(itertools.accumulate(map(_STEP.__getitem__, brackets)), default=0))


def json_too_deep(text: str) -> str | None:
    """The error for a JSON text nested deeper than the limit, or None."""
    depth = json_depth(text)
    limit = max_depth()
    if depth > limit:
        return f"This is nested {depth:,} levels deep; at most {limit} levels can be stored."
    return None


def _children(value: Any) -> list[Any] | None:
    if isinstance(value, dict):
        return [*value.keys(), *value.values()]
    if isinstance(value, (list, tuple, set, frozenset)):
        return list(value)
    if isinstance(value, enum.Enum):
        return [value.value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [getattr(value, item.name) for item in dataclasses.fields(value)]
    fields = getattr(type(value), "model_fields", None)  # a Pydantic model
    if isinstance(fields, dict):
        return [getattr(value, name, None) for name in fields]
    return None


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "it contains a NUL character (\\u0000)"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "it contains a lone surrogate (such as \\ud800), which is not text"
    return None


def storable_problem(value: Any) -> str | None:
    """Why `value` cannot be stored in a checkpoint and the database, or None if it can:
    nested deeper than SIGNOFF_MAX_VALUE_DEPTH, larger than SIGNOFF_MAX_VALUE_BYTES of text,
    or holding a NUL character or a lone surrogate (in a string or a key). Walks the value
    without recursion, so no depth makes it fail."""
    depth_limit, size_limit = max_depth(), max_bytes()
    size = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            problem = _text_problem(item)
            if problem:
                return problem
            size += len(item.encode("utf-8")) + 2
        elif isinstance(item, (bytes, bytearray, memoryview)):
            size += len(item)
        else:
            children = _children(item)
            if children is None:
                size += _SCALAR_BYTES
                continue
            if depth + 1 > depth_limit:
                return f"it is nested more than {depth_limit} levels deep"
            size += 2
            stack.extend((child, depth + 1) for child in children)
        if size > size_limit:
            return f"it is larger than {size_limit:,} bytes"
    return None
