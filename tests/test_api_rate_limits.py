"""Rate limits per API key (api/throttle.py): past SIGNOFF_API_RATE_LIMIT requests in the window,
a 429 with Retry-After and a JSON detail; counted per key, in a cache every process shares."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.core.exceptions import ImproperlyConfigured
from django.test import Client

from api import services
from api.models import ApiKey
from api.throttle import KeyWindow
from config.settings import api_rate_limit

pytestmark = pytest.mark.django_db


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(KeyWindow, "timer", staticmethod(clock))
    return clock


@pytest.fixture
def two_a_minute(settings: Any) -> None:
    settings.SIGNOFF_API_RATE_LIMIT = "2/min"


def new_key(user: User) -> str:
    return services.create_api_key(user=user, name="tests", actor=None).secret


def search(key: str, *, bearer: bool = False) -> Any:
    headers = {"Authorization": f"Bearer {key}"} if bearer else {"x-api-key": key}
    return Client().post("/api/assistants/search", {}, content_type="application/json", headers=headers)


@pytest.mark.usefixtures("two_a_minute")
def test_the_request_past_the_limit_is_a_429_with_retry_after(reviewer: User, clock: Clock) -> None:
    key = new_key(reviewer)
    assert search(key).status_code == 200
    clock.now += 10
    assert search(key).status_code == 200
    clock.now += 5

    refused = search(key)

    assert refused.status_code == 429
    assert refused["Content-Type"] == "application/json; charset=utf-8"
    assert refused.json() == {"detail": "too many requests for this API key: at most 2/min"}
    # The first request leaves the window 60 s after it was made: 45 s from now.
    assert refused["Retry-After"] == "45"


@pytest.mark.usefixtures("two_a_minute")
def test_another_key_is_not_affected_even_of_the_same_user(reviewer: User, clock: Clock) -> None:
    first, second = new_key(reviewer), new_key(reviewer)
    search(first), search(first)
    assert search(first).status_code == 429

    assert search(second).status_code == 200
    assert search(new_key(User.objects.create_user("paula"))).status_code == 200


@pytest.mark.usefixtures("two_a_minute")
def test_the_key_is_let_in_again_once_the_window_has_passed(reviewer: User, clock: Clock) -> None:
    key = new_key(reviewer)
    search(key)
    clock.now += 30
    search(key)
    assert search(key).status_code == 429

    clock.now += 30.5  # the first request is out of the window, the second still in it
    assert search(key).status_code == 200
    assert search(key).status_code == 429

    clock.now += 60
    assert search(key).status_code == 200


@pytest.mark.usefixtures("two_a_minute")
def test_a_key_counts_the_same_sent_either_way(reviewer: User, clock: Clock) -> None:
    key = new_key(reviewer)
    search(key)
    search(key, bearer=True)

    assert search(key, bearer=True).status_code == 429


@pytest.mark.usefixtures("two_a_minute")
def test_a_refused_request_is_not_counted(reviewer: User, clock: Clock) -> None:
    key = new_key(reviewer)
    search(key), search(key)
    for _ in range(5):
        assert search(key).status_code == 429

    clock.now += 61
    assert search(key).status_code == 200


@pytest.mark.usefixtures("two_a_minute")
def test_requests_without_a_key_are_not_limited(clock: Clock) -> None:
    for _ in range(5):
        assert Client().get("/api/ok").status_code == 200
        assert Client().get("/api/info").status_code == 200
        assert Client().get("/api/openapi.json").status_code == 200
        assert search("signoff_nope_nope").status_code == 401


def test_off_means_no_limit(settings: Any, reviewer: User, clock: Clock) -> None:
    settings.SIGNOFF_API_RATE_LIMIT = None
    key = new_key(reviewer)

    assert [search(key).status_code for _ in range(5)] == [200] * 5


@pytest.mark.usefixtures("two_a_minute")
def test_a_throttle_cache_that_is_down_lets_requests_through(
    settings: Any, reviewer: User, caplog: pytest.LogCaptureFixture
) -> None:
    # Nothing listens on port 1: every read of the counters fails at once.
    settings.CACHES = {
        **settings.CACHES,
        "throttle": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
        },
    }
    key = new_key(reviewer)

    with caplog.at_level(logging.WARNING, logger="api.throttle"):
        assert [search(key).status_code for _ in range(3)] == [200] * 3

    assert "rate limit not checked, the throttle cache failed" in caplog.text


def test_retry_after_stays_right_when_concurrent_processes_overshot_the_limit() -> None:
    # Two processes may both read "1 of 2" and both write: the window then holds 3 requests.
    window = KeyWindow("2/min")
    window.now = 1000.0
    window.history = [999.0, 990.0, 980.0]

    # It opens when one request leaves it: the second oldest, at 990 + 60.
    assert window.wait() == 50.0


def test_the_counters_are_in_a_cache_another_process_reads(settings: Any, reviewer: User) -> None:
    settings.SIGNOFF_API_RATE_LIMIT = "5/min"
    key = new_key(reviewer)
    search(key), search(key)
    prefix = ApiKey.objects.get().prefix
    code = (
        "import django; django.setup(); from django.core.cache import caches;"
        f"print(len(caches['throttle'].get('throttle_key_{prefix}', [])))"
    )

    read = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings"},
        capture_output=True,
        text=True,
    )

    assert read.returncode == 0, read.stderr
    assert read.stdout.strip() == "2"


# -- the settings ------------------------------------------------------------------------------


def test_the_throttle_cache_is_redis_with_a_redis_broker_and_files_otherwise() -> None:
    code = "import django; django.setup(); from django.conf import settings as s; print(s.CACHES['throttle'])"

    def throttle_cache(broker: str) -> str:
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "CELERY_BROKER_URL": broker}
        started = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        assert started.returncode == 0, started.stderr
        return started.stdout

    assert "RedisCache" in throttle_cache("redis://127.0.0.1:6379/4")
    assert "'LOCATION': 'rediss://cache.example.com:6380/0'" in throttle_cache(
        "rediss://cache.example.com:6380/0"
    )
    assert "FileBasedCache" in throttle_cache("filesystem://")
    assert str(django_settings.VAR_DIR / "throttle") in throttle_cache("filesystem://")


@pytest.mark.parametrize("value", ["600/min", "10/s", "10/sec", "1000/hour", "5000/day", "100/5min", "1/m"])
def test_a_rate_is_requests_per_period(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("SIGNOFF_API_RATE_LIMIT", value)

    assert api_rate_limit("SIGNOFF_API_RATE_LIMIT", "600/min") == value
    KeyWindow(value)  # ninja reads it


@pytest.mark.parametrize("value", ["0", "off", "OFF", "false", "no"])
def test_zero_or_off_turns_the_limit_off(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("SIGNOFF_API_RATE_LIMIT", value)

    assert api_rate_limit("SIGNOFF_API_RATE_LIMIT", "600/min") is None


def test_unset_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SIGNOFF_API_RATE_LIMIT", raising=False)

    assert api_rate_limit("SIGNOFF_API_RATE_LIMIT", "600/min") == "600/min"


@pytest.mark.parametrize(
    "value", ["600", "600/minute", "600 / min", "-1/min", "0/min", "1.5/s", "600/0min", "lots"]
)
def test_a_bad_rate_is_refused_naming_it(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("SIGNOFF_API_RATE_LIMIT", value)

    with pytest.raises(ImproperlyConfigured) as refused:
        api_rate_limit("SIGNOFF_API_RATE_LIMIT", "600/min")

    assert str(refused.value).startswith("SIGNOFF_API_RATE_LIMIT must be requests/period (600/min")
    assert str(refused.value).endswith(f"or off, got {value!r}")


def test_a_bad_rate_stops_start_up() -> None:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "SIGNOFF_API_RATE_LIMIT": "600/minute"}

    started = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"], env=env, capture_output=True, text=True
    )

    assert started.returncode != 0
    assert "ImproperlyConfigured: SIGNOFF_API_RATE_LIMIT must be requests/period" in started.stderr
