"""The API-key admin: an admin makes a key for a user and sees it once, revokes keys, and sees
each key's expiry and last use. No one sees a key's secret again: only its hash is stored.

The add page is our own view, not the admin's model form: a key is made by
`api.services.create_api_key` (a durable transaction, audited), which the admin's add view,
itself inside a transaction, could not call; and the new key is shown in the response itself
(never in a message, which the session or a cookie would keep), sent with no-store.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone

from api import services
from api.models import NAME_MAX_LENGTH, ApiKey
from approvals.http import request_user
from workflows.services import ServiceError


class NewKeyForm(forms.Form):
    user = forms.ModelChoiceField(
        queryset=User.objects.filter(is_active=True).order_by("username"),
        help_text="the key acts as this user, with their groups and permissions",
    )
    name = forms.CharField(
        max_length=NAME_MAX_LENGTH, help_text="what the key is for, e.g. the script that uses it"
    )
    expires_in_days = forms.IntegerField(
        min_value=1, max_value=3650, required=False, initial=90, help_text="empty: the key never expires"
    )


# What the list and the read-only detail page show.
COLUMNS = ("name", "prefix", "user", "state", "created_at", "expires_at", "last_used_at", "revoked_at")


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin[ApiKey]):
    list_display = COLUMNS
    list_filter = ["revoked_at", "expires_at"]
    list_select_related = ["user"]
    search_fields = ["name", "=prefix", "user__username"]
    # The hash is not shown: it is no use to anyone reading the page.
    fields = readonly_fields = COLUMNS
    actions = ["revoke"]

    @admin.display(description="state")
    def state(self, obj: ApiKey) -> str:
        return obj.state()

    # Keys are made on the add page and revoked by the action; nothing else about one changes,
    # and none is deleted (the audit trail names them).
    def has_change_permission(self, request: HttpRequest, obj: ApiKey | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: ApiKey | None = None) -> bool:
        return False

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("api.change_apikey")

    @admin.action(description="Revoke the selected keys", permissions=["revoke"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        actor = request_user(request)
        for key in queryset:
            try:
                services.revoke_api_key(key=key, actor=actor)
            except ServiceError as exc:
                self.message_user(request, str(exc), messages.WARNING)
            else:
                self.message_user(request, f"Revoked {key}.", messages.SUCCESS)

    # admin_view (ModelAdmin.get_urls) sends it with Cache-Control: no-store.
    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = NewKeyForm(request.POST if request.method == "POST" else None)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Add API key",
            "form": form,
        }
        if form.is_valid():
            days = form.cleaned_data["expires_in_days"]
            try:
                new = services.create_api_key(
                    user=form.cleaned_data["user"],
                    name=form.cleaned_data["name"],
                    expires_at=timezone.now() + timedelta(days=days) if days else None,
                    actor=request_user(request),
                )
            except ServiceError as exc:
                form.add_error(None, str(exc))
            else:
                context.update(title="New API key", key=new.key, secret=new.secret)
                return TemplateResponse(request, "admin/api/apikey/created.html", context)
        return TemplateResponse(request, "admin/api/apikey/add.html", context)
