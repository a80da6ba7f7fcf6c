"""Who may touch what through the API: the threads a key sees, and the permissions that
starting, cancelling and rolling back need.

A key acts as its user (`api.auth`). It sees the threads of the workflows its user reviews
(`approvals.queries.visible_threads`, the reviewer pages' rule) and the NEW threads (no
workflow yet) its user made; anything else is a 404 that names the id, never a 403 that would
confirm the thread exists. A visible thread whose operation needs a permission the user lacks
is a 403 naming the permission.
"""

from __future__ import annotations

import uuid

from django.db.models import Q, QuerySet
from django.http import HttpRequest
from ninja.errors import HttpError

from approvals.http import request_user
from approvals.queries import thread_scope
from workflows.models import Run, Thread

# The operations beyond reading and deciding, and the permission each needs
# (workflows.models.Thread.Meta.permissions).
PERMISSIONS = {
    "start": "workflows.start_thread",
    "cancel": "workflows.cancel_thread",
    "rollback": "workflows.rollback_thread",
    "retry": "workflows.retry_thread",
}


def visible_threads(request: HttpRequest) -> QuerySet[Thread]:
    user = request_user(request)
    scope = thread_scope(user)
    if scope is None:
        return Thread.objects.all()
    # A review escalated to the user's group brings its thread into view (approvals.queries).
    return Thread.objects.filter(scope | Q(status=Thread.Status.NEW, created_by=user))


def thread_or_404(request: HttpRequest, thread_id: str | uuid.UUID) -> Thread:
    """The visible thread with this LangGraph thread_id, or a 404 (also for an id that is not
    a UUID: LangGraph's thread ids are)."""
    try:
        public_id = thread_id if isinstance(thread_id, uuid.UUID) else uuid.UUID(str(thread_id))
    except ValueError:
        raise HttpError(404, f"Thread '{thread_id}' not found") from None
    thread = visible_threads(request).filter(public_id=public_id).first()
    if thread is None:
        raise HttpError(404, f"Thread '{thread_id}' not found")
    return thread


def run_or_404(request: HttpRequest, thread_id: str, run_id: str | uuid.UUID) -> tuple[Thread, Run]:
    """The visible thread and its run with this LangGraph run_id, or a 404 naming what is not
    found (also for a run id that is not a UUID)."""
    thread = thread_or_404(request, thread_id)
    try:
        public_id = run_id if isinstance(run_id, uuid.UUID) else uuid.UUID(str(run_id))
    except ValueError:
        raise HttpError(404, f"Run '{run_id}' not found") from None
    run = Run.objects.filter(thread=thread, public_id=public_id).first()
    if run is None:
        raise HttpError(404, f"Run '{run_id}' not found")
    run.thread = thread
    return thread, run


def require(request: HttpRequest, operation: str) -> None:
    """A 403 naming the permission unless the key's user has the one `operation` needs."""
    permission = PERMISSIONS[operation]
    if not request_user(request).has_perm(permission):
        raise HttpError(403, f"this key's user lacks the permission to {operation} threads ({permission})")
