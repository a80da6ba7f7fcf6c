"""The reviewer's pages. Each view serves its whole page, or with htmx the part that changed."""

from __future__ import annotations

import csv
import dataclasses
import functools
import itertools
import json
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import markdown
import nh3
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.utils.safestring import SafeString, mark_safe
from django.utils.text import capfirst
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import HttpResponseClientRedirect, reswap, retarget
from langgraph.types import StateSnapshot

from approvals import metrics, queries, services
from approvals.forms import DecisionForm, FollowUpForm, state_rows
from approvals.http import HtmxHttpRequest, request_user
from approvals.models import Approval, Decision, Review, SavedFilter
from workflows import engine, registry
from workflows import services as engine_services
from workflows.models import Thread
from workflows.sealed import SealError

ACTIVE = (Thread.Status.QUEUED, Thread.Status.RUNNING)


def render_markdown(text: str) -> SafeString:
    """Markdown from a graph, as HTML with nothing that can run: nh3 keeps only safe tags
    and attributes, and links get rel=noopener."""
    html = markdown.markdown(text or "", extensions=["fenced_code", "tables"], output_format="html")
    return mark_safe(nh3.clean(html, link_rel="noopener noreferrer nofollow"))  # noqa: S308


# -- threads whose state cannot be shown -------------------------------------------------------


class _Unavailable(Exception):
    """A thread's page cannot be shown: its workflow is gone (404) or its checkpoint cannot be
    read (409). The message says which, for the person who asked."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


UNREADABLE_MESSAGE = (
    "This thread's checkpoint cannot be read: its stored state was changed behind Signoff's back "
    "or sealed with another encryption key. Nothing can be shown or decided here until an "
    "administrator repairs or rolls back the thread; this has been recorded in the audit trail."
)
# A thread made through the HTTP API before its first run, which names its workflow.
NOT_RUN_YET = (
    "This thread was made through the HTTP API and has not run yet: it has no workflow and no "
    "state to show until its first run."
)
SEALED_MESSAGE = (
    "This thread's stored data cannot be read: it was written before SIGNOFF_ENCRYPTION_KEY was "
    "set, sealed with another key, or changed behind Signoff's back. Nothing can be shown or "
    "decided here until an administrator repairs it."
)


@contextmanager
def _reading(request: HtmxHttpRequest, thread: Thread) -> Iterator[registry.Workflow]:
    """The thread's workflow, for a block that reads its checkpoints. A workflow no longer
    registered is a 404 page. A checkpoint that cannot be decoded is a 409 page, not a 500:
    the request is sound and the server works, but the thread's stored state conflicts with
    what the saver can read, until an admin acts (it is audited, once per head checkpoint)."""
    if not thread.workflow:
        raise _Unavailable(NOT_RUN_YET, 404)
    try:
        spec = registry.get(thread.workflow)
    except LookupError:
        raise _Unavailable(services.unregistered_message(thread.workflow), 404) from None
    try:
        yield spec
    except engine.UNREADABLE as exc:
        engine_services.report_unreadable_checkpoint(thread=thread, actor=request_user(request), error=exc)
        raise _Unavailable(UNREADABLE_MESSAGE, 409) from None


def _unavailable_page(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    @functools.wraps(view)
    def wrapper(request: HtmxHttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except _Unavailable as exc:
            return _unavailable_response(request, str(exc), exc.status)
        except SealError:
            # A review, decision or thread row that cannot be unsealed conflicts with the key the
            # app holds just as an unreadable checkpoint does.
            return _unavailable_response(request, SEALED_MESSAGE, 409)

    return wrapper


def _unavailable_response(request: HtmxHttpRequest, message: str, status: int) -> HttpResponse:
    template = "approvals/unavailable.html#message" if request.htmx else "approvals/unavailable.html"
    response = render(request, template, {"message": message}, status=status)
    if request.htmx:
        # In place of whatever asked: the decision form, the preview or the status poll.
        reswap(response, "outerHTML")
    return response


# -- the queue -------------------------------------------------------------------------------


@require_GET
@login_required
@vary_on_headers("HX-Request")
def queue(request: HtmxHttpRequest) -> HttpResponse:
    filters, status = _queue_filters(request)
    context = {"queue": queries.queue(request_user(request), filters)}
    template = "approvals/queue.html#results" if request.htmx else "approvals/queue.html"
    return render(request, template, context, status=status)


def _queue_filters(request: HtmxHttpRequest) -> tuple[queries.QueueFilters, int]:
    """The list's filters from the query string, and the status to answer with."""
    try:
        return queries.QueueFilters.from_query(request.GET), 200
    except queries.BadCursor as exc:
        # A page link that was altered (or cut) names no page: say so, with a 400, and show the
        # first page of the same filters, so nothing the reviewer chose is lost.
        params = request.GET.copy()
        for name in ("after", "before"):
            params.pop(name, None)
        filters = queries.QueueFilters.from_query(params)
        return dataclasses.replace(filters, errors=(*filters.errors, f"Page: {exc}.")), 400


@require_POST
@login_required
def save_filter(request: HtmxHttpRequest) -> HttpResponse:
    """Save the queue's filters under a name (the same name again replaces them)."""
    query = request.POST.get("query", "")
    try:
        saved = services.save_filter(
            user=request_user(request), name=request.POST.get("name", ""), query=query
        )
    except services.InvalidFilter as exc:
        messages.error(request, f"The filter was not saved: {exc}")
        return HttpResponseRedirect(reverse("approvals:queue") + queries.QueueFilters.clean_query(query))
    messages.success(request, f"Saved the filter “{saved.name}”.")
    return HttpResponseRedirect(reverse("approvals:queue") + saved.query)


@require_POST
@login_required
def delete_filter(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """Delete one of the user's saved filters; another user's is not found (404)."""
    try:
        name = services.delete_filter(user=request_user(request), saved_filter=pk)
    except SavedFilter.DoesNotExist:
        raise Http404("no saved filter of yours has this id") from None
    messages.success(request, f"Deleted the filter “{name}”.")
    return HttpResponseRedirect(reverse("approvals:queue"))


NOTHING_TICKED = "Tick the reviews to approve first."
# How the queue's form names the checkpoint each ticked row showed (one hidden field per row).
SHOWN_CHECKPOINT = "checkpoint-{}"


@require_POST
@login_required
@vary_on_headers("HX-Request")
def bulk_approve(request: HtmxHttpRequest) -> HttpResponse:
    """Approve each ticked review as its row showed it, in two steps: the first post lists what
    would be approved and why the others would not, with a Confirm button; the confirmed post
    approves and reports, per review, what became of it."""
    user = request_user(request)
    ticked = (int(value) for value in request.POST.getlist("review") if value.isdecimal())
    ids = list(dict.fromkeys(ticked))[:100]
    if not ids:
        if request.htmx:
            return render(request, "approvals/bulk_result.html", {"results": [], "notice": NOTHING_TICKED})
        messages.warning(request, NOTHING_TICKED)
        return HttpResponseRedirect(reverse("approvals:queue"))
    reviews = {review.pk: review for review in queries.visible_reviews(user).filter(pk__in=ids)}
    shown = {pk: request.POST.get(SHOWN_CHECKPOINT.format(pk), "")[:64] for pk in ids}
    if request.POST.get("confirm") != "yes":
        return _bulk_confirmation(request, ids, reviews, shown)
    results: list[tuple[int, Review | None, str]] = []
    for pk in ids:
        review = reviews.get(pk)
        if review is None:
            results.append((pk, None, "not found"))
            continue
        outcome = _bulk_refusal(review, user, shown[pk]) or _approve_as_is(review, user, shown[pk])
        results.append((pk, review, outcome))
    context = {"results": results}
    if request.htmx:
        response = render(request, "approvals/bulk_result.html", context)
        # The queue refreshes at once, so the approved rows leave it. The event goes by name
        # alone: django_htmx's trigger_client_event would send it as JSON ({"queue-changed": {}}),
        # which htmx fires the same way but which is not the header the page and tests expect.
        response["HX-Trigger"] = "queue-changed"
        return response
    for _, review, outcome in results:
        messages.info(request, f"{review.thread if review else 'Review'}: {outcome}")
    return HttpResponseRedirect(reverse("approvals:queue"))


@dataclass(frozen=True)
class _BulkRow:
    """A ticked review on the confirmation step: what approving it in bulk would do."""

    pk: int
    review: Review | None
    checkpoint_id: str
    refusal: str

    @property
    def approvable(self) -> bool:
        return self.review is not None and not self.refusal


def _bulk_confirmation(
    request: HtmxHttpRequest, ids: list[int], reviews: dict[int, Review], shown: dict[int, str]
) -> HttpResponse:
    user = request_user(request)
    rows = []
    for pk in ids:
        review = reviews.get(pk)
        if review is None:
            refusal = "not found"
        else:
            refusal = _bulk_refusal(review, user, shown[pk]) or _needs(review, user)
        rows.append(_BulkRow(pk, review, shown[pk], refusal))
    context = {"rows": rows, "approvable": [row for row in rows if row.approvable]}
    template = "approvals/bulk_confirm.html#confirm" if request.htmx else "approvals/bulk_confirm.html"
    return render(request, template, context)


def _unshown_fields(review: Review, spec: registry.Workflow | None) -> list[str]:
    """The editable fields of the review's state that its queue row does not show: the row
    shows the workflow's summary_fields, and nothing else of the state."""
    if spec is None:
        return []
    return [name for name in spec.editable if name not in spec.summary_names]


def _bulk_refusal(review: Review, user: User, checkpoint_id: str) -> str:
    """Why bulk approve must not approve this open review as it stands, or "": the row that was
    ticked showed another checkpoint (the thread moved on), or did not show fields that
    approving would accept unseen and the user has not opened the review (opening claims it)."""
    if review.status != Review.Status.OPEN or _needs_input(review):
        # decide() says by whom and when, or why it no longer applies; or it needs input.
        return ""
    if not checkpoint_id:
        return "not approved: the form did not say what its row showed; reload the queue and tick it again"
    if checkpoint_id != review.checkpoint_id:
        return "not approved: it changed since its row was shown; open it to see the new state"
    try:
        spec: registry.Workflow | None = registry.get(review.workflow)
    except LookupError:
        spec = None
    unshown = _unshown_fields(review, spec)
    if unshown and not _holds(review, user):
        return f"not approved: open it first, its row does not show {', '.join(unshown)}"
    return ""


def _holds(review: Review, user: User) -> bool:
    # A reviewer who opened the review holds its claim (the page claims it on load).
    return review.claimed_by_id == user.pk and review.claim_is_live(timezone.now())


def _needs(review: Review, user: User) -> str:
    """What the confirmation step says of a review bulk approve would not approve for this
    user, without trying: the same reasons _approve_as_is and decide() would give."""
    if review.status == Review.Status.DECIDED:
        return "already decided"
    if review.status != Review.Status.OPEN:
        return "no longer waiting"
    if _needs_input(review):
        return "needs input"
    try:
        spec = registry.get(review.workflow)
    except LookupError:
        return "its workflow is no longer registered"
    refusal = services.approval_refusal(review, spec=spec, actor=user)
    return f"not approved: {refusal}" if refusal else ""


def _needs_input(review: Review) -> bool:
    return review.kind == Review.Kind.INTERRUPT or "approve" not in services.allowed_actions(review)


def _approve_as_is(review: Review, user: User, checkpoint_id: str) -> str:
    # Only an open review can need input: a decided or withdrawn one goes to the service,
    # which says by whom and when it was decided, or why it no longer applies.
    if review.status == Review.Status.OPEN and _needs_input(review):
        return "needs input"
    try:
        # decide() refuses what this user may not approve (their own thread, an approval they
        # already gave) with the reason, which becomes this row's outcome, and a checkpoint
        # that is no longer the thread's head.
        outcome = services.decide(
            review=review, actor=user, action="approve", checkpoint_id=checkpoint_id or review.checkpoint_id
        )
    except services.AlreadyDecided as exc:
        when = timezone.localtime(exc.decision.created_at).strftime("%Y-%m-%d %H:%M")
        return f"already decided by {exc.decision.decided_by} at {when}"
    except services.DecisionRefused as exc:
        return f"not approved: {exc}"
    if isinstance(outcome, Approval):
        return _partial_message(outcome)
    return "approved"


def _partial_message(approval: Approval) -> str:
    quorum = services.quorum_of(approval.review, spec=registry.get(approval.review.workflow))
    return f"approval recorded ({quorum.progress}); {quorum.still_needed_text()} before the thread resumes"


# -- one review ------------------------------------------------------------------------------


def _review_or_404(request: HtmxHttpRequest, pk: int) -> Review:
    # Leads read their workflows' reviews to move them; the services refuse them the rest.
    return get_object_or_404(queries.readable_reviews(request_user(request)), pk=pk)


@dataclass(frozen=True)
class _Head:
    """A thread's workflow and its head checkpoint, read once per request: the decision form
    is bound to these values and the page shows them."""

    spec: registry.Workflow
    snapshot: StateSnapshot
    values: dict[str, Any]


def _head_of(thread: Thread, spec: registry.Workflow) -> _Head:
    # Inside _reading(), which turns an unreadable head into its 409 page.
    snapshot = engine.head(thread.workflow, thread.thread_id)
    return _Head(spec, snapshot, snapshot.values if isinstance(snapshot.values, dict) else {})


def _review_context(request: HtmxHttpRequest, review: Review) -> dict[str, Any]:
    with _reading(request, review.thread) as spec:
        return _review_context_of(request, review, _head_of(review.thread, spec), None)


def _review_context_of(
    request: HtmxHttpRequest, review: Review, head: _Head, form: DecisionForm | None
) -> dict[str, Any]:
    thread = review.thread
    spec, values = head.spec, head.values
    if form is None:
        form = _form(review, head, request_user(request))
    request_info = review.value[0] if review.kind == Review.Kind.AGENT_INBOX else None
    description = (request_info or {}).get("description") or (
        review.value.get("question", "") if isinstance(review.value, dict) else ""
    )
    decidable = _decidable(review, head, request_user(request))
    return {
        "review": review,
        "thread": thread,
        "workflow": spec,
        "values": values,
        "editable": set(spec.editable),
        "form": form,
        # One table of the state: the editable fields are the form's inputs while the review
        # can be decided, plain values once it cannot.
        "decidable": decidable,
        "state_rows": state_rows(
            values if isinstance(values, dict) else {}, set(spec.editable), form if decidable else None
        ),
        "request_info": request_info,
        "description": render_markdown(description or spec.description),
        **_claim_context(request, review),
        "overdue": review.due_at is not None and review.due_at < timezone.now(),
        "follow_up_form": FollowUpForm(),
        **_history(request, thread),
        "decision": getattr(review, "decision", None) if review.status == Review.Status.DECIDED else None,
        "stale": review.status == Review.Status.OPEN
        and engine.checkpoint_id_of(head.snapshot) != review.checkpoint_id,
        **_approvals_context(review, head, form),
    }


def _decidable(review: Review, head: _Head, user: User) -> bool:
    """Whether the page shows the decision form, so the state table's editable fields are its
    inputs: the review is open, pinned to the thread's head, and the user one of its reviewers."""
    pinned = engine.checkpoint_id_of(head.snapshot) == review.checkpoint_id
    return review.status == Review.Status.OPEN and pinned and services.may_review(user, review)


def _approvals_context(review: Review, head: _Head, form: DecisionForm) -> dict[str, Any]:
    """Four-eyes: the approvals so far (with their edits as diffs), what is still needed, and
    why this user may not approve, if so."""
    spec = head.spec
    rows = queries.approval_rows(review, spec, head.values) if spec.needs_quorum else []
    quorum = services.quorum_of(review, spec=spec) if spec.needs_quorum else None
    return {
        "quorum": quorum,
        "approval_rows": rows,
        "still_needed": quorum.still_needed_text() if quorum is not None else "",
        "approve_refusal": form.approve_refusal,
    }


def _form(review: Review, head: _Head, user: User, data: Any = None) -> DecisionForm:
    """The decision form, filled from the state the user is asked to approve (with the
    counting approvals' edits), approve disabled with the reason if it is not theirs to give."""
    refusal = (
        services.approval_refusal(review, spec=head.spec, actor=user)
        if review.status == Review.Status.OPEN and Decision.Action.APPROVE in services.allowed_actions(review)
        else ""
    )
    return DecisionForm(
        data,
        review=review,
        workflow=head.spec,
        values=services.proposed_values(review, spec=head.spec, values=head.values),
        approve_refusal=refusal,
    )


# The newest checkpoints a page shows at first, and at most on asking for all: a long
# thread's full history is hundreds of KB that a reviewer rarely reads past the last steps.
HISTORY_SHOWN = 20
HISTORY_MAX = 200


def _history(request: HtmxHttpRequest, thread: Thread) -> dict[str, Any]:
    everything = request.GET.get("history") == "all"
    limit = HISTORY_MAX if everything else HISTORY_SHOWN
    tree = queries.history_tree(thread, limit=limit)
    return {
        "history": tree.rows,
        "history_more": tree.more,
        "history_all": everything,
        "history_abandoned": tree.abandoned,
    }


def _wants_history(request: HtmxHttpRequest) -> bool:
    return bool(request.htmx) and request.GET.get("history") == "all"


@require_GET
@login_required
@vary_on_headers("HX-Request")
# Never from the cache: after deciding, Back must show the review as decided, not the old
# form whose claim-on-load would then be refused.
@never_cache
@_unavailable_page
def review_detail(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    review = _review_or_404(request, pk)
    if _wants_history(request):
        with _reading(request, review.thread):
            return render(request, "approvals/review.html#history", _history(request, review.thread))
    # Opening the page claims the review (htmx, on load); the claim box a release swaps in
    # does not, or releasing would claim it straight back.
    context = _review_context(request, review)
    # Not for someone who may not approve it (they started the thread, or their approval is
    # already counted): their claim would only keep away the approvers still needed. They
    # can still claim it with the button, to reject.
    context["claim_on_load"] = not context["approve_refusal"]
    return render(request, "approvals/review.html", context)


@require_POST
@login_required
@vary_on_headers("HX-Request")
def review_claim(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    review = _review_or_404(request, pk)
    try:
        review = services.claim_review(review=review, actor=request_user(request))
    except services.DecisionRefused as exc:
        review.refresh_from_db()
        if review.status == Review.Status.OPEN:
            return _refused(request, review, exc)
        # Decided or withdrawn meanwhile (or a page from the cache claiming on load): not a
        # refused decision, just nothing left to claim. The claim box says so.
        if request.htmx:
            return render(request, "approvals/review.html#claim", _closed_claim_context(review))
        return HttpResponseRedirect(reverse("approvals:review", args=[review.pk]))
    if request.htmx:
        context = _claim_context(request, review)
        claim = render(request, "approvals/review.html#claim", context)
        # The follow-up form is the holder's: it comes with the claim, out of band.
        follow_up = render(
            request,
            "approvals/review.html#follow-up",
            {**context, "follow_up_form": FollowUpForm(), "follow_up_oob": True},
        )
        claim.content = claim.content + follow_up.content
        return claim
    return HttpResponseRedirect(reverse("approvals:review", args=[review.pk]))


@require_POST
@login_required
@vary_on_headers("HX-Request")
def review_follow_up(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """Set or clear the holder's follow-up date ("remind me tomorrow"); the deadline sweep
    sends review_follow_up when it comes."""
    review = _review_or_404(request, pk)
    form = FollowUpForm(request.POST)
    error, status = "", 200
    if form.is_valid():
        try:
            review = services.set_follow_up(review=review, actor=request_user(request), at=form.when())
        except services.InvalidDecision as exc:
            error, status = str(exc), 422
        except services.DecisionRefused as exc:
            error, status = str(exc), 409
    else:
        error, status = " ".join(str(message) for errors in form.errors.values() for message in errors), 422
    if request.htmx:
        context = {
            "review": review,
            "holder": services.claim_holder(review),
            "follow_up_form": form,
            "follow_up_error": error,
        }
        return render(request, "approvals/review.html#follow-up", context, status=status)
    if error:
        messages.error(request, error)
    elif review.follow_up_at is not None:
        when = timezone.localtime(review.follow_up_at).strftime("%b %-d, %H:%M")
        messages.success(request, f"You will be reminded of this review at {when}.")
    else:
        messages.success(request, "The follow-up was cleared.")
    return HttpResponseRedirect(reverse("approvals:review", args=[review.pk]))


def _claim_context(request: HtmxHttpRequest, review: Review) -> dict[str, Any]:
    """The claim box: who holds the review, and which of take over / reassign / hand on the
    user may do, with the colleagues the review can go to."""
    user = request_user(request)
    holder = services.claim_holder(review)
    context: dict[str, Any] = {
        "review": review,
        "holder": holder,
        "may_decide": services.may_review(user, review),
    }
    if review.status != Review.Status.OPEN:
        return context
    directs = services.may_direct(user, review.workflow)
    holds = holder is not None and holder.pk == user.pk
    context["can_take_over"] = (
        directs and holder is not None and not holds and services.may_review(user, review)
    )
    context["can_reassign"] = directs
    context["can_hand_on"] = holds
    if directs or holds:
        context["colleagues"] = list(services.colleagues(review, exclude=holder))
    return context


def _closed_claim_context(review: Review) -> dict[str, Any]:
    decision = (
        Decision.objects.select_related("actor").filter(review=review).first()
        if review.status == Review.Status.DECIDED
        else None
    )
    return {"review": review, "holder": None, "decision": decision, "claim_closed": True}


@require_POST
@login_required
@vary_on_headers("HX-Request")
def review_release(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    review = _review_or_404(request, pk)
    try:
        review = services.release_review(review=review, actor=request_user(request))
    except services.DecisionRefused as exc:
        return _refused(request, review, exc)
    if request.htmx:
        return render(request, "approvals/review.html#claim", _claim_context(request, review))
    return HttpResponseRedirect(reverse("approvals:queue"))


@require_POST
@login_required
@vary_on_headers("HX-Request")
def review_take_over(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    review = _review_or_404(request, pk)
    return _moved(request, review, lambda user: services.take_over_review(review=review, actor=user))


@require_POST
@login_required
@vary_on_headers("HX-Request")
def review_reassign(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    review = _review_or_404(request, pk)
    to = request.POST.get("to", "")[:150]
    return _moved(request, review, lambda user: services.reassign_review(review=review, actor=user, to=to))


@require_POST
@login_required
@vary_on_headers("HX-Request")
def review_hand_on(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    review = _review_or_404(request, pk)
    to = request.POST.get("to", "")[:150]
    return _moved(request, review, lambda user: services.hand_review(review=review, actor=user, to=to))


def _moved(request: HtmxHttpRequest, review: Review, move: Callable[[User], Review]) -> HttpResponse:
    """Move the claim and show the claim box again; a refusal is 403 (not allowed), 422 (the
    colleague named cannot take it) or 409 (the review changed), and writes nothing."""
    try:
        review = move(request_user(request))
    except services.NotAllowed as exc:
        return _refused(request, review, exc, status=403)
    except services.BadColleague as exc:
        return _refused(request, review, exc, status=422)
    except services.DecisionRefused as exc:
        return _refused(request, review, exc)
    holder = review.claimed_by.get_username() if review.claimed_by else "nobody"
    if request.htmx:
        return render(request, "approvals/review.html#claim", _claim_context(request, review))
    messages.success(request, f"The review is now held by {holder}.")
    return HttpResponseRedirect(reverse("approvals:review", args=[review.pk]))


def _bound_form(request: HtmxHttpRequest, review: Review, head: _Head) -> DecisionForm:
    # An oversized body never gets here: approvals.middleware refuses it with a 413 first.
    return _form(review, head, request_user(request), request.POST)


def _previewed_changes(form: DecisionForm) -> list[queries.PreviewChange]:
    """What deciding with this valid form would change: the reviewer's edits, checked against
    the schema as deciding checks them, plus what the action itself sets (approve at an
    expense breakpoint sets approved), marked as the action's. An edit that does not fit
    becomes a form error."""
    try:
        updates = form.workflow.validate_updates(form.state_updates())
    except registry.InvalidUpdate as exc:
        form.add_error(None, f"Some edits do not fit: {exc}.")
        return []
    action = form.cleaned_data["action"]
    implied = services.implied_updates(form.review, action, form.workflow)
    return queries.decision_changes(form.values, updates, implied, action)


def _preview_note(form: DecisionForm) -> str:
    """What the decision does besides changing fields, for a valid form's preview."""
    review, action, spec = form.review, form.cleaned_data["action"], form.workflow
    if spec.needs_quorum and action == Decision.Action.APPROVE:
        if form.state_updates():
            return (
                "Your edits restart the count: the approvals so far stop counting, and the thread "
                "goes on once enough reviewers approve it as you edited it."
            )
        quorum = services.quorum_of(review, spec=spec)
        if len(quorum.missing_groups) > 1 or (not quorum.missing_groups and quorum.given + 1 < quorum.needed):
            return (
                f"Your approval is counted ({quorum.given + 1} of {quorum.needed}); the thread goes on "
                "once the approvals still needed are given."
            )
    if review.kind == Review.Kind.BREAKPOINT:
        if action == Decision.Action.REJECT and spec.on_reject is None:
            return "Rejecting cancels the thread: it will not go on."
        return f"The thread goes on from “{review.node}”."
    if action == Decision.Action.RESPOND:
        return f"Your response goes to “{review.node}”; the thread goes on with it."
    if action == Decision.Action.EDIT:
        return f"The edited arguments go to “{review.node}”; the thread goes on with them."
    return f"“{review.node}” is answered with {action}; the thread goes on."


@require_POST
@login_required
@vary_on_headers("HX-Request")
@_unavailable_page
def review_preview(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """The reviewer's own changes as a diff, before anything is submitted. Writes nothing.
    With htmx the whole form comes back, so errors show under their fields and old ones go."""
    review = _review_or_404(request, pk)
    with _reading(request, review.thread) as spec:
        head = _head_of(review.thread, spec)
        form = _bound_form(request, review, head)
        changes = _previewed_changes(form) if form.is_valid() else []
        note = _preview_note(form) if form.is_valid() else ""
        context = {
            **_review_context_of(request, review, head, form),
            "preview": changes,
            "preview_note": note,
            "previewed": True,
        }
    template = "approvals/review.html#decision-form" if request.htmx else "approvals/review.html"
    return render(request, template, context, status=200 if form.is_valid() else 422)


@require_POST
@login_required
@vary_on_headers("HX-Request")
@_unavailable_page
def review_decide(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    review = _review_or_404(request, pk)
    with _reading(request, review.thread) as spec:
        return _decide(request, review, _head_of(review.thread, spec))


def _decide(request: HtmxHttpRequest, review: Review, head: _Head) -> HttpResponse:
    form = _bound_form(request, review, head)
    if not form.is_valid():
        return _form_errors(request, review, head, form)
    try:
        outcome = services.decide(
            review=review,
            actor=request_user(request),
            action=form.cleaned_data["action"],
            checkpoint_id=form.checkpoint_id,
            updates=form.state_updates(),
            response=form.answer(),
            comment=form.cleaned_data.get("comment", ""),
        )
    except services.InvalidDecision as exc:
        form.add_error(None, str(exc))
        return _form_errors(request, review, head, form)
    except services.DecisionRefused as exc:
        return _refused(request, review, exc)
    if request.POST.get("inbox"):
        # Decided from the inbox (approvals/inbox.html adds the field): on to the next review.
        recorded = _partial_message(outcome) if isinstance(outcome, Approval) else "decision recorded"
        return _next_in_inbox(request, review, f"{review.thread}: {recorded}.")
    # A partial approval leaves the review open for the next approver, so its page is where
    # to go (it lists this approval and what is still needed).
    if isinstance(outcome, Approval):
        url = reverse("approvals:review", args=[review.pk])
    else:
        url = reverse("approvals:thread", args=[review.thread.public_id])
    if request.htmx:
        # 204: htmx follows HX-Redirect and swaps nothing, so no body is sent.
        return HttpResponseClientRedirect(url, status=204)
    if isinstance(outcome, Approval):
        messages.success(request, capfirst(_partial_message(outcome)) + ".")
    else:
        messages.success(request, "Decision recorded; the thread is resuming.")
    return HttpResponseRedirect(url)


def _form_errors(request: HtmxHttpRequest, review: Review, head: _Head, form: DecisionForm) -> HttpResponse:
    template = "approvals/review.html#decision-form" if request.htmx else "approvals/review.html"
    context = _review_context_of(request, review, head, form)
    return render(request, template, context, status=422)


def _refused(request: HtmxHttpRequest, review: Review, exc: Exception, *, status: int = 409) -> HttpResponse:
    """409: the decision or claim cannot apply (decided by someone, stale, claimed); nothing changed."""
    context = {"review": review, "thread": review.thread, "message": str(exc)}
    # Shown where the form was, whichever element asked.
    return _in_place(
        request,
        "approvals/conflict.html#conflict",
        context,
        status=status,
        target="#decision",
        swap="innerHTML",
    )


def _in_place(
    request: HtmxHttpRequest,
    partial: str,
    context: dict[str, Any],
    *,
    status: int,
    target: str,
    swap: Literal["innerHTML", "outerHTML"],
) -> HttpResponse:
    """A refusal's page ("page.html#part": the whole page), or under htmx only its part,
    swapped into `target` whichever element asked."""
    page = partial.partition("#")[0]
    response = render(request, partial if request.htmx else page, context, status=status)
    return reswap(retarget(response, target), swap) if request.htmx else response


# -- a thread --------------------------------------------------------------------------------


@require_GET
@login_required
@vary_on_headers("HX-Request")
@_unavailable_page
def thread_detail(request: HtmxHttpRequest, public_id: str) -> HttpResponse:
    thread = get_object_or_404(queries.visible_threads(request_user(request)), public_id=public_id)
    with _reading(request, thread) as spec:
        return _thread_page(request, thread, spec)


def _thread_page(request: HtmxHttpRequest, thread: Thread, spec: registry.Workflow) -> HttpResponse:
    if _wants_history(request):
        return render(request, "approvals/thread.html#history", _history(request, thread))
    head = engine.head(thread.workflow, thread.thread_id)
    context = {
        "thread": thread,
        "workflow": spec,
        "values": head.values if isinstance(head.values, dict) else {},
        "next": head.next,
        "open_reviews": list(thread.reviews.filter(status=Review.Status.OPEN).order_by("id")),
        "runs": list(queries.thread_runs(thread)[:20]),
        "active": thread.status in ACTIVE,
        **_failure_context(request, thread),
    }
    if request.htmx:
        if not context["active"]:
            # The last poll: the run has ended, so the history follows it, swapped out of band.
            context.update(_history(request, thread), history_oob=True)
        return render(request, "approvals/thread.html#status", context)
    context.update(_history(request, thread))
    # Not on the status poll: a decision is taken before the run it starts, never during it.
    context["decisions"] = queries.thread_decisions(thread)
    return render(request, "approvals/thread.html", context)


# -- a failed thread, and the threads page (issue 13, item 4) ----------------------------------

# The permission the Thread admin and the API already ask for a retry (Thread.Meta.permissions).
RETRY_PERMISSION = "workflows.retry_thread"
# An absolute path on the server (POSIX or Windows), not one inside a URL ("https://host/a/b")
# nor a relative one ("a/b").
_SERVER_PATH = re.compile(r"(?<![\w:/.~-])/(?:[\w.~-]+/)+[\w.~-]*|\b[A-Za-z]:\\(?:[\w. ~-]+\\)*[\w.~-]*")


def without_server_paths(text: str) -> str:
    """The text with every absolute server path replaced: an error's last line can name one
    ("No such file or directory: '/srv/...'"), which only staff should read."""
    return _SERVER_PATH.sub("[server path]", text)


def _failure_context(request: HtmxHttpRequest, thread: Thread) -> dict[str, Any]:
    """A failed thread's error for the thread page: its last line ("ValueError: amount must be
    positive") to everyone who sees the thread, the traceback only to staff (it quotes code,
    server paths and state); and Retry for those holding the permission."""
    if thread.status != Thread.Status.FAILED:
        return {}
    user = request_user(request)
    staff = user.is_active and user.is_staff
    line = thread.error_summary
    return {
        "failure_line": line if staff else without_server_paths(line),
        "failure_traceback": thread.error if staff else "",
        "can_retry": user.has_perm(RETRY_PERMISSION),
    }


@require_POST
@login_required
@vary_on_headers("HX-Request")
@_unavailable_page
def thread_retry(request: HtmxHttpRequest, public_id: str) -> HttpResponse:
    """Run a failed thread again from its last checkpoint (`workflows.services.retry_thread`).
    A thread the user may not see is a 404, as on its page; without the permission a 403;
    a thread that is not failed (or was retried meanwhile) a 409 with the service's reason.
    Each refusal writes nothing."""
    user = request_user(request)
    thread = get_object_or_404(queries.visible_threads(user), public_id=public_id)
    if not user.has_perm(RETRY_PERMISSION):
        return _retry_refused(
            request,
            thread,
            f"You do not have the permission to retry threads ({RETRY_PERMISSION}).",
            status=403,
        )
    try:
        run = engine_services.retry_thread(thread=thread, actor=user)
    except engine_services.ServiceError as exc:
        return _retry_refused(request, thread, f"{capfirst(str(exc))}.", status=409)
    if request.htmx:
        # The status box again, now queued: it polls until the retried run ends.
        thread.refresh_from_db()
        with _reading(request, thread) as spec:
            return _thread_page(request, thread, spec)
    messages.success(request, f"Retried; run {run.pk} is queued.")
    return HttpResponseRedirect(reverse("approvals:thread", args=[thread.public_id]))


def _retry_refused(request: HtmxHttpRequest, thread: Thread, message: str, *, status: int) -> HttpResponse:
    context = {"thread": thread, "message": message}
    # In place of the failure box, whose button asked.
    return _in_place(
        request,
        "approvals/retry_refused.html#refused",
        context,
        status=status,
        target="#failure",
        swap="outerHTML",
    )


@require_GET
@login_required
@vary_on_headers("HX-Request")
def threads(request: HtmxHttpRequest) -> HttpResponse:
    """Every thread of the workflows the user sees, newest state change first, by status and
    workflow; with htmx only the rows (the filter form, a status tab or a page link asked)."""
    filters = queries.ThreadFilters.from_query(request.GET)
    context = {"page": queries.threads_page(request_user(request), filters)}
    template = "approvals/threads.html#rows" if request.htmx else "approvals/threads.html"
    return render(request, template, context)


# -- metrics (staff) -------------------------------------------------------------------------


def staff_required(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    """403 unless the user is active staff: the same rule as the navigation's link."""

    @functools.wraps(view)
    def wrapper(request: HtmxHttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not (request.user.is_active and request.user.is_staff):
            raise PermissionDenied
        return view(request, *args, **kwargs)

    return wrapper


@require_GET
@login_required
@staff_required
@vary_on_headers("HX-Request")
def metrics_page(request: HtmxHttpRequest) -> HttpResponse:
    """Reviews opened and decided, times to claim and decide, overdue, escalations and timeouts;
    a bad range is a 422 that says what is wrong, with the form kept as typed."""
    filters = metrics.MetricsFilters.from_query(request.GET)
    context: dict[str, Any] = {
        "filters": filters,
        "workflows": list(registry.all_workflows()),
        "entered": {
            "since": request.GET.get("since", "")[:40] or filters.since.isoformat(),
            "until": request.GET.get("until", "")[:40] or filters.until.isoformat(),
        },
    }
    if not filters.errors:
        context["metrics"] = metrics.metrics(filters)
    template = "approvals/metrics.html#results" if request.htmx else "approvals/metrics.html"
    return render(request, template, context, status=422 if filters.errors else 200)


# -- the audit trail (staff) -----------------------------------------------------------------


def audit_reader_required(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    """403 unless services.can_read_audit: the same rule as the navigation's link and the docs."""

    @functools.wraps(view)
    def wrapper(request: HtmxHttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not services.can_read_audit(request.user):
            raise PermissionDenied
        return view(request, *args, **kwargs)

    return wrapper


@require_GET
@login_required
@audit_reader_required
@vary_on_headers("HX-Request")
def audit_log(request: HtmxHttpRequest) -> HttpResponse:
    filters = queries.AuditFilters.from_query(request.GET)
    context = {"audit": queries.audit_page(filters)}
    template = "approvals/audit_log.html#results" if request.htmx else "approvals/audit_log.html"
    return render(request, template, context)


@require_GET
@login_required
@audit_reader_required
@vary_on_headers("HX-Request")
def audit_thread(request: HtmxHttpRequest, public_id: str) -> HttpResponse:
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
        "thread_visible": queries.visible_threads(request_user(request)).filter(pk=thread.pk).exists(),
    }
    template = "approvals/audit_thread.html#results" if request.htmx else "approvals/audit_thread.html"
    return render(request, template, context)


@require_GET
@login_required
@audit_reader_required
def audit_export_csv(request: HtmxHttpRequest) -> HttpResponseBase:
    return _audit_export(request, "csv")


@require_GET
@login_required
@audit_reader_required
def audit_export_jsonl(request: HtmxHttpRequest) -> HttpResponseBase:
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


def _audit_export(request: HtmxHttpRequest, kind: str) -> HttpResponseBase:
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


# -- the inbox (issue 13): the queue on the left, the open review on the right ----------------

# What the queue's rows partial links to when the inbox includes it.
INBOX_LINKS = {"inbox": True, "list_url": "approvals:inbox", "review_url": "approvals:inbox_review"}


@require_GET
@login_required
@vary_on_headers("HX-Request")
# As review_detail: Back after a decision must not show the old form.
@never_cache
def inbox(request: HtmxHttpRequest, pk: int | None = None) -> HttpResponse:
    """The list and the review opened from it, at /inbox/<pk>/. With htmx, the list alone when
    the list asked (its scopes and refresh target #results), else the review pane alone."""
    user = request_user(request)
    filters, list_status = _queue_filters(request)
    if request.htmx and request.htmx.target == "results":
        context = {**INBOX_LINKS, "queue": queries.queue(user, filters)}
        return render(request, "approvals/queue.html#results", context, status=list_status)
    review = _review_or_404(request, pk) if pk is not None else None
    context, status = _inbox_pane(request, review)
    if request.htmx:
        return render(request, "approvals/inbox.html#pane", context, status=status)
    context["queue"] = queries.queue(user, filters)
    return render(request, "approvals/inbox.html", context, status=max(status, list_status))


def _inbox_pane(request: HtmxHttpRequest, review: Review | None) -> tuple[dict[str, Any], int]:
    """The right-hand pane's context: the review as its own page shows it, or why it cannot be
    shown there (the list stays usable beside it)."""
    context: dict[str, Any] = {**INBOX_LINKS, "open_review": review}
    if review is None:
        return context, 200
    try:
        with _reading(request, review.thread) as spec:
            context.update(_review_context_of(request, review, _head_of(review.thread, spec), None))
    except _Unavailable as exc:
        return {**context, "unavailable": str(exc)}, exc.status
    except SealError:
        return {**context, "unavailable": SEALED_MESSAGE}, 409
    # Claimed on opening, as the review page is, and for the same reason not by someone who
    # may not approve it.
    context["claim_on_load"] = not context["approve_refusal"]
    return context, 200


def _next_in_inbox(request: HtmxHttpRequest, decided: Review, notice: str) -> HttpResponse:
    """After a decision taken in the inbox: the next review, in the pane with htmx (the URL and
    the list follow), or the next review's inbox page without JavaScript."""
    following = queries.next_review(request_user(request), after=decided)
    url = reverse("approvals:inbox_review", args=[following.pk]) if following else reverse("approvals:inbox")
    if not request.htmx:
        messages.success(request, notice)
        return HttpResponseRedirect(url)
    context, status = _inbox_pane(request, following)
    context["inbox_notice"] = notice
    response = render(request, "approvals/inbox.html#pane", context, status=status)
    # The decide form aims at #decision; the next review replaces the whole pane.
    reswap(retarget(response, "#inbox-review"), "outerHTML")
    response["HX-Push-Url"] = url
    # The list refreshes without the decided row (its #results listens for this event).
    response["HX-Trigger"] = "queue-changed"
    return response
