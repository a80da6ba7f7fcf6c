"""Sign-in throttling around django-axes: the client's address, the lockout page, and the
audit events of failed sign-ins and lockouts."""

from __future__ import annotations

from typing import Any

from axes.signals import user_locked_out
from django.conf import settings
from django.contrib.auth.signals import user_login_failed
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.timesince import timesince

from approvals import services


def client_ip(request: HttpRequest) -> str | None:
    """The address sign-in failures are counted against.

    REMOTE_ADDR, unless SIGNOFF_PROXY_COUNT proxies stand in front: each appends the
    address it saw to X-Forwarded-For, so the one the outermost proxy saw is that many
    from the end (entries before it are whatever the client sent, and cannot be trusted).
    """
    count: int = settings.SIGNOFF_PROXY_COUNT
    if count:
        forwarded = str(request.META.get("HTTP_X_FORWARDED_FOR", ""))
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        if len(hops) >= count:
            return hops[-count]
    remote: str | None = request.META.get("REMOTE_ADDR")
    return remote


def locked_out(request: HttpRequest, response: HttpResponse | None, credentials: Any) -> HttpResponse:
    """The lockout page: the same for every user name, existing or not."""
    now = timezone.now()
    wait = timesince(now, now + settings.AXES_COOLOFF_TIME)
    return render(request, "registration/locked_out.html", {"wait": wait}, status=429)


def _attempt(request: HttpRequest | None, username: object) -> tuple[str, str]:
    name = username if isinstance(username, str) else ""
    ip = client_ip(request) if request is not None else None
    # A user name is whatever was typed; keep it to the length a real one can have.
    return name[:150], ip or ""


@receiver(user_login_failed, dispatch_uid="signoff-audit-login-failed")
def _audit_login_failed(
    sender: object, credentials: dict[str, Any], request: HttpRequest | None = None, **kwargs: Any
) -> None:
    username, ip = _attempt(request, credentials.get("username"))
    services.record_login_failure(username=username, ip_address=ip)


@receiver(user_locked_out, dispatch_uid="signoff-audit-locked-out")
def _audit_locked_out(
    sender: object,
    request: HttpRequest | None = None,
    username: object = None,
    ip_address: object = None,
    **kwargs: Any,
) -> None:
    name, ip = _attempt(request, username)
    services.record_lockout(username=name, ip_address=ip_address if isinstance(ip_address, str) else ip)
