"""The admin of reviews and of threads. The Thread admin lives here, not in workflows/admin.py,
because it shows reviews and uses approvals' queries (imports point down only).

Threads are operated from their admin without a shell: retry, cancel and roll back to a
checkpoint. Every write goes through `workflows.services`, which audits it; this module
reads, asks for confirmation and reports.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q, QuerySet
from django.forms import Form
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.text import capfirst

from approvals import queries
from approvals.forms import CancelForm, RollbackForm
from approvals.http import request_user
from approvals.models import Approval, Decision, Review
from workflows import registry, services
from workflows.admin import ReadOnly, ReadOnlyAdmin, RunInline
from workflows.models import Thread

NOT_RUN_YET = (
    "This thread was made through the HTTP API and has not run yet: it has no workflow and no "
    "checkpoints until its first run."
)

# Thread statuses from which there is nothing left to cancel.
FINISHED = (Thread.Status.COMPLETED, Thread.Status.CANCELLED)


class DecisionInline(ReadOnly, admin.StackedInline[Decision, Review]):
    model = Decision
    extra = 0
    fields = readonly_fields = (
        "actor",
        "actor_label",
        "action",
        "updates",
        "response",
        "comment",
        "created_at",
        "applied_at",
    )


class ApprovalInline(ReadOnly, admin.TabularInline[Approval, Review]):
    """Partial approvals of a four-eyes review, superseded ones too (written by decide)."""

    model = Approval
    extra = 0
    fields = readonly_fields = (
        "actor",
        "group",
        "updates",
        "edited",
        "comment",
        "created_at",
        "superseded_at",
        "superseded_by",
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
        "due_at",
        "reviewer_group",
        "due_policy",
        "escalated_from",
        "escalated_at",
        "due_applied_at",
        "overdue_notified_at",
        "reminded_at",
        "next_reminder_at",
        "due_soon_notified_at",
        "follow_up_at",
        "follow_up_by",
    )
    inlines = [ApprovalInline, DecisionInline]


def _label(thread: Thread) -> str:
    # Titles repeat (a workflow's title is the default), so results name the thread's id too.
    return f"{thread} (#{thread.pk})"


@admin.register(Thread)
class ThreadAdmin(ReadOnly, admin.ModelAdmin[Thread]):
    """Threads, read-only, plus the operations an admin repairs them with: retry, cancel,
    roll back. Each needs its own permission (`workflows.retry_thread`, …)."""

    list_display = ["title", "workflow", "status", "created_at", "updated_at", "open_reviews"]
    list_filter = ["status", "workflow"]
    search_fields = ["=public_id", "title"]
    ordering = ["-updated_at"]
    show_full_result_count = False
    fields = readonly_fields = (
        "public_id",
        "workflow",
        "title",
        "status",
        "input",
        "metadata",
        "error",
        "created_by",
        "created_at",
        "updated_at",
    )
    inlines = [RunInline]
    actions = ["retry_threads", "cancel_threads"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Thread]:
        # Counted in the list's one query, not one query per row.
        return (
            super()
            .get_queryset(request)
            .annotate(open_review_count=Count("reviews", filter=Q(reviews__status=Review.Status.OPEN)))
        )

    @admin.display(description="open reviews", ordering="open_review_count")
    def open_reviews(self, obj: Thread) -> int:
        return int(getattr(obj, "open_review_count", 0))

    # -- permissions (named for @admin.action(permissions=[...])) --------------------------------

    def has_retry_permission(self, request: HttpRequest, obj: Thread | None = None) -> bool:
        return request.user.has_perm("workflows.retry_thread")

    def has_cancel_permission(self, request: HttpRequest, obj: Thread | None = None) -> bool:
        return request.user.has_perm("workflows.cancel_thread")

    def has_rollback_permission(self, request: HttpRequest, obj: Thread | None = None) -> bool:
        return request.user.has_perm("workflows.rollback_thread")

    def _thread(self, request: HttpRequest, object_id: str, operation: str) -> Thread:
        """The thread of an operation's URL: 403 without the operation's permission (before
        looking the thread up, so no id is confirmed to exist), 404 when there is none."""
        allowed = getattr(self, f"has_{operation}_permission")(request)
        if not (allowed and self.has_view_permission(request)):
            raise PermissionDenied
        thread = self.get_object(request, unquote(object_id))
        if thread is None:
            raise Http404("No such thread.")
        return thread

    # -- URLs -----------------------------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        name = f"{self.opts.app_label}_{self.opts.model_name}"
        return [
            path(
                "<path:object_id>/rollback/<str:checkpoint_id>/",
                wrap(self.rollback_view),
                name=f"{name}_rollback",
            ),
            path("<path:object_id>/retry/", wrap(self.retry_view), name=f"{name}_retry"),
            path("<path:object_id>/cancel/", wrap(self.cancel_view), name=f"{name}_cancel"),
            *super().get_urls(),
        ]

    def _change_url(self, thread: Thread) -> str:
        return reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_change", args=[thread.pk])

    def _context(self, request: HttpRequest, title: str, **extra: Any) -> dict[str, Any]:
        return {**self.admin_site.each_context(request), "opts": self.opts, "title": title, **extra}

    # -- the detail page ------------------------------------------------------------------------

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        extra = dict(extra_context or {})
        thread = self.get_object(request, unquote(object_id))
        if thread is not None and self.has_view_permission(request, thread):
            if not thread.workflow:
                # Made through the HTTP API (POST /api/threads): its first run names the workflow.
                extra["timeline_missing"] = NOT_RUN_YET
            else:
                try:
                    extra["timeline"] = queries.timeline(thread)
                except LookupError:
                    # The workflow is no longer registered: its graph cannot read the checkpoints.
                    extra["timeline_missing"] = f"The workflow {thread.workflow!r} is not registered."
            extra["can_rollback"] = self.has_rollback_permission(request, thread)
            extra["can_retry"] = self.has_retry_permission(request) and thread.status == Thread.Status.FAILED
            extra["can_cancel"] = self.has_cancel_permission(request) and thread.status not in FINISHED
        return super().change_view(request, object_id, form_url, extra)

    # -- rollback -------------------------------------------------------------------------------

    def rollback_view(self, request: HttpRequest, object_id: str, checkpoint_id: str) -> HttpResponse:
        thread = self._thread(request, object_id, "rollback")
        try:
            workflow = registry.get(thread.workflow)
            preview = queries.rollback_preview(thread, checkpoint_id)
        except LookupError:
            raise Http404(f"The workflow {thread.workflow!r} is not registered.") from None
        if preview is None:
            raise Http404("This checkpoint is not one of the thread's that can be rolled back to.")
        posted = request.method == "POST"
        form = RollbackForm(request.POST if posted else None, workflow=workflow, values=preview.values)
        status = 200
        if posted:
            status = 422
            if form.is_valid():
                try:
                    run = services.rollback_thread(
                        thread=thread,
                        actor=request_user(request),
                        checkpoint_id=checkpoint_id,
                        reason=form.cleaned_data["reason"],
                        updates=form.corrections(),
                    )
                except services.ThreadBusy as exc:
                    if preview.active_run is None:  # else the page says so already
                        form.add_error(None, f"{capfirst(str(exc))}.")
                    status = 409
                except services.ServiceError as exc:
                    form.add_error(None, f"{capfirst(str(exc))}.")
                else:
                    self.message_user(
                        request,
                        f"Rolled back to step {preview.step} (checkpoint {checkpoint_id}); "
                        f"run {run.pk} is queued.",
                        messages.SUCCESS,
                    )
                    return HttpResponseRedirect(self._change_url(thread))
        context = self._context(
            request,
            f"Roll back {thread}",
            thread=thread,
            preview=preview,
            form=form,
            change_url=self._change_url(thread),
        )
        return TemplateResponse(request, "admin/workflows/thread/rollback.html", context, status=status)

    # -- retry and cancel -----------------------------------------------------------------------

    def _retry(self, request: HttpRequest, thread: Thread) -> None:
        if thread.status != Thread.Status.FAILED:
            self.message_user(
                request, f"{_label(thread)}: {thread.status}, not failed: skipped.", messages.WARNING
            )
            return
        try:
            run = services.retry_thread(thread=thread, actor=request_user(request))
        except services.ServiceError as exc:
            self.message_user(request, f"{_label(thread)}: not retried: {exc}.", messages.ERROR)
        else:
            self.message_user(
                request, f"{_label(thread)}: retried; run {run.pk} is queued.", messages.SUCCESS
            )

    def _cancel(self, request: HttpRequest, thread: Thread, reason: str) -> None:
        if thread.status in FINISHED:
            self.message_user(
                request, f"{_label(thread)}: already {thread.status}: skipped.", messages.WARNING
            )
            return
        try:
            services.cancel_thread(thread=thread, actor=request_user(request), reason=reason)
        except services.ServiceError as exc:
            self.message_user(request, f"{_label(thread)}: not cancelled: {exc}.", messages.ERROR)
        else:
            self.message_user(request, f"{_label(thread)}: cancelled.", messages.SUCCESS)

    def _confirm(
        self,
        request: HttpRequest,
        *,
        operation: str,
        threads: list[Thread],
        form: Form | None = None,
        action: str = "",
        status: int = 200,
    ) -> TemplateResponse:
        """The page that asks before an operation; it POSTs back to where it came from."""
        single = threads[0] if not action else None
        context = self._context(
            request,
            f"{operation.capitalize()} {single}" if single else f"{operation.capitalize()} threads",
            operation=operation,
            threads=threads,
            thread=single,
            form=form,
            action=action,
            action_checkbox_name=helpers.ACTION_CHECKBOX_NAME,
            back_url=self._change_url(single)
            if single
            else reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_changelist"),
        )
        return TemplateResponse(request, "admin/workflows/thread/confirm.html", context, status=status)

    def retry_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        thread = self._thread(request, object_id, "retry")
        if request.method != "POST":
            return self._confirm(request, operation="retry", threads=[thread])
        self._retry(request, thread)
        return HttpResponseRedirect(self._change_url(thread))

    def cancel_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        thread = self._thread(request, object_id, "cancel")
        if request.method != "POST":
            return self._confirm(request, operation="cancel", threads=[thread], form=CancelForm())
        form = CancelForm(request.POST)
        if not form.is_valid():
            return self._confirm(request, operation="cancel", threads=[thread], form=form, status=422)
        self._cancel(request, thread, form.cleaned_data["reason"])
        return HttpResponseRedirect(self._change_url(thread))

    @admin.action(description="Retry selected failed threads", permissions=["retry"])
    def retry_threads(self, request: HttpRequest, queryset: QuerySet[Thread]) -> HttpResponse | None:
        threads = list(queryset.order_by("pk"))
        if request.POST.get("post") != "yes":
            return self._confirm(request, operation="retry", threads=threads, action="retry_threads")
        for thread in threads:
            self._retry(request, thread)
        return None

    @admin.action(description="Cancel selected threads", permissions=["cancel"])
    def cancel_threads(self, request: HttpRequest, queryset: QuerySet[Thread]) -> HttpResponse | None:
        threads = list(queryset.order_by("pk"))
        if request.POST.get("post") != "yes":
            return self._confirm(
                request, operation="cancel", threads=threads, form=CancelForm(), action="cancel_threads"
            )
        form = CancelForm({"reason": request.POST.get("reason", "")})
        if not form.is_valid():
            return self._confirm(
                request, operation="cancel", threads=threads, form=form, action="cancel_threads", status=422
            )
        for thread in threads:
            self._cancel(request, thread, form.cleaned_data["reason"])
        return None
