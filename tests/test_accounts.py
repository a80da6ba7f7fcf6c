"""Logging in and out (Django's auth views under Signoff's templates)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from tests.pages import LOGIN

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("doorbell")]


def test_the_login_page_renders_and_logs_in_with_username_and_password(reviewer: User):
    client = Client()
    page = client.get(LOGIN)
    assert page.status_code == 200
    assert 'name="username"' in page.text
    assert 'name="password"' in page.text

    response = client.post(LOGIN, {"username": "rita", "password": "password"})

    assert response.status_code == 302
    assert response["Location"] == reverse("approvals:queue")
    assert client.get(reverse("approvals:queue")).status_code == 200


def test_a_wrong_password_does_not_log_in(reviewer: User):
    client = Client()
    response = client.post(LOGIN, {"username": "rita", "password": "guess"})

    assert response.status_code == 200
    assert "Please enter a correct username and password" in response.text
    assert client.get(reverse("approvals:queue")).status_code == 302


def test_logout_is_post_only_and_logs_out(rita: Client):
    assert rita.get(reverse("logout")).status_code == 405
    assert rita.get(reverse("approvals:queue")).status_code == 200

    response = rita.post(reverse("logout"))

    assert response.status_code == 302
    assert rita.get(reverse("approvals:queue")).status_code == 302
