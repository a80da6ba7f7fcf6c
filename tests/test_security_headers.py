"""Every response carries X-Frame-Options and the Content-Security-Policy, including the
ones that middleware answers before any view runs."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

pytestmark = pytest.mark.django_db


def _assert_protected(response: Any) -> None:
    assert response["X-Frame-Options"] == "DENY"
    policy = response["Content-Security-Policy"]
    assert "default-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy


def test_an_oversized_post_refused_with_413_carries_the_headers(settings: Any):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2000

    response = Client().post(reverse("login"), {"username": "x" * 5000, "password": "p"})

    assert response.status_code == 413
    assert "The submission is too large" in response.text
    _assert_protected(response)


def test_an_ordinary_page_carries_the_headers():
    response = Client().get(reverse("login"))

    assert response.status_code == 200
    _assert_protected(response)


def test_the_slash_redirect_carries_the_headers():
    response = Client().get("/accounts/login")

    assert response.status_code == 301
    _assert_protected(response)


def test_the_https_redirect_carries_the_headers(settings: Any):
    settings.SECURE_SSL_REDIRECT = True

    response = Client().get(reverse("login"))

    assert response.status_code == 301
    assert response["Location"].startswith("https://")
    _assert_protected(response)


def test_a_page_not_found_carries_the_headers():
    response = Client().get("/no/such/page/")

    assert response.status_code == 404
    _assert_protected(response)


def test_the_security_headers_come_first_in_the_middleware(settings: Any):
    # Whatever answers early (the size check, the HTTPS redirect, static files, a lockout)
    # answers inside these two, so its response passes through them.
    first_two = set(settings.MIDDLEWARE[:2])

    assert first_two == {
        "django.middleware.clickjacking.XFrameOptionsMiddleware",
        "django.middleware.csp.ContentSecurityPolicyMiddleware",
    }
