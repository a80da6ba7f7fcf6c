"""CORS for the API (django-cors-headers, configured from the environment): /api/ only, no
origin by default, the headers langgraph_sdk's JS client and Agent Inbox send and read."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ImproperlyConfigured
from django.test import Client

from api import services
from config.settings import cors_origin_regexes, cors_origins

pytestmark = pytest.mark.django_db

INBOX = "https://inbox.example.com"
STRANGER = "https://evil.example.net"


@pytest.fixture(autouse=True)
def _inbox_allowed(settings: Any) -> None:
    settings.CORS_ALLOWED_ORIGINS = [INBOX, "http://localhost:3000"]
    settings.CORS_ALLOWED_ORIGIN_REGEXES = [r"^https://[a-z0-9-]+\.inbox\.example\.org$"]


def preflight(path: str, origin: str, **headers: str) -> Any:
    """What a browser sends before Agent Inbox's POST with a JSON body and a key: no key itself."""
    return Client().options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-api-key",
            **headers,
        },
    )


def cors_headers(response: Any) -> dict[str, str]:
    return {
        name.lower(): value for name, value in response.items() if name.lower().startswith("access-control")
    }


# -- preflights --------------------------------------------------------------------------------


@pytest.mark.parametrize("origin", [INBOX, "http://localhost:3000", "https://team-a.inbox.example.org"])
def test_a_preflight_from_an_allowed_origin_is_allowed_without_a_key(origin: str) -> None:
    response = preflight("/api/threads/search", origin)

    assert response.status_code == 200
    headers = cors_headers(response)
    assert headers["access-control-allow-origin"] == origin
    allowed = headers["access-control-allow-headers"].split(", ")
    assert {"content-type", "x-api-key", "authorization", "last-event-id", "x-request-id"} <= set(allowed)
    assert headers["access-control-allow-methods"].split(", ") == [
        "GET",
        "POST",
        "PATCH",
        "PUT",
        "DELETE",
        "OPTIONS",
    ]
    assert "access-control-allow-credentials" not in headers
    assert "origin" in response["Vary"].lower()


def test_a_preflight_of_an_endpoint_that_needs_a_key_is_not_refused_for_lacking_one() -> None:
    # The middleware answers it before ninja's authentication, which would otherwise 401 it.
    response = preflight("/api/assistants/search", INBOX)

    assert response.status_code == 200
    assert response.content == b""
    assert cors_headers(response)["access-control-allow-origin"] == INBOX


@pytest.mark.parametrize("origin", [STRANGER, "https://inbox.example.com.evil.example.net", "null"])
def test_a_preflight_from_another_origin_gets_no_cors_headers(origin: str) -> None:
    response = preflight("/api/threads/search", origin)

    assert cors_headers(response) == {}


def test_the_private_network_header_is_sent_only_when_turned_on(settings: Any) -> None:
    ask = {"Access-Control-Request-Private-Network": "true"}
    assert "access-control-allow-private-network" not in cors_headers(preflight("/api/ok", INBOX, **ask))

    settings.CORS_ALLOW_PRIVATE_NETWORK = True

    assert cors_headers(preflight("/api/ok", INBOX, **ask))["access-control-allow-private-network"] == "true"
    assert "access-control-allow-private-network" not in cors_headers(preflight("/api/ok", STRANGER, **ask))


def test_by_default_no_origin_is_allowed() -> None:
    from config import settings as defaults

    if os.getenv("SIGNOFF_CORS_ALLOWED_ORIGINS") or os.getenv("SIGNOFF_CORS_ALLOWED_ORIGIN_REGEXES"):
        pytest.skip("the environment allows origins")
    assert defaults.CORS_ALLOWED_ORIGINS == []
    assert defaults.CORS_ALLOWED_ORIGIN_REGEXES == []
    assert defaults.CORS_ALLOW_PRIVATE_NETWORK is False
    assert defaults.CORS_ALLOW_CREDENTIALS is False


# -- actual requests ---------------------------------------------------------------------------


def test_a_response_to_an_allowed_origin_exposes_the_headers_the_sdk_reads(reviewer: User) -> None:
    key = services.create_api_key(user=reviewer, name="inbox", actor=None).secret

    response = Client().post(
        "/api/assistants/search",
        {},
        content_type="application/json",
        headers={"Origin": INBOX, "x-api-key": key},
    )

    assert response.status_code == 200
    headers = cors_headers(response)
    assert headers["access-control-allow-origin"] == INBOX
    exposed = headers["access-control-expose-headers"].split(", ")
    assert {"Content-Location", "Location", "X-Pagination-Next", "X-Request-Id", "Retry-After"} <= set(
        exposed
    )
    assert "access-control-allow-headers" not in headers


def test_an_error_of_the_api_carries_the_cors_headers_too() -> None:
    # A browser cannot read a 401 (or any answer) without them.
    response = Client().post(
        "/api/assistants/search", {}, content_type="application/json", headers={"Origin": INBOX}
    )

    assert response.status_code == 401
    assert cors_headers(response)["access-control-allow-origin"] == INBOX


def test_a_response_to_another_origin_has_no_cors_headers(reviewer: User) -> None:
    response = Client().get("/api/ok", headers={"Origin": STRANGER})

    assert response.status_code == 200
    assert cors_headers(response) == {}


@pytest.mark.parametrize("path", ["/", "/accounts/login/", "/admin/login/", "/static/x.css", "/apix/ok"])
def test_the_reviewer_pages_never_get_cors_headers(path: str) -> None:
    got = Client().get(path, headers={"Origin": INBOX})
    asked = Client().options(path, headers={"Origin": INBOX, "Access-Control-Request-Method": "POST"})

    assert cors_headers(got) == {}
    assert cors_headers(asked) == {}
    assert "origin" not in got.get("Vary", "").lower()


# -- the settings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "https://inbox.example.com",
        "http://localhost:3000",
        "http://127.0.0.1:8123",
        "http://[::1]:2024",
        " https://a.example.com , https://b.example.com ",
    ],
)
def test_origins_as_browsers_send_them_are_accepted(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("SIGNOFF_CORS_ALLOWED_ORIGINS", value)

    assert cors_origins("SIGNOFF_CORS_ALLOWED_ORIGINS") == [part.strip() for part in value.split(",")]


@pytest.mark.parametrize(
    "bad",
    [
        "https://inbox.example.com/",
        "https://inbox.example.com/path",
        "https://Inbox.example.com",
        "inbox.example.com",
        "ftp://inbox.example.com",
        "https://user@inbox.example.com",
        "https://inbox.example.com?x=1",
        "*",
        "null",
    ],
)
def test_anything_else_is_refused_naming_it(monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    monkeypatch.setenv("SIGNOFF_CORS_ALLOWED_ORIGINS", f"http://localhost:3000,{bad}")

    with pytest.raises(ImproperlyConfigured) as refused:
        cors_origins("SIGNOFF_CORS_ALLOWED_ORIGINS")

    assert str(refused.value).startswith(f"SIGNOFF_CORS_ALLOWED_ORIGINS: {bad!r} is not an origin: ")


def test_an_origin_regex_must_compile_and_match_to_the_end(monkeypatch: pytest.MonkeyPatch) -> None:
    name = "SIGNOFF_CORS_ALLOWED_ORIGIN_REGEXES"
    monkeypatch.setenv(name, r"^https://[a-z]+\.example\.com$")
    assert cors_origin_regexes(name) == [r"^https://[a-z]+\.example\.com$"]

    monkeypatch.setenv(name, r"^https://[a-z+\.example\.com$")
    with pytest.raises(
        ImproperlyConfigured, match=r"is not a regular expression: unterminated character set"
    ):
        cors_origin_regexes(name)

    monkeypatch.setenv(name, r"^https://.*\.example\.com")
    with pytest.raises(ImproperlyConfigured, match=r"must match the whole origin: end it with \$"):
        cors_origin_regexes(name)


def test_a_bad_origin_stops_start_up_naming_it() -> None:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "SIGNOFF_CORS_ALLOWED_ORIGINS": "https://inbox.example.com/",
    }

    started = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"], env=env, capture_output=True, text=True
    )

    assert started.returncode != 0
    assert (
        "ImproperlyConfigured: SIGNOFF_CORS_ALLOWED_ORIGINS: 'https://inbox.example.com/' is not an origin"
        in started.stderr
    )


def test_the_origins_and_the_private_network_switch_come_from_the_environment() -> None:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "SIGNOFF_CORS_ALLOWED_ORIGINS": "https://inbox.example.com,http://localhost:3000",
        "SIGNOFF_CORS_ALLOWED_ORIGIN_REGEXES": r"^https://[a-z]+\.example\.org$",
        "SIGNOFF_CORS_ALLOW_PRIVATE_NETWORK": "yes",
    }
    code = (
        "import django; django.setup(); from django.conf import settings as s;"
        "print(s.CORS_ALLOWED_ORIGINS, s.CORS_ALLOWED_ORIGIN_REGEXES, s.CORS_ALLOW_PRIVATE_NETWORK)"
    )

    started = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)

    assert started.returncode == 0, started.stderr
    assert started.stdout.strip() == (
        "['https://inbox.example.com', 'http://localhost:3000'] ['^https://[a-z]+\\\\.example\\\\.org$'] True"
    )
