"""Rate limits per API key, with django-ninja's throttle (`ninja.throttling`): a sliding window
of the key's request times, kept in the `throttle` cache (Redis, or files under SIGNOFF_VAR_DIR:
config/settings.py), so that every web process counts the same requests.

Counted per key, by its prefix: two keys of one user have a limit each, and a key is limited
wherever it is used from. Requests without a key (/ok, /info, the OpenAPI document) and refused
keys (a 401 before the throttle) are not counted: they touch no database but, for a refused
key, one indexed read; a proxy in front limits them by address if it must.
"""

from __future__ import annotations

import logging
import threading

from django.conf import settings
from django.core.cache import caches
from django.http import HttpRequest
from ninja.throttling import AuthRateThrottle, BaseThrottle
from redis.exceptions import RedisError

from api.models import ApiKey

logger = logging.getLogger(__name__)


class KeyWindow(AuthRateThrottle):
    """One request's look at its key's window, at the rate the settings give now."""

    scope = "key"

    def __init__(self, rate: str) -> None:
        super().__init__(rate)
        self.cache = caches["throttle"]

    def get_cache_key(self, request: HttpRequest) -> str:
        key = request.auth  # type: ignore[attr-defined]
        assert isinstance(key, ApiKey)
        return self.cache_format % {"scope": self.scope, "ident": key.prefix}

    def wait(self) -> float | None:
        # Until the oldest request that still counts leaves the window. Ninja divides by the
        # requests left and gives up (no Retry-After) if concurrent requests from several
        # processes pushed the count past the limit; this is right in both cases.
        assert self.num_requests is not None
        assert self.duration is not None
        oldest_counted: float = self.history[min(self.num_requests, len(self.history)) - 1]
        now: float = self.now
        return max(oldest_counted + self.duration - now, 0.0)


class PerKey(BaseThrottle):
    """The API's throttle. Ninja keeps one throttle for all requests and asks `wait()` right
    after `allow_request()`; each request gets its own window (in a thread-local between the
    two calls), since ninja's keeps the request's history on itself, which threads would share."""

    def __init__(self) -> None:
        self._local = threading.local()

    def allow_request(self, request: HttpRequest) -> bool:
        rate: str | None = settings.SIGNOFF_API_RATE_LIMIT
        if rate is None or not isinstance(getattr(request, "auth", None), ApiKey):
            return True
        window = KeyWindow(rate)
        self._local.window = window
        try:
            return window.allow_request(request)
        except (RedisError, OSError) as exc:
            # A limit is no reason to refuse all work while its cache is down: let it through.
            logger.warning("rate limit not checked, the throttle cache failed: %s", exc)
            return True

    def wait(self) -> float | None:
        window: KeyWindow = self._local.window
        return window.wait()
