"""The signed-in user's notification settings. One view serves the page and, with htmx, the form."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_http_methods
from django.views.decorators.vary import vary_on_headers

from approvals.http import HtmxHttpRequest, request_user
from notifications import services
from notifications.forms import PreferencesForm

SAVED = "Your notification settings are saved."


@require_http_methods(["GET", "POST"])
@login_required
@vary_on_headers("HX-Request")
def preferences(request: HtmxHttpRequest) -> HttpResponse:
    user = request_user(request)
    template = "notifications/settings.html#form" if request.htmx else "notifications/settings.html"
    if request.method == "GET":
        return render(request, template, {"form": PreferencesForm(user=user)})
    form = PreferencesForm(request.POST, user=user)
    if form.is_valid():
        try:
            services.set_preferences(user=user, choices=form.cleaned_data)
        except services.InvalidPreferences as exc:
            for name, error in exc.errors.items():
                form.add_error(name if name in form.fields else None, error)
        else:
            if request.htmx:
                return render(request, template, {"form": PreferencesForm(user=user), "saved": SAVED})
            messages.success(request, SAVED)
            return HttpResponseRedirect(reverse("notifications:settings"))
    # What was sent stays on the page, with each error beside its workflow.
    return render(request, template, {"form": form}, status=422)
