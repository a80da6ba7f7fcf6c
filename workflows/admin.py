"""The engine's history in the admin, read-only. The Thread admin, which needs reviews and
their queries, lives in approvals/admin.py (imports point down only)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from workflows import audit
from workflows.models import AuditEvent, Checkpoint, Run, Thread


class ReadOnly:
    """History is written by the services alone; the admin only reads it."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ReadOnlyAdmin(ReadOnly, admin.ModelAdmin[Any]):
    pass


class RunInline(ReadOnly, admin.TabularInline[Run, Thread]):
    model = Run
    extra = 0
    fields = readonly_fields = (
        "id",
        "kind",
        "status",
        "attempts",
        "created_at",
        "started_at",
        "finished_at",
        "lease_expires_at",
        "lease_holder",
        "error",
    )
    ordering = ["-id"]
    show_change_link = True


@admin.register(Run)
class RunAdmin(ReadOnlyAdmin):
    list_display = ["id", "thread", "kind", "status", "attempts", "created_at", "finished_at"]
    list_filter = ["status", "kind"]
    list_select_related = ["thread"]
    search_fields = ["=thread__public_id"]
    ordering = ["-id"]
    show_full_result_count = False
    fields = readonly_fields = (
        "thread",
        "kind",
        "status",
        "command",
        "from_checkpoint_id",
        "attempts",
        "lease_token",
        "lease_expires_at",
        "lease_holder",
        "error",
        "created_by",
        "created_at",
        "enqueued_at",
        "started_at",
        "finished_at",
    )


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ["id", "created_at", "actor_label", "action", "thread"]
    list_filter = ["action", "created_at"]
    list_select_related = ["thread"]
    search_fields = ["=thread__public_id", "actor_label"]
    ordering = ["-id"]
    show_full_result_count = False

    # The trail's one access rule, as on its pages: Django's default would also admit
    # change_auditevent, and staff without the permission.
    def has_view_permission(self, request: HttpRequest, obj: AuditEvent | None = None) -> bool:
        return audit.can_read(request.user)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return audit.can_read(request.user)

    fields = readonly_fields = (
        "created_at",
        "actor",
        "actor_label",
        "action",
        "thread",
        "run",
        "data",
        "prev_hash",
        "hash",
    )


@admin.register(Checkpoint)
class CheckpointAdmin(ReadOnlyAdmin):
    """Checkpoints are LangGraph's history: readable here, written only by DjangoSaver."""

    list_display = ["thread_id", "checkpoint_ns", "step", "source", "checkpoint_id", "created_at"]
    list_filter = ["created_at"]
    search_fields = ["=thread_id", "=checkpoint_id"]
    ordering = ["-checkpoint_id"]
    show_full_result_count = False
    fields = readonly_fields = (
        "thread_id",
        "checkpoint_ns",
        "checkpoint_id",
        "parent_checkpoint_id",
        "created_at",
        "metadata",
        "checkpoint",
    )

    @admin.display(description="step")
    def step(self, obj: Checkpoint) -> Any:
        return obj.metadata.get("step")

    @admin.display(description="source")
    def source(self, obj: Checkpoint) -> Any:
        return obj.metadata.get("source")
