from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from workflows.models import Checkpoint


@admin.register(Checkpoint)
class CheckpointAdmin(admin.ModelAdmin[Checkpoint]):
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

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Checkpoint | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Checkpoint | None = None) -> bool:
        return False
