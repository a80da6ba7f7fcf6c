"""The reviewer's pages. Each view serves its whole page, or with htmx the part that changed."""

from __future__ import annotations

import csv
import itertools
import json
from collections.abc import Iterable, Iterator
from typing import Any

import markdown
import nh3
from django.contrib import messages
from django.contrib.auth.decorators import login_required, permission_required
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.utils.safestring import SafeString, mark_safe
from django.views.decorators.http import require_GET, require_POST
from django.views.decorators.vary import vary_on_headers

from approvals import queries, services
from approvals.forms import DecisionForm
from approvals.models import Review
from workflows import engine, registry
from workflows.models import Thread

ACTIVE = (Thread.Status.QUEUED, Thread.Status.RUNNING)


def _user(request: HttpRequest) -> User:
    user = request.user
    assert isinstance(user, User)
    return user


def _htmx(request: HttpRequest) -> bool:
    return bool(getattr(request, "htmx", False))


def render_markdown(text: str) -> SafeString:
    """Markdown from a graph, as HTML with nothing that can run: nh3 keeps only safe tags
    and attributes, and links get rel=noopener."""
    html = markdown.markdown(text or "", extensions=["fenced_code", "tables"], output_format="html")
    return mark_safe(nh3.clean(html, link_rel="noopener noreferrer nofollow"))  # noqa: S308


# -- the queue -------------------------------------------------------------------------------


@require_GET
@login_required
@vary_on_headers("HX-Request")
def queue(request: HttpRequest) -> HttpResponse:
    filters = queries.QueueFilters.from_query(request.GET)
    context = {"queue": queries.queue(_user(request), filters)}
    template = "approvals/queue.html#results" if _htmx(request) else "approvals/queue.html"
    return render(request, template, context)


NOTHING_TICKED = "Tick the reviews to approve first."


@require_POST
@login_required
def bulk_approve(request: HttpRequest) -> HttpResponse:
    """Approve each selected review as it stands; report, per review, what became of it."""
    user = _user(request)
    ids = [int(value) for value in request.POST.getlist("review") if value.isdigit()][:100]
    if not ids:
        if _htmx(request):
            return render(request, "approvals/bulk_result.html", {"results": [], "notice": NOTHING_TICKED})
        messages.warning(request, NOTHING_TICKED)
        return HttpResponseRedirect(reverse("approvals:queue"))
    reviews = {review.pk: review for review in queries.visible_reviews(user).filter(pk__in=ids)}
    results: list[tuple[int, Review | None, str]] = []
    for pk in ids:
        review = reviews.get(pk)
        if review is None:
            results.append((pk, None, "not found"))
            continue
        results.append((pk, review, _approve_as_is(review, user)))
    context = {"results": results}
    if _htmx(request):
        response = render(request, "approvals/bulk_result.html", context)
        # The queue refreshes at once, so the approved rows leave it.
        response["HX-Trigger"] = "queue-changed"
        return response
    for _, review, outcome in results:
        messages.info(request, f"{review.thread if review else 'Review'}: {outcome}")
    return HttpResponseRedirect(reverse("approvals:queue"))


def _approve_as_is(review: Review, user: User) -> str:
    # Only an open review can need input: a decided or withdrawn one goes to the service,
    # which says by whom and when it was decided, or why it no longer applies.
    needs_input = review.kind == Review.Kind.INTERRUPT or "approve" not in services.allowed_actions(review)
    if review.status == Review.Status.OPEN and needs_input:
        return "needs input"
    try:
        services.decide(review=review, actor=user, action="approve", checkpoint_id=review.checkpoint_id)
    except services.AlreadyDecided as exc:
        when = timezone.localtime(exc.decision.created_at).strftime("%Y-%m-%d %H:%M")
        return f"already decided by {exc.decision.actor} at {when}"
    except services.DecisionRefused as exc:
        return str(exc)
    return "approved"


# -- one review ------------------------------------------------------------------------------


def _review_or_404(request: HttpRequest, pk: int) -> Review:
    return get_object_or_404(queries.visible_reviews(_user(request)), pk=pk)


def _moved_on(head: Any, review: Review) -> bool:
    return engine.checkpoint_id_of(head) != review.checkpoint_id


def _review_context(request: HttpRequest, review: Review, form: DecisionForm | None = None) -> dict[str, Any]:
    thread = review.thread
    spec = registry.get(thread.workflow)
    head = engine.head(thread.workflow, thread.thread_id)
    values = head.values if isinstance(head.values, dict) else {}
    if form is None:
        form = DecisionForm(review=review, workflow=spec, values=values)
    request_info = review.value[0] if review.kind == Review.Kind.AGENT_INBOX else None
    description = (request_info or {}).get("description") or (
        review.value.get("question", "") if isinstance(review.value, dict) else ""
    )
    return {
        "review": review,
        "thread": thread,
        "workflow": spec,
        "values": values,
        "editable": set(spec.editable),
        "form": form,
        "request_info": request_info,
        "description": render_markdown(description or spec.description),
        "holder": services.claim_holder(review),
        **_history(request, thread),
        "decision": getattr(review, "decision", None) if review.status == Review.Status.DECIDED else None,
        "stale": review.status == Review.Status.OPEN
        and engine.checkpoint_id_of(head) != review.checkpoint_id,
    }


# The newest checkpoints a page shows at first, and at most on asking for all: a long
# thread's full history is hundreds of KB that a reviewer rarely reads past the last steps.
HISTORY_SHOWN = 20
HISTORY_MAX = 200


def _history(request: HttpRequest, thread: Thread) -> dict[str, Any]:
    everything = request.GET.get("history") == "all"
    limit = HISTORY_MAX if everything else HISTORY_SHOWN
    entries = queries.history(thread, limit=limit + 1)
    return {"history": entries[:limit], "history_more": len(entries) > limit, "history_all": everything}


def _wants_history(request: HttpRequest) -> bool:
    return _htmx(request) and request.GET.get("history") == "all"


@require_GET
@login_required
@vary_on_headers("HX-Request")
def review_detail(request: HttpRequest, pk: int) -> HttpResponse:
    review = _review_or_404(request, pk)
    if _wants_history(request):
        return render(request, "approvals/review.html#history", _history(request, review.thread))
    # Opening the page claims the review (htmx, on load); the claim box a release swaps in
    # does not, or releasing would claim it straight back.
    context = {**_review_context(request, review), "claim_on_load": True}
    return render(request, "approvals/review.html", context)


@require_POST
@login_required
@vary_on_headers("HX-Request")
def review_claim(request: HttpRequest, pk: int) -> HttpResponse:
    review = _review_or_404(request, pk)
    try:
        review = services.claim_review(review=review, actor=_user(request))
    except services.DecisionRefused as exc:
        return _refused(request, review, exc)
    if _htmx(request):
        return render(
            request,
            "approvals/review.html#claim",
            {"review": review, "holder": services.claim_holder(review)},
        )
    return HttpResponseRedirect(reverse("approvals:review", args=[review.pk]))


@require_POST
@login_required
@vary_on_headers("HX-Request")
def review_release(request: HttpRequest, pk: int) -> HttpResponse:
    review = _review_or_404(request, pk)
    try:
        review = services.release_review(review=review, actor=_user(request))
    except services.DecisionRefused as exc:
        return _refused(request, review, exc)
    if _htmx(request):
        return render(request, "approvals/review.html#claim", {"review": review, "holder": None})
    return HttpResponseRedirect(reverse("approvals:queue"))


def _bound_form(request: HttpRequest, review: Review) -> DecisionForm:
    # An oversized body never gets here: approvals.middleware refuses it with a 413 first.
    spec = registry.get(review.thread.workflow)
    head = engine.head(review.thread.workflow, review.thread.thread_id)
    values = head.values if isinstance(head.values, dict) else {}
    return DecisionForm(request.POST, review=review, workflow=spec, values=values)


@require_POST
@login_required
@vary_on_headers("HX-Request")
def review_preview(request: HttpRequest, pk: int) -> HttpResponse:
    """The reviewer's own changes as a diff, before anything is submitted. Writes nothing."""
    review = _review_or_404(request, pk)
    form = _bound_form(request, review)
    changes = queries.diff(form.values, {**form.values, **form.state_updates()}) if form.is_valid() else []
    context = {**_review_context(request, review, form), "preview": changes, "previewed": True}
    template = "approvals/review.html#preview" if _htmx(request) else "approvals/review.html"
    return render(request, template, context, status=200 if form.is_valid() else 422)


@require_POST
@login_required
@vary_on_headers("HX-Request")
def review_decide(request: HttpRequest, pk: int) -> HttpResponse:
    review = _review_or_404(request, pk)
    form = _bound_form(request, review)
    if not form.is_valid():
        return _form_errors(request, review, form)
    try:
        services.decide(
            review=review,
            actor=_user(request),
            action=form.cleaned_data["action"],
            checkpoint_id=form.checkpoint_id,
            updates=form.state_updates(),
            response=form.answer(),
            comment=form.cleaned_data.get("comment", ""),
        )
    except services.InvalidDecision as exc:
        form.add_error(None, str(exc))
        return _form_errors(request, review, form)
    except services.DecisionRefused as exc:
        return _refused(request, review, exc)
    url = reverse("approvals:thread", args=[review.thread.public_id])
    if _htmx(request):
        response = HttpResponse(status=204)
        response["HX-Redirect"] = url
        return response
    messages.success(request, "Decision recorded; the thread is resuming.")
    return HttpResponseRedirect(url)


def _form_errors(request: HttpRequest, review: Review, form: DecisionForm, status: int = 422) -> HttpResponse:
    template = "approvals/review.html#decision-form" if _htmx(request) else "approvals/review.html"
    context = _review_context(request, review, form)
    return render(request, template, context, status=status)


def _refused(request: HttpRequest, review: Review, exc: Exception) -> HttpResponse:
    """409: the decision or claim cannot apply (decided by someone, stale, claimed); nothing changed."""
    context = {"review": review, "thread": review.thread, "message": str(exc)}
    template = "approvals/conflict.html#conflict" if _htmx(request) else "approvals/conflict.html"
    response = render(request, template, context, status=409)
    if _htmx(request):
        # Show the conflict where the form was, whichever element asked.
        response["HX-Retarget"] = "#decision"
        response["HX-Reswap"] = "innerHTML"
    return response


# -- a thread --------------------------------------------------------------------------------


@require_GET
@login_required
@vary_on_headers("HX-Request")
def thread_detail(request: HttpRequest, public_id: str) -> HttpResponse:
    thread = get_object_or_404(queries.visible_threads(_user(request)), public_id=public_id)
    if _wants_history(request):
        return render(request, "approvals/thread.html#history", _history(request, thread))
    head = engine.head(thread.workflow, thread.thread_id)
    context = {
        "thread": thread,
        "workflow": registry.get(thread.workflow),
        "values": head.values if isinstance(head.values, dict) else {},
        "next": head.next,
        "open_reviews": list(thread.reviews.filter(status=Review.Status.OPEN).order_by("id")),
        "runs": list(queries.thread_runs(thread)[:20]),
        "active": thread.status in ACTIVE,
    }
    if _htmx(request):
        if not context["active"]:
            # The last poll: the run has ended, so the history follows it, swapped out of band.
            context.update(_history(request, thread), history_oob=True)
        return render(request, "approvals/thread.html#status", context)
    context.update(_history(request, thread))
    return render(request, "approvals/thread.html", context)


# -- the audit trail (staff) -----------------------------------------------------------------

AUDIT_PERMISSION = "workflows.view_auditevent"


@require_GET
@login_required
@permission_required(AUDIT_PERMISSION, raise_exception=True)
@vary_on_headers("HX-Request")
def audit_log(request: HttpRequest) -> HttpResponse:
    filters = queries.AuditFilters.from_query(request.GET)
    context = {"audit": queries.audit_page(filters)}
    template = "approvals/audit_log.html#results" if _htmx(request) else "approvals/audit_log.html"
    return render(request, template, context)


@require_GET
@login_required
@permission_required(AUDIT_PERMISSION, raise_exception=True)
@vary_on_headers("HX-Request")
def audit_thread(request: HttpRequest, public_id: str) -> HttpResponse:
    thread = get_object_or_404(Thread, public_id=public_id)
    filters = queries.AuditFilters.from_query(request.GET)
    # Only the cursor and page size apply here; the thread is the filter.
    filters = queries.AuditFilters(
        thread=thread.public_id,
        before=filters.before,
        after=filters.after,
        per_page=filters.per_page,
        errors=filters.errors,
    )
    context = {
        "thread": thread,
        "audit": queries.audit_page(filters, oldest_first=True),
        # An auditor outside the workflow's reviewer group would get a 404 there: no dead link.
        "thread_visible": queries.visible_threads(_user(request)).filter(pk=thread.pk).exists(),
    }
    template = "approvals/audit_thread.html#results" if _htmx(request) else "approvals/audit_thread.html"
    return render(request, template, context)


@require_GET
@login_required
@permission_required(AUDIT_PERMISSION, raise_exception=True)
def audit_export_csv(request: HttpRequest) -> HttpResponseBase:
    return _audit_export(request, "csv")


@require_GET
@login_required
@permission_required(AUDIT_PERMISSION, raise_exception=True)
def audit_export_jsonl(request: HttpRequest) -> HttpResponseBase:
    return _audit_export(request, "jsonl")


class _Echo:
    """A file for csv.writer that hands each line back instead of keeping it."""

    def write(self, value: str) -> str:
        return value


def _export_record(row: tuple[Any, ...]) -> dict[str, Any]:
    record = dict(zip(queries.EXPORT_COLUMNS, row, strict=True))
    record["created_at"] = record["created_at"].isoformat()
    record["thread"] = str(record["thread"]) if record["thread"] else None
    return record


def _csv_lines(rows: Iterable[tuple[Any, ...]]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(queries.EXPORT_COLUMNS)
    for row in rows:
        record = _export_record(row)
        record["data"] = json.dumps(record["data"], sort_keys=True, ensure_ascii=False, default=str)
        yield writer.writerow(["" if value is None else value for value in record.values()])


def _jsonl_lines(rows: Iterable[tuple[Any, ...]]) -> Iterator[str]:
    for row in rows:
        yield json.dumps(_export_record(row), sort_keys=False, ensure_ascii=False, default=str) + "\n"


def _batched(lines: Iterator[str], size: int = 500) -> Iterator[str]:
    # One write per few hundred rows, not one per row: the server sends each chunk separately.
    return ("".join(batch) for batch in itertools.batched(lines, size))


def _audit_export(request: HttpRequest, kind: str) -> HttpResponseBase:
    filters = queries.AuditFilters.from_query(request.GET)
    if filters.errors:
        # A filter dropped from an export would silently widen it: refuse instead.
        return HttpResponse(
            "\n".join(filters.errors) + "\n", status=400, content_type="text/plain; charset=utf-8"
        )
    rows = queries.audit_export(filters)
    lines = _csv_lines(rows) if kind == "csv" else _jsonl_lines(rows)
    content_type = "text/csv; charset=utf-8" if kind == "csv" else "application/jsonl; charset=utf-8"
    response = StreamingHttpResponse(_batched(lines), content_type=content_type)
    stamp = timezone.localtime().strftime("%Y-%m-%d")
    response["Content-Disposition"] = f'attachment; filename="signoff-audit-{stamp}.{kind}"'
    return response
