"""Repeated wrong passwords lock the sign-in out for a while, audited, saying nothing about
whether the account exists."""

from __future__ import annotations

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from workflows.models import AuditEvent

pytestmark = pytest.mark.django_db

LOCKED = "Too many failed sign-in attempts"


def _login(client: Client, username: str, password: str, ip: str = "203.0.113.7") -> object:
    return client.post(reverse("login"), {"username": username, "password": password}, REMOTE_ADDR=ip)


def _fail_until_locked(client: Client, username: str, ip: str = "203.0.113.7") -> object:
    response = None
    for _ in range(settings.AXES_FAILURE_LIMIT):
        response = _login(client, username, "wrong", ip)
    return response


def test_the_limit_and_cool_off_come_from_the_environment_with_safe_defaults():
    assert settings.AXES_FAILURE_LIMIT == 5
    assert settings.AXES_COOLOFF_TIME.total_seconds() == 15 * 60
    # One client guessing at an account locks out that client for it, not everyone.
    assert settings.AXES_LOCKOUT_PARAMETERS == [["username", "ip_address"]]


def test_wrong_passwords_below_the_limit_get_the_ordinary_form_error(reviewer: User):
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        response = _login(client, "rita", "wrong")

    assert response.status_code == 200
    assert "Please enter a correct username and password" in response.content.decode()


@pytest.mark.parametrize("username", ["rita", "nobody-by-that-name"])
def test_too_many_wrong_passwords_lock_out_with_the_same_message_for_any_name(reviewer: User, username: str):
    client = Client()
    response = _fail_until_locked(client, username)

    page = response.content.decode()
    assert response.status_code == 429
    assert LOCKED in page
    assert "15\xa0minutes" in page  # timesince keeps the number and unit together
    assert username not in page
    # The app's own layout, with its headers.
    assert "<nav" in page or "Signoff" in page
    assert response["X-Frame-Options"] == "DENY"
    assert "Content-Security-Policy" in response


def test_locked_out_pages_for_an_existing_and_a_missing_account_are_the_same(reviewer: User):
    existing = _fail_until_locked(Client(), "rita").content.decode().replace("rita", "NAME")
    missing = _fail_until_locked(Client(), "nobody").content.decode().replace("nobody", "NAME")

    def without_tokens(page: str) -> str:
        return "\n".join(line for line in page.splitlines() if "csrf" not in line.lower())

    assert without_tokens(existing) == without_tokens(missing)


def test_the_right_password_is_refused_while_locked_out(reviewer: User):
    client = Client()
    _fail_until_locked(client, "rita")

    response = _login(client, "rita", "password")

    assert response.status_code == 429
    assert "_auth_user_id" not in client.session


def test_another_client_can_still_sign_in_to_the_locked_account(reviewer: User):
    _fail_until_locked(Client(), "rita", ip="203.0.113.7")

    elsewhere = Client()
    response = _login(elsewhere, "rita", "password", ip="198.51.100.20")

    assert response.status_code == 302
    assert elsewhere.session["_auth_user_id"] == str(reviewer.pk)


def test_signing_in_works_again_after_the_cool_off(reviewer: User):
    client = Client()
    _fail_until_locked(client, "rita")
    assert _login(client, "rita", "password").status_code == 429

    AccessAttempt.objects.update(
        attempt_time=AccessAttempt.objects.get().attempt_time - settings.AXES_COOLOFF_TIME
    )
    response = _login(client, "rita", "password")

    assert response.status_code == 302
    assert client.session["_auth_user_id"] == str(reviewer.pk)


def test_failed_sign_ins_and_the_lockout_are_audited_without_the_password(reviewer: User):
    client = Client()
    _login(client, "rita", "hunter2-secret")
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        _login(client, "rita", "hunter2-secret")

    failed = AuditEvent.objects.filter(action="login.failed").order_by("id")
    locked = AuditEvent.objects.filter(action="login.locked_out")
    assert failed.count() == settings.AXES_FAILURE_LIMIT
    assert locked.count() == 1
    first = failed.first()
    assert first is not None
    assert first.data == {"username": "rita", "ip_address": "203.0.113.7"}
    assert first.actor_id is None
    assert locked.get().data == {"username": "rita", "ip_address": "203.0.113.7"}
    for event in AuditEvent.objects.all():
        assert "hunter2" not in str(event.data)
        assert "hunter2" not in event.actor_label


def test_the_audit_chain_still_verifies_after_login_events(reviewer: User):
    from django.core.management import call_command

    _fail_until_locked(Client(), "rita")

    call_command("verify_audit")
