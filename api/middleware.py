"""The API's answers that django-ninja writes without its exception handlers."""

from __future__ import annotations

import json
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase

METHOD_NOT_ALLOWED = json.dumps({"detail": "Method Not Allowed"}).encode()


def json_method_not_allowed(
    get_response: Callable[[HttpRequest], HttpResponseBase],
) -> Callable[[HttpRequest], HttpResponseBase]:
    """A method a path of the API does not serve is a 405 in plain text from ninja (its path
    view answers before any operation, so no exception handler sees it); this makes it JSON
    `{"detail": "Method Not Allowed"}`, as LangGraph's server answers, keeping the Allow header."""

    def middleware(request: HttpRequest) -> HttpResponseBase:
        response = get_response(request)
        if (
            response.status_code == 405
            and isinstance(response, HttpResponse)
            and request.resolver_match is not None
            and "api" in request.resolver_match.namespaces
            and not response.get("Content-Type", "").startswith("application/json")
        ):
            response.content = METHOD_NOT_ALLOWED
            response["Content-Type"] = "application/json; charset=utf-8"
        return response

    return middleware
