"""The fixtures of the tests that drive the API from the outside (tests/clients.py has the
helpers). A test module takes them with `pytest_plugins = ["tests.client_fixtures"]`:

- `api_url`: the API's base URL on a live server: what `get_client(url=...)`, `RemoteGraph` and
  the JS `Client({apiUrl})` are given.
- `worker`: one real Celery worker on the test database, for the module, so runs started through
  the API are executed as in production (no eager tasks).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.clients import CORS_ORIGINS
from tests.workers import Worker


@pytest.fixture
def api_url(asgi_server: Any, transactional_db: None) -> str:
    """The API as production serves it: the app under uvicorn (tests/servers.py), which streams
    (`runs.stream`, RemoteGraph's invoke and stream, the Inbox's resume) and waits without a
    thread per client, on the test database, with CORS open to CORS_ORIGINS."""
    server = asgi_server(SIGNOFF_CORS_ALLOWED_ORIGINS=",".join(CORS_ORIGINS))
    return server.api_url


@pytest.fixture(scope="module")
def worker(django_db_setup: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    from config.celery import app

    # Messages other tests' services left in the broker are for threads that no longer exist.
    app.control.purge()
    started = Worker(tmp_path_factory.mktemp("clients-worker"), "clients").start()
    yield started
    started.stop()
