from __future__ import annotations

from django.contrib import admin

from approvals.models import Decision, Review
from workflows.admin import ReadOnly, ReadOnlyAdmin


class DecisionInline(ReadOnly, admin.StackedInline[Decision, Review]):
    model = Decision
    extra = 0
    fields = readonly_fields = (
        "actor",
        "action",
        "updates",
        "response",
        "comment",
        "created_at",
        "applied_at",
    )


@admin.register(Review)
class ReviewAdmin(ReadOnlyAdmin):
    """Reviews open and close with their threads; decisions are taken through approvals.services."""

    list_display = ["id", "thread", "node", "kind", "status", "claimed_by", "created_at"]
    list_filter = ["status", "kind", "workflow"]
    list_select_related = ["thread", "claimed_by"]
    search_fields = ["=thread__public_id", "thread__title", "node"]
    ordering = ["-id"]
    show_full_result_count = False
    fields = readonly_fields = (
        "thread",
        "node",
        "kind",
        "status",
        "interrupt_id",
        "checkpoint_id",
        "value",
        "claimed_by",
        "claim_expires_at",
        "created_at",
        "closed_at",
    )
    inlines = [DecisionInline]
