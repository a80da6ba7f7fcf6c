"""Refuse an oversized POST with a page that says so, before anything reads it.

Django raises RequestDataTooBig the first time `request.POST` is read; CSRF checking is
the first to read it, and turns it into a bare 400. This runs just before that check.
Nothing is written either way: the request never reaches a view.
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.template.defaultfilters import filesizeformat


def refuse_oversized_posts(
    get_response: Callable[[HttpRequest], HttpResponse],
) -> Callable[[HttpRequest], HttpResponse]:
    def middleware(request: HttpRequest) -> HttpResponse:
        if request.method == "POST":
            try:
                request.POST  # noqa: B018 - reading it is the check
            except RequestDataTooBig:
                limit = filesizeformat(settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
                context = {
                    "message": f"The submission is too large; keep it under {limit}. Nothing was saved."
                }
                template = (
                    "approvals/too_large.html#message"
                    if request.headers.get("HX-Request")
                    else "approvals/too_large.html"
                )
                return render(request, template, context, status=413)
        return get_response(request)

    return middleware
