"""Pages for requests that cannot be served: an oversized POST (413) and a database that
cannot be reached (503).

Refuse an oversized POST with a page that says so, before anything reads it.

Django raises RequestDataTooBig the first time `request.POST` is read; CSRF checking is
the first to read it, and turns it into a bare 400. This runs just before that check.
Nothing is written either way: the request never reaches a view.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.template.defaultfilters import filesizeformat
from django.template.loader import render_to_string
from django.views import defaults

from approvals.http import HtmxHttpRequest
from workflows.execution import TRANSIENT_DATABASE_ERRORS

logger = logging.getLogger(__name__)
# The failures that pass (the workers release a run on the same ones); an IntegrityError or
# a DataError is a bug and stays a 500.
_UNREACHABLE = TRANSIENT_DATABASE_ERRORS


def refuse_oversized_posts(
    get_response: Callable[[HttpRequest], HttpResponse],
) -> Callable[[HtmxHttpRequest], HttpResponse]:
    def middleware(request: HtmxHttpRequest) -> HttpResponse:
        if request.method == "POST":
            try:
                request.POST  # noqa: B018 - reading it is the check
            except RequestDataTooBig:
                limit = filesizeformat(settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
                context = {
                    "message": f"The submission is too large; keep it under {limit}. Nothing was saved."
                }
                template = "approvals/too_large.html#message" if request.htmx else "approvals/too_large.html"
                return render(request, template, context, status=413)
        return get_response(request)

    return middleware


# -- the database is unreachable -------------------------------------------------------------

RETRY_AFTER_SECONDS = 10


def database_unavailable(request: HtmxHttpRequest) -> HttpResponse:
    """503 with Retry-After, rendered without the request context: the user, the session
    and the messages all need the database that is down."""
    template = "503.html#message" if request.htmx else "503.html"
    response = HttpResponse(render_to_string(template, {"retry_after": RETRY_AFTER_SECONDS}), status=503)
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


class DatabaseUnavailable:
    """A view that cannot reach the database (refused, dropped, or no pooled connection
    free within DATABASE_POOL_TIMEOUT) answers 503 "try again" instead of 500. Failures
    outside the view (the session's save) reach `server_error`, Django's handler500."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HtmxHttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, _UNREACHABLE):
            logger.warning("database unavailable for %s %s: %s", request.method, request.path, exception)
            return database_unavailable(request)
        return None


def server_error(request: HtmxHttpRequest) -> HttpResponse:
    """handler500: the 503 page when the error is the database being unreachable (Django calls
    this inside its `except`, so the exception is at hand), else Django's plain 500. Whatever
    failed ran inside HtmxMiddleware, third in MIDDLEWARE, so `request.htmx` is set."""
    if isinstance(sys.exc_info()[1], _UNREACHABLE):
        return database_unavailable(request)
    return defaults.server_error(request)
