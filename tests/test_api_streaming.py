"""Streaming a run with the real `langgraph_sdk` client (`runs.join_stream`), from a real worker
that publishes as it runs, through the app under uvicorn (tests/servers.py).

On SQLite the events go through the file backend (the embedded default); on PostgreSQL, where
`make test` sets a redis:// broker, through Redis Streams: the same tests prove both.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import current_app
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from langgraph_sdk import get_sync_client
from langgraph_sdk.schema import StreamPart

from api import services as api_services
from tests.factories import make_user
from tests.servers import AsgiServer
from tests.workers import Worker, wait_for
from workflows import services, streams
from workflows.doorbell import RUN_THREAD
from workflows.models import Run, Thread

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.workers, pytest.mark.slow]

ALL_MODES = ["values", "updates", "checkpoints", "tasks", "events", "custom"]


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory, django_db_setup: None) -> Iterator[Worker]:
    from config.celery import app

    app.control.purge()
    started = Worker(tmp_path_factory.mktemp("stream-worker"), "streams").start()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, django_db_setup: None) -> Iterator[AsgiServer]:
    started = AsgiServer(tmp_path_factory.mktemp("stream-web"), "web").start()
    yield started
    started.stop()


@pytest.fixture
def key(tester: User) -> str:
    return api_services.create_api_key(user=tester, name="tests", actor=None).secret


def streamed_run(modes: list[str], actor: User, **input: Any) -> Run:
    """A thread of test_streamed whose first run streams `modes` (as the API's create_run sets
    them), delivered to the worker once they are set."""
    thread = services.start_thread(workflow="test_streamed", input={"count": 0, **input}, actor=actor)
    run = thread.runs.get()
    Run.objects.filter(pk=run.pk).update(stream_modes=modes)
    current_app.send_task(RUN_THREAD, args=[run.pk])
    run.refresh_from_db()
    return run


def join(server: AsgiServer, key: str, run: Run, **options: Any) -> list[StreamPart]:
    client = get_sync_client(url=server.api_url, api_key=key)
    return list(client.runs.join_stream(run.thread.thread_id, str(run.public_id), **options))


def named(parts: list[StreamPart], event: str) -> list[Any]:
    return [part.data for part in parts if part.event == event]


def test_a_run_streams_metadata_first_then_its_modes_in_order_and_end_last(
    worker: Worker, server: AsgiServer, key: str, tester: User, doorbell: list[int]
) -> None:
    run = streamed_run(ALL_MODES, tester)

    parts = join(server, key, run)

    assert parts[0].event == "metadata"
    assert parts[0].data == {"run_id": str(run.public_id), "attempt": 1}
    assert parts[-1].event == "end"
    assert [part.event for part in parts].count("end") == 1
    assert [value["count"] for value in named(parts, "values")] == [0, 1, 2]
    assert [next(iter(update)) for update in named(parts, "updates")] == ["first", "ask", "last"]
    assert named(parts, "custom") == [{"progress": "first", "note": ""}]
    assert [checkpoint["metadata"]["step"] for checkpoint in named(parts, "checkpoints")] == [-1, 0, 1, 2, 3]
    assert [(task["name"], "input" in task) for task in named(parts, "tasks")] == [
        ("first", True),
        ("first", False),
        ("ask", True),
        ("ask", False),
        ("last", True),
        ("last", False),
    ]
    events = named(parts, "events")
    assert [(event["event"], event["name"]) for event in events] == [
        ("on_chain_start", "test_streamed"),
        ("on_chain_start", "first"),
        ("on_chain_end", "first"),
        ("on_chain_start", "ask"),
        ("on_chain_end", "ask"),
        ("on_chain_start", "last"),
        ("on_chain_end", "last"),
        ("on_chain_end", "test_streamed"),
    ]
    # What Agent Inbox reads of them.
    assert events[1]["metadata"]["langgraph_node"] == "first"
    # Every frame has its own id, to resume after.
    ids = [part.id for part in parts]
    assert all(ids)
    assert len(set(ids)) == len(ids)
    run.refresh_from_db()
    assert run.status == Run.Status.SUCCEEDED


def test_a_stream_in_fewer_modes_gets_only_those_and_the_control_events(
    worker: Worker, server: AsgiServer, key: str, tester: User, doorbell: list[int]
) -> None:
    run = streamed_run(ALL_MODES, tester)

    parts = join(server, key, run, stream_mode=["updates"])

    assert {part.event for part in parts} == {"metadata", "updates", "end"}


def test_a_chat_model_in_a_node_streams_its_messages_as_tuples_and_as_partial_messages(
    worker: Worker, server: AsgiServer, key: str, tester: User, doorbell: list[int]
) -> None:
    run = streamed_run(["messages-tuple", "messages"], tester, talk=True)

    parts = join(server, key, run)

    tuples = named(parts, "messages")
    assert "".join(chunk["content"] for chunk, _metadata in tuples) == "Hi there, tess"
    assert {metadata["langgraph_node"] for _chunk, metadata in tuples} == {"first"}
    (seen,) = named(parts, "messages/metadata")
    assert next(iter(seen.values()))["metadata"]["langgraph_node"] == "first"
    partial = named(parts, "messages/partial")
    assert [message["content"] for (message,) in partial][-1] == "Hi there, tess"
    assert parts[-1].event == "end"


def test_a_run_at_an_interrupt_streams_it_in_updates_then_ends(
    worker: Worker, server: AsgiServer, key: str, tester: User, doorbell: list[int]
) -> None:
    run = streamed_run(["updates", "values"], tester, ask=True)

    parts = join(server, key, run)

    interrupts = [update["__interrupt__"] for update in named(parts, "updates") if "__interrupt__" in update]
    assert len(interrupts) == 1
    (interrupt,) = interrupts[0]
    assert interrupt["value"] == {"question": "go on?"}
    assert interrupt["id"]
    assert parts[-1].event == "end"
    assert Thread.objects.get(pk=run.thread_id).status == Thread.Status.INTERRUPTED


def test_a_failing_node_ends_the_stream_with_an_error(
    worker: Worker, server: AsgiServer, key: str, tester: User, doorbell: list[int]
) -> None:
    run = streamed_run(["values"], tester, fail=True)

    parts = join(server, key, run)

    assert parts[0].event == "metadata"
    assert parts[-1].event == "error"
    assert parts[-1].data == {"error": "ValueError", "message": "the last step failed on purpose"}
    assert "end" not in [part.event for part in parts]


def test_a_reconnect_with_last_event_id_gets_exactly_the_events_after_it(
    worker: Worker, server: AsgiServer, key: str, tester: User, doorbell: list[int]
) -> None:
    run = streamed_run(["values", "updates"], tester)
    everything = join(server, key, run)

    after = everything[3]
    rest = join(server, key, run, last_event_id=after.id)

    assert [(part.event, part.data, part.id) for part in rest] == [
        (part.event, part.data, part.id) for part in everything[4:]
    ]


def test_a_browser_run_nobody_streamed_is_joined_as_metadata_and_end(
    worker: Worker, server: AsgiServer, key: str, tester: User
) -> None:
    thread = services.start_thread(workflow="test_streamed", input={"count": 0}, actor=tester)
    run = thread.runs.get()
    wait_for(lambda: Run.objects.get(pk=run.pk).status == Run.Status.SUCCEEDED, timeout=60, what="the run")

    parts = join(server, key, run)

    assert [(part.event, part.data) for part in parts] == [
        ("metadata", {"run_id": str(run.public_id), "attempt": 1}),
        ("end", None),
    ]


# -- no database connection while a client waits (PostgreSQL: pg_stat_activity) -----------------

APP_NAME = "signoff-stream-web"


def web_backends() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [APP_NAME])
        (count,) = cursor.fetchone()
    return int(count)


@pytest.mark.postgres
def test_clients_waiting_on_a_stream_hold_no_database_connection(
    tmp_path: Path, worker: Worker, key: str, tester: User, doorbell: list[int]
) -> None:
    from tests.workers import database_url

    web = AsgiServer(
        tmp_path,
        "pg-web",
        DATABASE_URL=f"{database_url()}?application_name={APP_NAME}",
        DATABASE_POOL_SIZE="0",
        DATABASE_CONN_MAX_AGE="0",
        # No look at the run while the samples are taken: only the waiting is measured.
        SIGNOFF_STREAM_CHECK_SECONDS="60",
    ).start()
    hold = tmp_path / "hold"
    hold.touch()
    try:
        run = streamed_run(["values"], tester, hold_file=str(hold))
        # Read here: `run.thread` in a reader thread would open a database connection there
        # that nobody gives back to the pool (the checkpointer's leak tests count them).
        thread_id, run_id = run.thread.thread_id, str(run.public_id)
        received: list[list[StreamPart]] = [[] for _ in range(3)]

        def read(into: list[StreamPart]) -> None:
            client = get_sync_client(url=web.api_url, api_key=key)
            into.extend(client.runs.join_stream(thread_id, run_id))

        readers = [threading.Thread(target=read, args=(into,)) for into in received]
        for reader in readers:
            reader.start()
        # Each has had its first frames (metadata and the input's values) and now waits.
        wait_for(
            lambda: all(len(into) >= 2 for into in received), timeout=30, what="each client's first frames"
        )
        samples = []
        for _ in range(5):
            samples.append(web_backends())
            threading.Event().wait(0.2)
        hold.unlink()
        for reader in readers:
            reader.join(timeout=60)
    finally:
        hold.unlink(missing_ok=True)
        web.stop()

    assert samples == [0, 0, 0, 0, 0]
    assert all(into[-1].event == "end" for into in received)


# -- what the join endpoint refuses (no stream opened; Django's test client) ---------------------


def get_stream(key: str | None, run: Run, query: str = "", **headers: str) -> Any:
    if key is not None:
        headers["x-api-key"] = key
    path = f"/api/threads/{run.thread.thread_id}/runs/{run.public_id}/stream{query}"
    return Client().get(path, headers=headers)


@pytest.fixture
def queued_run(tester: User, doorbell: list[int]) -> Run:
    thread = services.start_thread(workflow="test_streamed", input={"count": 0}, actor=tester)
    run = thread.runs.get()
    Run.objects.filter(pk=run.pk).update(stream_modes=["values", "updates"])
    run.refresh_from_db()
    return run


def detail(response: Any) -> Any:
    return json.loads(response.content)["detail"]


def test_a_join_without_a_key_is_a_401(queued_run: Run) -> None:
    response = get_stream(None, queued_run)

    assert response.status_code == 401
    assert "API key" in detail(response)


def test_a_join_of_a_thread_the_key_does_not_see_is_a_404(queued_run: Run) -> None:
    stranger = api_services.create_api_key(user=make_user("otto", groups=["operators"]), name="t", actor=None)

    response = get_stream(stranger.secret, queued_run)

    assert response.status_code == 404
    assert detail(response) == f"Thread '{queued_run.thread.thread_id}' not found"


def test_a_join_of_an_unknown_run_is_a_404(key: str, queued_run: Run) -> None:
    path = f"/api/threads/{queued_run.thread.thread_id}/runs/not-a-run/stream"

    response = Client().get(path, headers={"x-api-key": key})

    assert response.status_code == 404
    assert detail(response) == "Run 'not-a-run' not found"


@pytest.mark.parametrize(
    ("query", "headers", "named_loc", "says"),
    [
        ("?stream_mode=values&stream_mode=bogus", {}, ["query", "stream_mode"], "unknown stream mode"),
        ("?stream_mode=custom", {}, ["query", "stream_mode"], "not created with stream mode 'custom'"),
        ("?cancel_on_disconnect=true", {}, ["query", "cancel_on_disconnect"], "does not cancel"),
        ("?since=3", {}, ["query", "since"], "does not implement"),
        ("", {"Last-Event-ID": "../etc"}, ["header", "Last-Event-ID"], "not an event id"),
    ],
)
def test_what_a_join_does_not_implement_is_a_422_naming_it(
    key: str, queued_run: Run, query: str, headers: dict[str, str], named_loc: list[str], says: str
) -> None:
    response = get_stream(key, queued_run, query, **headers)

    assert response.status_code == 422
    (error,) = detail(response)
    assert error["loc"] == named_loc
    assert says in error["msg"]


def test_a_join_is_get_only(key: str, queued_run: Run) -> None:
    path = f"/api/threads/{queued_run.thread.thread_id}/runs/{queued_run.public_id}/stream"

    response = Client().post(path, content_type="application/json", headers={"x-api-key": key})

    assert response.status_code == 405
    assert response["Allow"] == "GET"


# -- make run's server ---------------------------------------------------------------------------


def test_uvicorn_with_debug_on_serves_the_static_files_as_runserver_did(asgi_server: Any) -> None:
    import httpx

    web = asgi_server("debug-web", DJANGO_DEBUG="true")

    css = httpx.get(f"{web.url}/static/admin/css/base.css")
    ok = httpx.get(f"{web.api_url}/ok")

    assert css.status_code == 200
    assert css.headers["content-type"].startswith("text/css")
    assert ok.json() == {"ok": True}


def test_a_client_that_goes_away_ends_its_stream_on_the_server(
    tmp_path: Path, worker: Worker, server: AsgiServer, key: str, tester: User, doorbell: list[int]
) -> None:
    import httpx

    hold = tmp_path / "hold"
    hold.touch()
    try:
        run = streamed_run(["values"], tester, hold_file=str(hold))
        path = f"{server.api_url}/threads/{run.thread.thread_id}/runs/{run.public_id}/stream"
        on_redis = settings.SIGNOFF_STREAM_BACKEND == "redis"
        readers = redis.Redis.from_url(settings.SIGNOFF_STREAM_REDIS_URL) if on_redis else None

        def waiting() -> int:
            assert readers is not None
            names = [client["name"] for client in readers.client_list()]
            return names.count(streams.READER_CLIENT_NAME)

        with (
            httpx.Client(headers={"x-api-key": key}) as client,
            client.stream("GET", path) as response,
        ):
            # Held on to: a line iterator dropped would close the response (a disconnect).
            lines = response.iter_lines()
            first = next(lines)
            if on_redis:
                wait_for(lambda: waiting() == 1, timeout=10, what="the stream to wait in XREAD")
        assert first == "event: metadata"
        if on_redis:
            # Its XREAD connection is closed, not left blocking for a reader who is gone.
            wait_for(lambda: waiting() == 0, timeout=10, what="the stream's Redis connection to close")
    finally:
        hold.unlink(missing_ok=True)
    wait_for(lambda: Run.objects.get(pk=run.pk).status == Run.Status.SUCCEEDED, timeout=30, what="the run")
    assert "Traceback" not in server.text()
