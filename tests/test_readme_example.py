"""The README's langgraph_sdk example, run as written against a live server and a real worker."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.contrib.auth.models import User

from tests.clients import key_for
from tests.workers import ROOT, Worker

pytest_plugins = ["tests.client_fixtures"]
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.workers]


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## From code: the LangGraph SDK", 1)[1]
    found = re.search(r"```python\n(.*?)```", section, re.S)
    assert found, "the README's SDK section has no python block"
    return found.group(1)


def test_the_readmes_sdk_example_runs_a_thread_through_its_review(
    api_url: str, reviewer: User, other_reviewer: User, worker: Worker
) -> None:
    code = readme_example()
    assert "http://127.0.0.1:8000/api" in code
    assert '"signoff_requester…"' in code
    assert '"signoff_reviewer…"' in code
    # Two people: the one who starts a thread may not approve it (segregation of duties).
    keys = {
        '"signoff_requester…"': repr(key_for(other_reviewer, "start_thread")),
        '"signoff_reviewer…"': repr(key_for(reviewer)),
    }
    for placeholder, key in keys.items():
        code = code.replace(placeholder, key)
    names: dict[str, Any] = {}

    exec(code.replace("http://127.0.0.1:8000/api", api_url), names)  # noqa: S102

    assert names["paused"]["__interrupt__"]
    assert names["done"]["outcome"] == "paid 42.00"
