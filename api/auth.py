"""How a request names its key: `x-api-key: <key>` (what langgraph_sdk sends for api_key=) or
`Authorization: Bearer <key>`. The request then acts as the key's user (`request.user`, read with
`approvals.http.request_user`)."""

from __future__ import annotations

from django.http import HttpRequest
from ninja.errors import AuthenticationError
from ninja.security import APIKeyHeader, HttpBearer

from api import services
from api.models import ApiKey


class KeyRefused(AuthenticationError):
    """A 401 whose detail says why: unknown or revoked, expired, or a user no longer active."""

    def __init__(self, reason: str) -> None:
        super().__init__(401, reason)


def _check(request: HttpRequest, presented: str) -> ApiKey:
    try:
        key = services.authenticate(presented=presented)
    except services.KeyRefused as exc:
        raise KeyRefused(str(exc)) from None
    # The API has no session: the key's user is the request's, for every check below.
    request.user = key.user
    return key


class KeyHeader(APIKeyHeader):
    param_name = "x-api-key"

    def authenticate(self, request: HttpRequest, key: str | None) -> ApiKey | None:
        # No header: the next scheme (Bearer) may have one. A bad one is refused here.
        return _check(request, key) if key else None


class BearerKey(HttpBearer):
    def authenticate(self, request: HttpRequest, token: str) -> ApiKey | None:
        return _check(request, token) if token else None


def request_key(request: HttpRequest) -> ApiKey:
    """The key an authenticated operation's request was let in with."""
    key = getattr(request, "auth", None)
    assert isinstance(key, ApiKey)
    return key


def key_data(request: HttpRequest) -> dict[str, str]:
    """The key a change was made with, for its audit event (never its secret)."""
    return {"api_key": request_key(request).prefix}
