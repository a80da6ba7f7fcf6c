"""The API's answers that django-ninja writes without its exception handlers."""

from __future__ import annotations

import json
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.urls import Resolver404, resolve

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


def json_bodies_only(
    get_response: Callable[[HttpRequest], HttpResponseBase],
) -> Callable[[HttpRequest], HttpResponseBase]:
    """A request body under /api/ must be JSON: anything else is a 415 before any middleware or
    view reads it as a form (a multipart body read as a form cannot be read again as JSON, and a
    form parser should never see what an API client sent)."""

    def middleware(request: HttpRequest) -> HttpResponseBase:
        if request.path.startswith("/api/") and _has_body(request) and _served(request):
            content_type = request.content_type or ""
            if content_type != "application/json" and not content_type.endswith("+json"):
                detail = (
                    "the request body must be JSON (Content-Type: application/json), "
                    f"not {content_type or 'untyped'}"
                )
                return HttpResponse(
                    json.dumps({"detail": detail}), status=415, content_type="application/json; charset=utf-8"
                )
        return get_response(request)

    return middleware


def _served(request: HttpRequest) -> bool:
    """Whether the path is one the API serves: any other is its JSON 404, whatever the body."""
    from api.main import not_found

    try:
        return resolve(request.path_info).func is not not_found
    except Resolver404:
        return False


def _has_body(request: HttpRequest) -> bool:
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    return length > 0 or "chunked" in request.headers.get("Transfer-Encoding", "").lower()
