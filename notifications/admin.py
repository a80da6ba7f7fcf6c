"""The admin's view of notifications: every send, read-only, and which webhook endpoints also get
review notifications as chat messages (set through notifications.services, audited)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest

from approvals.http import request_user
from notifications import services
from notifications.models import ChatEndpoint, Send

SEND_COLUMNS = (
    "created_at",
    "kind",
    "channel",
    "address",
    "review",
    "status",
    "attempts",
    "sent_at",
)


@admin.register(Send)
class SendAdmin(admin.ModelAdmin[Send]):
    """Every notification and how it went, read-only: the worker alone writes them."""

    list_display = SEND_COLUMNS
    list_filter = ["status", "kind", "channel"]
    search_fields = ["=message_id", "address"]
    ordering = ["-id"]
    show_full_result_count = False
    fields = readonly_fields = (
        *SEND_COLUMNS,
        "recipient",
        "endpoint",
        "message_id",
        "subject",
        "digest_date",
        "details",
        "last_error",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Send | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Send | None = None) -> bool:
        return False


class ChatEndpointForm(forms.ModelForm[ChatEndpoint]):
    class Meta:
        model = ChatEndpoint
        fields = ["endpoint", "active"]
        help_texts = {
            "endpoint": "a webhook endpoint of the workflow; its URL gets a Slack/Teams-compatible "
            "message (signed like its other webhooks) when a review opens, is escalated or is overdue",
        }

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        endpoint = data.get("endpoint") or getattr(self.instance, "endpoint", None)
        if data.get("active") and endpoint is not None and not endpoint.active:
            raise forms.ValidationError("That webhook endpoint is turned off: turn it on first.")
        return data


@admin.register(ChatEndpoint)
class ChatEndpointAdmin(admin.ModelAdmin[ChatEndpoint]):
    form = ChatEndpointForm
    list_display = ["endpoint", "active", "created_at"]
    list_select_related = ["endpoint"]

    def get_readonly_fields(self, request: HttpRequest, obj: ChatEndpoint | None = None) -> Any:
        return ["endpoint"] if obj is not None else []

    def has_delete_permission(self, request: HttpRequest, obj: ChatEndpoint | None = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: ChatEndpoint, form: Any, change: bool) -> None:
        # The service writes (audited); the admin's own save is never called. The form has
        # checked what the service would refuse.
        saved = services.set_chat_notifications(
            endpoint=obj.endpoint, active=obj.active, actor=request_user(request)
        )
        obj.pk = saved.pk
