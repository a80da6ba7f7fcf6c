"""The API-key and webhook admin. Keys: an admin makes a key for a user and sees it once,
revokes keys, and sees each key's expiry and last use. No one sees a key's secret again: only its
hash is stored. Webhook endpoints: the same, their signing secret shown once (below).

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
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from api import services, webhooks
from api.models import NAME_MAX_LENGTH, URL_MAX_LENGTH, ApiKey, WebhookDelivery, WebhookEndpoint
from approvals.http import request_user
from workflows import registry
from workflows.admin import ReadOnly
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


# -- webhooks ----------------------------------------------------------------------------------


def _workflow_choices() -> list[tuple[str, str]]:
    return [
        (spec.name, f"{spec.title} ({spec.name})")
        for spec in sorted(registry.all_workflows(), key=lambda s: s.name)
    ]


def _allowed_url(url: str) -> str:
    refusal = webhooks.url_refusal(url.strip())
    if refusal:
        raise forms.ValidationError(refusal)
    return url.strip()


class EndpointForm(forms.Form):
    workflow = forms.ChoiceField(choices=_workflow_choices, help_text="whose runs and reviews are sent")
    url = forms.CharField(
        max_length=URL_MAX_LENGTH,
        help_text="an http(s) URL that SIGNOFF_WEBHOOK_ALLOWED_URLS allows",
        widget=forms.URLInput(attrs={"size": 80}),
    )
    run_ended = forms.BooleanField(
        required=False, initial=True, label="Run ended", help_text="POST run.ended"
    )
    review_opened = forms.BooleanField(
        required=False, initial=True, label="Review opened", help_text="POST review.opened"
    )

    def clean_url(self) -> str:
        return _allowed_url(self.cleaned_data["url"])

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if not cleaned.get("run_ended") and not cleaned.get("review_opened"):
            raise forms.ValidationError("Choose at least one event to send.")
        return cleaned


class ChangeEndpointForm(EndpointForm):
    active = forms.BooleanField(required=False, help_text="off: nothing more is sent, retries stop")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The workflow is what the endpoint is for; another workflow is another endpoint.
        del self.fields["workflow"]

    def clean_url(self) -> str:
        # An endpoint being turned off may keep a URL the list no longer allows; the service
        # checks the rest.
        url: str = self.cleaned_data["url"].strip()
        if self.data.get("active") or url != self.initial.get("url"):
            return _allowed_url(url)
        return url


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin[WebhookEndpoint]):
    """Made on the add page (the secret shown once, as a key's is) and changed on our own change
    page: both call `api.webhooks`, whose durable, audited transactions the admin's own model
    forms, inside a transaction of their own, could not. Never deleted: turn one off."""

    list_display = ("workflow", "url", "events", "active", "created_at", "created_by")
    list_filter = ["active", "workflow"]
    search_fields = ["workflow", "url"]
    list_select_related = ["created_by"]

    @admin.display(description="events")
    def events(self, obj: WebhookEndpoint) -> str:
        return ", ".join(obj.events())

    def has_delete_permission(self, request: HttpRequest, obj: WebhookEndpoint | None = None) -> bool:
        return False

    def _context(self, request: HttpRequest, **extra: Any) -> dict[str, Any]:
        return {**self.admin_site.each_context(request), "opts": self.opts, **extra}

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = EndpointForm(request.POST if request.method == "POST" else None)
        if form.is_valid():
            try:
                new = webhooks.create_endpoint(
                    workflow=form.cleaned_data["workflow"],
                    url=form.cleaned_data["url"],
                    run_ended=form.cleaned_data["run_ended"],
                    review_opened=form.cleaned_data["review_opened"],
                    actor=request_user(request),
                )
            except ServiceError as exc:
                form.add_error(None, str(exc))
            else:
                context = self._context(
                    request, title="New webhook endpoint", endpoint=new.endpoint, secret=new.secret
                )
                return TemplateResponse(request, "admin/api/webhookendpoint/created.html", context)
        context = self._context(
            request, title="Add webhook endpoint", form=form, button="Create the endpoint"
        )
        return TemplateResponse(request, "admin/api/webhookendpoint/form.html", context)

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        endpoint = self.get_object(request, object_id)
        if endpoint is None:
            raise Http404(f"no webhook endpoint {object_id}")
        if not self.has_change_permission(request, endpoint):
            raise PermissionDenied
        initial = {
            "url": endpoint.url,
            "run_ended": endpoint.run_ended,
            "review_opened": endpoint.review_opened,
            "active": endpoint.active,
        }
        form = ChangeEndpointForm(request.POST if request.method == "POST" else None, initial=initial)
        if form.is_valid():
            try:
                webhooks.change_endpoint(
                    endpoint=endpoint,
                    url=form.cleaned_data["url"],
                    run_ended=form.cleaned_data["run_ended"],
                    review_opened=form.cleaned_data["review_opened"],
                    active=form.cleaned_data["active"],
                    actor=request_user(request),
                )
            except ServiceError as exc:
                form.add_error(None, str(exc))
            else:
                self.message_user(request, f"Changed {endpoint.workflow}'s endpoint.", messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:api_webhookendpoint_changelist"))
        context = self._context(
            request,
            title=f"Change the webhook endpoint of {endpoint.workflow}",
            form=form,
            button="Save",
            endpoint=endpoint,
        )
        return TemplateResponse(request, "admin/api/webhookendpoint/form.html", context)


DELIVERY_COLUMNS = (
    "id",
    "event",
    "status",
    "url",
    "attempts",
    "last_status_code",
    "created_at",
    "next_attempt_at",
    "finished_at",
)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnly, admin.ModelAdmin[WebhookDelivery]):
    """Every delivery and how it went, read-only: the worker alone writes them."""

    list_display = DELIVERY_COLUMNS
    list_filter = ["status", "event"]
    search_fields = ["=message_id", "url", "=thread__public_id"]
    list_select_related = ["endpoint"]
    ordering = ["-id"]
    show_full_result_count = False
    fields = readonly_fields = (
        *DELIVERY_COLUMNS,
        "message_id",
        "endpoint",
        "thread",
        "run",
        "review",
        "last_error",
        "body",
    )
