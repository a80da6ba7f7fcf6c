"""The admin's view of notifications: every send, read-only, and which webhook endpoints also get
review notifications as chat messages (set through notifications.services, audited)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse

from api.models import WebhookEndpoint
from approvals.http import request_user
from notifications import services
from notifications.models import ChatEndpoint, Send
from workflows.admin import ReadOnly
from workflows.services import ServiceError

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
class SendAdmin(ReadOnly, admin.ModelAdmin[Send]):
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


class ChatEndpointForm(forms.Form):
    endpoint = forms.ModelChoiceField(
        queryset=WebhookEndpoint.objects.order_by("workflow", "id"),
        help_text="a webhook endpoint of the workflow (API → Webhook endpoints)",
    )
    active = forms.BooleanField(required=False, initial=True, label="Send review notifications")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        endpoint = data.get("endpoint")
        if data.get("active") and endpoint is not None and not endpoint.active:
            raise forms.ValidationError("That webhook endpoint is turned off: turn it on first.")
        return data


@admin.register(ChatEndpoint)
class ChatEndpointAdmin(admin.ModelAdmin[ChatEndpoint]):
    """Add and change go through notifications.services (a durable transaction, audited), not
    the admin's own save, which would run inside the admin's transaction."""

    list_display = ["endpoint", "active", "created_at"]
    list_select_related = ["endpoint"]

    def has_delete_permission(self, request: HttpRequest, obj: ChatEndpoint | None = None) -> bool:
        return False

    def _form_view(self, request: HttpRequest, form: ChatEndpointForm, title: str) -> HttpResponse:
        if form.is_valid():
            try:
                services.set_chat_notifications(
                    endpoint=form.cleaned_data["endpoint"],
                    active=form.cleaned_data["active"],
                    actor=request_user(request),
                )
            except ServiceError as exc:
                form.add_error(None, str(exc))
            else:
                self.message_user(request, "Saved the chat notifications.", messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:notifications_chatendpoint_changelist"))
        context = {**self.admin_site.each_context(request), "opts": self.opts, "title": title}
        context |= {"form": form, "button": "Save"}
        return TemplateResponse(request, "admin/notifications/chatendpoint/form.html", context)

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = ChatEndpointForm(request.POST if request.method == "POST" else None)
        return self._form_view(request, form, "Send review notifications to a chat")

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        chat = self.get_object(request, object_id)
        if chat is None:
            raise Http404(f"no chat notification endpoint {object_id}")
        if not self.has_change_permission(request, chat):
            raise PermissionDenied
        data = request.POST.copy() if request.method == "POST" else None
        if data is not None:
            # The endpoint stays the one this row is for.
            data["endpoint"] = str(chat.endpoint_id)
        form = ChatEndpointForm(data, initial={"endpoint": chat.endpoint_id, "active": chat.active})
        form.fields["endpoint"].disabled = True
        return self._form_view(request, form, f"Chat notifications of {chat.endpoint}")
