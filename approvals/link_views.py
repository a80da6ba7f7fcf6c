"""The page an emailed one-click link opens (approvals.links): GET shows what the link will do
with one button (a real form, no JavaScript needed), POST decides. Nothing decides on GET."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.contrib.auth.views import redirect_to_login
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from approvals import links, services
from approvals.http import HtmxHttpRequest
from approvals.models import Link
from approvals.security import client_ip

OTHER_USER_MESSAGE = (
    "This link was sent to someone else. Sign out and open it again as its recipient, or open the "
    "review from your queue."
)


@require_http_methods(["GET", "POST"])
@never_cache
def follow_link(request: HtmxHttpRequest) -> HttpResponse:
    """No login_required: whether the page works without a session is the workflow's choice
    (email_decisions); otherwise it sends the visitor to sign in and back here."""
    source = request.POST if request.method == "POST" else request.GET
    token = source.get("t", "")[:1000]
    user = request.user if isinstance(request.user, User) and request.user.is_authenticated else None
    try:
        link = links.verify(token)
    except links.LinkRefused as exc:
        return _refused(request, exc, user)
    if link.action == Link.Action.OPEN:
        # The review page asks for a sign-in as usual, and shows what the user may see.
        return HttpResponseRedirect(reverse("approvals:review", args=[link.review_id]))
    if user is not None and user.pk != link.recipient_id:
        refusal = links.LinkRefused(links.Reason.OTHER_USER, OTHER_USER_MESSAGE, 403, link)
        return _refused(request, refusal, user)
    if user is None and not links.decides_without_session(link):
        # Back to this page (a GET, whatever asked) once signed in.
        return redirect_to_login(links.url_of(token))
    message = links.conflict(link)
    if message is not None:
        if link.used_at is not None:
            ip_address = client_ip(request) or ""
            links.record_refusal(link=link, reason=links.Reason.USED, user=user, ip_address=ip_address)
        return _conflict(request, link, message)
    if request.method == "GET":
        context = {"link": link, "review": link.review, "token": token, "effect": links.effect(link)}
        return render(request, "approvals/link_confirm.html", context)
    try:
        decision = links.decide(link=link, signed_in=user is not None)
    except services.DecisionRefused as exc:
        return _conflict(request, link, str(exc))
    context = {
        "link": link,
        "review": link.review,
        "decision": decision,
        "signed_in": user is not None,
        "partial": links.progress(decision),
    }
    return render(request, "approvals/link_done.html", context)


def _refused(request: HtmxHttpRequest, exc: links.LinkRefused, user: User | None) -> HttpResponse:
    links.record_refusal(link=exc.link, reason=exc.reason, user=user, ip_address=client_ip(request) or "")
    return render(request, "approvals/link_refused.html", {"message": str(exc)}, status=exc.status)


def _conflict(request: HtmxHttpRequest, link: Link, message: str) -> HttpResponse:
    context = {"review": link.review, "thread": link.review.thread, "message": message}
    return render(request, "approvals/conflict.html", context, status=409)
