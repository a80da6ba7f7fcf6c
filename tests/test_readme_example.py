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
    api_url: str, reviewer: User, worker: Worker
) -> None:
    code = readme_example()
    assert "http://127.0.0.1:8000/api" in code
    assert '"signoff_…"' in code
    key = key_for(reviewer, "start_thread")
    names: dict[str, Any] = {}

    exec(code.replace("http://127.0.0.1:8000/api", api_url).replace('"signoff_…"', repr(key)), names)  # noqa: S102

    assert names["paused"]["__interrupt__"]
    assert names["done"]["outcome"] == "paid 42.00"
