"""With SIGNOFF_ENCRYPTION_KEY set, a streamed run's events are sealed where they are stored (Redis
or the file under var/): no plaintext copy of state there, and the client still reads them.

Its own module: its worker and server hold the key, which the other streaming tests' worker
(module-scoped there) does not, and must not take this run's message.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings
from django.contrib.auth.models import User

from api import services as api_services
from tests.factories import capture_doorbell, make_user
from tests.servers import AsgiServer
from tests.test_api_streaming import join, named, streamed_run
from tests.workers import Worker
from workflows import streams
from workflows.models import Run

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.workers, pytest.mark.slow]

KEY = base64.urlsafe_b64encode(b"streaming-tests-key-32-bytes-ok!").decode()


@pytest.fixture
def tess() -> User:
    return make_user("tess", groups=["testers"])


@pytest.fixture
def key(tess: User) -> str:
    return api_services.create_api_key(user=tess, name="tests", actor=None).secret


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    return capture_doorbell(monkeypatch)


@pytest.fixture
def sealed(tmp_path: Path, settings: Any) -> Iterator[AsgiServer]:
    """A worker and a server with the key, and the key in this process (which starts the thread)."""
    from config.celery import app

    settings.SIGNOFF_ENCRYPTION_KEY = base64.urlsafe_b64decode(KEY)
    app.control.purge()
    worker = Worker(tmp_path, "sealed", SIGNOFF_ENCRYPTION_KEY=KEY).start()
    server = AsgiServer(tmp_path, "sealed-web", SIGNOFF_ENCRYPTION_KEY=KEY)
    try:
        yield server.start()
    finally:
        server.stop()
        worker.stop()


def stored_text(run: Run) -> bytes:
    """Everything the backend holds of the run's events, as stored."""
    stream = streams.stream_key(run.public_id)
    if settings.SIGNOFF_STREAM_BACKEND == "redis":
        entries = redis.Redis.from_url(settings.SIGNOFF_STREAM_REDIS_URL).xrange(stream)
        return b"\n".join(fields[b"e"] for _id, fields in entries)
    return streams.FileBackend(settings.SIGNOFF_STREAM_DIR).path(stream).read_bytes()


def test_with_an_encryption_key_events_are_stored_sealed(
    sealed: AsgiServer, key: str, tess: User, held: list[int]
) -> None:
    run = streamed_run(["values", "custom"], tess, note="plaintext-marker-4711")

    parts = join(sealed, key, run)

    assert named(parts, "custom") == [{"progress": "first", "note": "plaintext-marker-4711"}]
    assert named(parts, "values")[-1]["note"] == "plaintext-marker-4711"
    stored = stored_text(run)
    assert stored.count(b"sealed:v1:") == len(parts)
    assert b"plaintext-marker-4711" not in stored
    assert b"values" not in stored
