"""Plain JSON for what the app stores beside the checkpoints: run commands, decisions,
reviews' payloads and audit data.

`canonical_json` writes what a state schema may hold (Decimal, dates, UUIDs, Enums, Pydantic
models, dataclasses) as DjangoJSONEncoder and Pydantic write them, and what JSON (or
PostgreSQL's jsonb) cannot hold in a stated, tagged form that `load_canonical_json` reverses.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from pydantic_core import PydanticSerializationError, to_jsonable_python


class _Encoder(DjangoJSONEncoder):
    def default(self, o: Any) -> Any:
        try:
            return super().default(o)
        except TypeError:
            # Enums, Pydantic models, dataclasses (what a state schema may hold); anything
            # else still raises TypeError.
            try:
                return to_jsonable_python(o)
            except PydanticSerializationError as exc:
                raise TypeError(str(exc)) from None


# The stated form of what JSON (or PostgreSQL's jsonb) cannot hold, one tag per object:
#   {"$float": "NaN" | "Infinity" | "-Infinity"}   a float JSON has no literal for
#   {"$str": "<unicode_escape of the text>"}        a str with NUL or a lone surrogate
#   {"$dict": {...}}                                a dict that would read as one of these tags
_TAGS = frozenset({"$float", "$str", "$dict"})


def canonical_json(value: Any) -> Any:
    """`value` as plain JSON data the database stores and loads back as is: Decimal, dates,
    UUIDs, Enums and models as DjangoJSONEncoder / Pydantic write them, and what JSON cannot
    hold in the tagged form above; `load_canonical_json` reverses the tags. Raises TypeError
    for a value nothing can write as JSON."""
    return _tag(json.loads(json.dumps(value, cls=_Encoder)))


def _tag(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return {"$float": "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")}
    if isinstance(value, str):
        if "\x00" in value or _LONE_SURROGATE.search(value):
            return {"$str": value.encode("unicode_escape").decode("ascii")}
        return value
    if isinstance(value, list):
        return [_tag(item) for item in value]
    if isinstance(value, dict):
        tagged = {_untagged_key(key): _tag(item) for key, item in value.items()}
        if len(value) == 1 and next(iter(value)) in _TAGS:
            return {"$dict": tagged}
        return tagged
    return value


def _untagged_key(key: str) -> str:
    # A key is a string too: PostgreSQL refuses NUL in keys as in values. No tag can sit in
    # a key, so such a key is written escaped, which is the one lossy case, and rare enough.
    if "\x00" in key or _LONE_SURROGATE.search(key):
        return key.encode("unicode_escape").decode("ascii")
    return key


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def load_canonical_json(value: Any) -> Any:
    """The value `canonical_json` stored, with its tags read back (NaN, infinities, strings
    PostgreSQL cannot hold)."""
    if isinstance(value, list):
        return [load_canonical_json(item) for item in value]
    if isinstance(value, dict):
        if len(value) == 1:
            ((tag, inner),) = value.items()
            if tag == "$float" and isinstance(inner, str):
                return float(inner.replace("Infinity", "inf"))
            if tag == "$str" and isinstance(inner, str):
                return inner.encode("ascii").decode("unicode_escape")
            if tag == "$dict" and isinstance(inner, dict):
                return {key: load_canonical_json(item) for key, item in inner.items()}
        return {key: load_canonical_json(item) for key, item in value.items()}
    return value
