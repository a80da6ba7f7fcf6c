"""Query parameters: the ones an operation declares, and a 422 naming any other.

Ninja reads only the query parameters an operation declares and drops the rest; a client
that sends one Signoff does not implement must hear so, in the shape of any other 422."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja.errors import ValidationError


def refuse_unknown_query(request: HttpRequest, *allowed: str) -> None:
    unknown = sorted(set(request.GET) - set(allowed))
    if unknown:
        raise ValidationError(
            [
                {
                    "type": "extra_forbidden",
                    "loc": ["query", name],
                    "msg": "Extra inputs are not permitted: Signoff does not implement this parameter",
                    "input": request.GET.get(name),
                }
                for name in unknown
            ]
        )


def refuse(loc: list[str | int], message: str, value: Any = None) -> ValidationError:
    """A 422 naming the field (`loc`, as pydantic writes it), in the shape of pydantic's own."""
    return ValidationError([{"type": "value_error", "loc": loc, "msg": message, "input": value}])
