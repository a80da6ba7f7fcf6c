"""The request the views and the error pages see: django-htmx's middleware has set `htmx`."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.http import HttpRequest
from django_htmx.middleware import HtmxDetails


class HtmxHttpRequest(HttpRequest):
    """An HttpRequest after `django_htmx.middleware.HtmxMiddleware`, which runs right after the
    two security-header middlewares (config/settings.py), so every middleware and error page
    of ours can ask too. `request.htmx` is falsy unless htmx sent it (`HX-Request: true`);
    its attributes read the other HX-* request headers."""

    htmx: HtmxDetails


def request_user(request: HttpRequest) -> User:
    """The signed-in user of a request that login_required (or the admin site, which lets only
    active staff in, or an API key: `api.auth` sets the key's user) has let through: a real
    User, never AnonymousUser."""
    user = request.user
    assert isinstance(user, User)
    return user
