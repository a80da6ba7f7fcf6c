"""bench/api.py's loop, the one it times against Signoff and `langgraph dev`, run once against
the live server with a real worker, so the benchmark's Signoff side is known to work."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from langgraph_sdk import get_sync_client

from bench.api import loop
from tests.clients import key_for
from tests.workers import Worker

pytest_plugins = ["tests.client_fixtures"]
pytestmark = pytest.mark.django_db(transaction=True)


def test_the_benchmarks_loop_runs_against_signoff(
    api_url: str, admin: User, reviewer: User, worker: Worker
) -> None:
    client = get_sync_client(url=api_url, api_key=key_for(admin))
    approver = get_sync_client(url=api_url, api_key=key_for(reviewer))

    to_interrupt, to_done = loop(client, approver)

    assert 0 < to_interrupt < 60
    assert 0 < to_done < 60
