"""A web request while the database is unreachable (issue 9, item 6): it gives up after the
pool's short timeout with a 503 page that says to retry, never a 500."""

from __future__ import annotations

import sqlite3
from typing import Any

import psycopg
import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.urls import reverse

from tests.pages import client_for

pytestmark = pytest.mark.django_db(transaction=True)


def refuse_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on every new connection is refused, as a restarting PostgreSQL (or a pool
    that timed out) refuses it; the open one is closed so the next query must connect."""
    error: Any = psycopg.OperationalError if connection.vendor == "postgresql" else sqlite3.OperationalError

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise error("connection refused")

    connection.close()
    monkeypatch.setattr(connection, "get_new_connection", refuse)


def logged_in(user: User) -> Client:
    # The test client re-raises what the handler logged; a browser only sees the response.
    return client_for(user, raise_request_exception=False)


def assert_retry_later(response: Any) -> None:
    assert response.status_code == 503
    assert response["Retry-After"] == "10"
    assert "try again" in response.content.decode().lower()


def test_the_queue_with_the_database_down_is_a_503_that_says_to_retry(
    reviewer: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = logged_in(reviewer)
    refuse_connections(monkeypatch)

    response = client.get(reverse("approvals:queue"))

    assert_retry_later(response)
    assert "<html" in response.content.decode()


def test_an_htmx_request_with_the_database_down_gets_the_message_alone(
    reviewer: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = logged_in(reviewer)
    refuse_connections(monkeypatch)

    response = client.get(reverse("approvals:queue"), headers={"HX-Request": "true"})

    assert_retry_later(response)
    assert "<html" not in response.content.decode()


def test_a_failure_after_the_view_in_the_session_save_is_a_503_too(
    reviewer: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = logged_in(reviewer)
    refuse_connections(monkeypatch)

    # Logging out saves the session after the view ran: the failure is in middleware.
    response = client.post(reverse("logout"))

    assert_retry_later(response)
