"""Streaming tests whose workers are their own: a worker killed in mid-run, whose second attempt
streams on the same stream, and a worker and server holding SIGNOFF_ENCRYPTION_KEY, whose
events are sealed where they are stored (Redis or the file under var/).

A module apart from tests/test_api_streaming.py: its module-scoped worker would take these
runs' messages.
"""

from __future__ import annotations

import base64
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import current_app
from django.conf import settings
from django.contrib.auth.models import User

from api import services as api_services
from tests.servers import AsgiServer
from tests.test_api_streaming import join, named, streamed_run
from tests.workers import Worker, wait_for
from workflows import services, streams
from workflows.doorbell import RUN_THREAD
from workflows.models import Run

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.workers, pytest.mark.slow]

KEY = base64.urlsafe_b64encode(b"streaming-tests-key-32-bytes-ok!").decode()


@pytest.fixture
def key(tester: User) -> str:
    return api_services.create_api_key(user=tester, name="tests", actor=None).secret


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
    sealed: AsgiServer, key: str, tester: User, doorbell: list[int]
) -> None:
    run = streamed_run(["values", "custom"], tester, note="plaintext-marker-4711")

    parts = join(sealed, key, run)

    assert named(parts, "custom") == [{"progress": "first", "note": "plaintext-marker-4711"}]
    assert named(parts, "values")[-1]["note"] == "plaintext-marker-4711"
    stored = stored_text(run)
    assert stored.count(b"sealed:v1:") == len(parts)
    assert b"plaintext-marker-4711" not in stored
    assert b"values" not in stored


def test_a_run_redelivered_after_its_worker_died_streams_its_second_attempt_on_the_same_stream(
    tmp_path: Path, key: str, tester: User, doorbell: list[int]
) -> None:
    from config.celery import app

    app.control.purge()
    hold = tmp_path / "hold"
    hold.touch()
    first = Worker(tmp_path, "first").start()
    server = AsgiServer(tmp_path, "web").start()
    second = None
    try:
        run = streamed_run(["values"], tester, hold_file=str(hold))
        # The first attempt's metadata and the input's values are out; its node is held.
        wait_for(lambda: len(stored_lines(run)) >= 2, timeout=30, what="the first attempt's events")
        first.signal(signal.SIGKILL)
        assert first.process is not None
        first.process.wait(timeout=30)
        hold.unlink()
        second = Worker(tmp_path, "second").start()

        def redelivered() -> bool:
            services.sweep()
            # The sweeper's doorbell is held here (capture_doorbell): ring it for real.
            while doorbell:
                current_app.send_task(RUN_THREAD, args=[doorbell.pop()])
            return Run.objects.get(pk=run.pk).status == Run.Status.SUCCEEDED

        wait_for(redelivered, timeout=60, what="the second attempt to finish", every=0.5)
        parts = join(server, key, run)
    finally:
        hold.unlink(missing_ok=True)
        for process in (first, second, server):
            if process is not None:
                process.stop()

    attempts = [(index, part.data["attempt"]) for index, part in enumerate(parts) if part.event == "metadata"]
    assert [attempt for _index, attempt in attempts] == [1, 2]
    assert parts[0].event == "metadata"
    assert parts[-1].event == "end"
    # What the second attempt streamed runs on to the end of the graph.
    second_values = [part.data["count"] for part in parts[attempts[1][0] :] if part.event == "values"]
    assert second_values[-1] == 2


def stored_lines(run: Run) -> list[bytes]:
    try:
        return [line for line in stored_text(run).split(b"\n") if line]
    except FileNotFoundError:
        return []
