"""Harnesses for the tests that drive the API from the outside, as LangGraph's own clients do:
the JS client `@langchain/langgraph-sdk` run with node (tests/js/, installed by bin/setup-node),
and the server and worker those clients talk to.

The fixtures (`api_url`, `worker`) are in tests/client_fixtures.py, which a test module takes
with `pytest_plugins = ["tests.client_fixtures"]`.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User

from api import services
from tests.pages import grant

JS_DIR = Path(__file__).resolve().parent / "js"
NODE = os.environ.get("SIGNOFF_NODE", "node")
# A script waits on runs the worker executes; a minute is far more than any of them takes.
NODE_TIMEOUT = 120

# The origins the API server of the client tests lets in with CORS (tests/client_fixtures.api_url):
# Agent Inbox as it is served, and a local copy.
CORS_ORIGINS = ("https://dev.agentinbox.ai", "http://localhost:3000")


def key_for(user: User, *permissions: str) -> str:
    """A new API key's secret for `user`, who is first given these workflows permissions
    (codenames: "start_thread", "cancel_thread", ...)."""
    if permissions:
        user = grant(user, *permissions)
    return services.create_api_key(user=user, name="tests", actor=None).secret


def run_node(script: str, *, url: str, api_key: str | None, args: Any = None) -> Any:
    """Run tests/js/<script> with node and return what it printed as JSON.

    The script reads the API's URL, the key and its arguments (JSON) from the environment
    (SIGNOFF_API_URL, SIGNOFF_API_KEY, SIGNOFF_ARGS; see tests/js/lib.mjs). A script that exits
    non-zero fails the test with node's stderr, where lib.mjs writes the error and what the
    server answered."""
    if not (JS_DIR / "node_modules" / "@langchain" / "langgraph-sdk").is_dir():
        pytest.fail("tests/js is not installed: run `make node` (bin/setup-node)")
    env = {
        **os.environ,
        "SIGNOFF_API_URL": url,
        "SIGNOFF_API_KEY": api_key or "",
        "SIGNOFF_ARGS": json.dumps(args if args is not None else {}),
    }
    # The JS client reads a key from these when it is given none; the tests say which key.
    for name in ("LANGGRAPH_API_KEY", "LANGSMITH_API_KEY", "LANGCHAIN_API_KEY"):
        env.pop(name, None)
    try:
        done = subprocess.run(
            [NODE, str(JS_DIR / script)],
            cwd=JS_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=NODE_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as timeout:
        pytest.fail(f"node {script} took more than {NODE_TIMEOUT}s; stderr:\n{timeout.stderr}")
    if done.returncode != 0:
        pytest.fail(f"node {script} exited with {done.returncode}; stderr:\n{done.stderr}")
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"node {script} printed no JSON; stdout:\n{done.stdout}\nstderr:\n{done.stderr}")
