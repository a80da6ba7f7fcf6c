"""The refused requests: the CSRF failure page, and one log line for every 4xx.

Django logs a 4xx on `django.request` once (`django.utils.log.log_response` marks the response
logged), but a 403 from PermissionDenied carries the exception, so every refused page view
printed a traceback that says nothing the status does not. `OneLinePerRefusal`, a filter on
that logger and on `django.security.csrf` (where a failed CSRF check is logged; LOGGING in
config/settings.py), rewrites each 4xx record into one line with the method, path, status and
user id, and drops its traceback; 5xx records pass untouched."""

from __future__ import annotations

import logging

from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden
from django.middleware.csrf import REASON_NO_CSRF_COOKIE, REASON_NO_REFERER
from django.template.loader import render_to_string


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """CSRF_FAILURE_VIEW: the app's own 403 page, saying what to do (Django's default names
    the mechanism and leaves the reviewer with nothing to click)."""
    if reason == REASON_NO_CSRF_COOKIE:
        cause = "Your browser did not send the site's security cookie; allow cookies for this site."
    elif reason == REASON_NO_REFERER:
        cause = "Your browser did not say which page the form came from; allow the Referer header here."
    else:
        cause = "The form was older than your current sign-in (you may have logged in again in another tab)."
    body = render_to_string("403_csrf.html", {"cause": cause}, request=request)
    return HttpResponseForbidden(body)


def user_id(request: HttpRequest | None) -> str:
    """The signed-in user's id, "-" for nobody (or for a 4xx answered by a middleware above
    authentication, which has no user at all), "?" when the database cannot say."""
    user = getattr(request, "user", None)
    if user is None:
        return "-"
    try:
        # Usually resolved already: every page in base.html's layout asks who is signed in.
        return str(user.pk) if user.is_authenticated else "-"
    except DatabaseError:
        return "?"


class OneLinePerRefusal(logging.Filter):
    """Each 4xx on `django.request` as "4xx GET /path user=7 (Not Found)", without exc_info."""

    def filter(self, record: logging.LogRecord) -> bool | logging.LogRecord:
        status = getattr(record, "status_code", None)
        if not isinstance(status, int) or not 400 <= status < 500:
            return True
        request = getattr(record, "request", None)
        method = getattr(request, "method", None) or "-"
        path = getattr(request, "path", None) or "-"
        # Escaped the way log_response escapes what it logs: a path is the client's text.
        path = path.encode("unicode_escape").decode("ascii")
        # Django's message is "<reason>: <path>"; the reason alone goes in brackets.
        reason = record.getMessage().removesuffix(f": {path}")
        record.msg = "%s %s %s user=%s (%s)"
        record.args = (status, method, path, user_id(request), reason)
        record.exc_info = None
        record.exc_text = None
        return record
