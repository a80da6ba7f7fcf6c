"""HTTPS settings (HSTS, the HTTPS redirect, the proxy's header) come from the environment,
on by default in production and off under DEBUG; a typo stops start-up."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from config.settings import BASE_DIR

HTTPS_VARIABLES = (
    "SECURE_SSL_REDIRECT",
    "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_HSTS_PRELOAD",
    "SECURE_PROXY_SSL_HEADER",
    "SESSION_COOKIE_SECURE",
)
PRODUCTION = {
    "DJANGO_DEBUG": "false",
    "DJANGO_SECRET_KEY": "k3!x" * 16,
    "ALLOWED_HOSTS": "signoff.example.com",
}


def _env(**overrides: str) -> dict[str, str]:
    # The test run turns the redirect off for the test client; start from production.
    env = {name: value for name, value in os.environ.items() if name not in HTTPS_VARIABLES}
    env.update(PRODUCTION)
    env.update(overrides)
    env["DJANGO_SETTINGS_MODULE"] = "config.settings"
    return env


def _settings(**overrides: str) -> dict[str, object]:
    code = (
        "import json; from django.conf import settings as s;"
        "print(json.dumps({n: getattr(s, n) for n in ("
        "'SECURE_SSL_REDIRECT', 'SECURE_HSTS_SECONDS', 'SECURE_HSTS_INCLUDE_SUBDOMAINS',"
        "'SECURE_HSTS_PRELOAD', 'SECURE_PROXY_SSL_HEADER')}))"
    )
    shown = subprocess.run(
        [sys.executable, "-c", code], env=_env(**overrides), capture_output=True, text=True, check=True
    )
    return json.loads(shown.stdout)  # type: ignore[no-any-return]


def test_check_deploy_has_no_hsts_or_https_redirect_warning_in_production():
    checked = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        cwd=BASE_DIR,
        env=_env(),
        capture_output=True,
        text=True,
    )

    output = checked.stdout + checked.stderr
    assert checked.returncode == 0, output
    assert "security.W004" not in output
    assert "security.W008" not in output


def test_production_defaults_are_on():
    shown = _settings()

    assert shown["SECURE_SSL_REDIRECT"] is True
    assert shown["SECURE_HSTS_SECONDS"] == 31_536_000
    # Both reach beyond this app (every subdomain; browsers' preload lists): opt in only.
    assert shown["SECURE_HSTS_INCLUDE_SUBDOMAINS"] is False
    assert shown["SECURE_HSTS_PRELOAD"] is False
    assert shown["SECURE_PROXY_SSL_HEADER"] is None


def test_debug_turns_them_off_for_make_run():
    shown = _settings(DJANGO_DEBUG="true")

    assert shown["SECURE_SSL_REDIRECT"] is False
    assert shown["SECURE_HSTS_SECONDS"] == 0
    assert shown["SECURE_PROXY_SSL_HEADER"] is None


def test_the_settings_follow_the_environment():
    shown = _settings(
        SECURE_SSL_REDIRECT="false",
        SECURE_HSTS_SECONDS="3600",
        SECURE_HSTS_INCLUDE_SUBDOMAINS="true",
        SECURE_HSTS_PRELOAD="yes",
        SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto",
    )

    assert shown == {
        "SECURE_SSL_REDIRECT": False,
        "SECURE_HSTS_SECONDS": 3600,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
        "SECURE_HSTS_PRELOAD": True,
        "SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_PROTO", "https"],
    }


def test_the_proxy_header_may_name_its_value():
    shown = _settings(SECURE_PROXY_SSL_HEADER="X-Forwarded-Ssl=on")

    assert shown["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_SSL", "on"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SECURE_SSL_REDIRECT", "ture"),
        ("SECURE_HSTS_INCLUDE_SUBDOMAINS", "maybe"),
        ("SECURE_HSTS_PRELOAD", "1 "),
        ("SECURE_HSTS_SECONDS", "a year"),
        ("SECURE_HSTS_SECONDS", "-1"),
        ("SECURE_PROXY_SSL_HEADER", "X Forwarded Proto"),
        ("SECURE_PROXY_SSL_HEADER", "X-Forwarded-Proto="),
    ],
)
def test_a_typo_stops_start_up_naming_the_variable(name: str, value: str):
    started = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env=_env(**{name: value}),
        capture_output=True,
        text=True,
    )

    assert started.returncode != 0
    assert "ImproperlyConfigured" in started.stderr
    assert name in started.stderr
