"""The two stream backends, how an event is stored (sealed with a key), and what a worker's
publisher makes of LangGraph's chunks: no worker, no server."""

from __future__ import annotations

import asyncio
import base64
import os
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from langchain_core.messages import AIMessage, AIMessageChunk
from langgraph.types import Interrupt, StateSnapshot

from api.streaming import frame, stream_response, wanted
from workflows import streams
from workflows.models import Run, Thread
from workflows.sealed import PlaintextRefused, SealBroken

KEY = base64.urlsafe_b64decode(base64.urlsafe_b64encode(b"unit-tests-stream-key-32-bytes!!"))


def read(backend: streams.Backend, stream: str, after: str | None = None, wait: float = 0.0) -> list[Any]:
    async def once() -> list[tuple[str, str]]:
        # A backend's async connection belongs to one event loop: closed before this one ends.
        try:
            return await backend.read(stream, after, wait=wait)
        finally:
            await backend.close()

    return asyncio.run(once())


# -- the file backend --------------------------------------------------------------------------


def test_the_file_backend_reads_what_was_appended_and_resumes_after_an_id(tmp_path: Path) -> None:
    backend = streams.FileBackend(tmp_path)
    backend.append("signoff:run:r1", ["a 1", "b 2"])
    backend.append("signoff:run:r1", ["c 3"])

    everything = read(backend, "signoff:run:r1")
    after_first = read(backend, "signoff:run:r1", everything[0][0])

    assert [line for _id, line in everything] == ["a 1", "b 2", "c 3"]
    assert after_first == everything[1:]
    assert all(backend.valid_id(event_id) for event_id, _line in everything)
    assert read(backend, "signoff:run:r1", everything[-1][0]) == []


def test_the_file_backend_leaves_a_line_being_written_and_skips_one_a_killed_worker_tore(
    tmp_path: Path,
) -> None:
    backend = streams.FileBackend(tmp_path)
    backend.append("signoff:run:r2", ["a 1"])
    with backend.path("signoff:run:r2").open("ab") as file:
        file.write(b'b {"half')

    assert [line for _id, line in read(backend, "signoff:run:r2")] == ["a 1"]
    # The next attempt's events start on their own line; the torn one reads as a line to skip.
    backend.append("signoff:run:r2", ["c 3"])
    assert [line for _id, line in read(backend, "signoff:run:r2")] == ["a 1", 'b {"half', "c 3"]


def test_a_file_reader_waits_for_the_next_event(tmp_path: Path) -> None:
    backend = streams.FileBackend(tmp_path)

    async def late_append() -> list[tuple[str, str]]:
        reading = asyncio.ensure_future(backend.read("signoff:run:r3", None, wait=5))
        await asyncio.sleep(0.3)
        backend.append("signoff:run:r3", ["late 1"])
        return await reading

    started = time.monotonic()
    assert [line for _id, line in asyncio.run(late_append())] == ["late 1"]
    assert time.monotonic() - started < 2
    assert read(streams.FileBackend(tmp_path), "signoff:run:none", wait=0.2) == []


def test_the_file_backend_removes_logs_older_than_the_ttl(tmp_path: Path, settings: Any) -> None:
    settings.SIGNOFF_STREAM_TTL_SECONDS = 60
    backend = streams.FileBackend(tmp_path)
    backend.append("signoff:run:old", ["a 1"])
    old = backend.path("signoff:run:old")
    os.utime(old, (time.time() - 120, time.time() - 120))
    streams.FileBackend._pruned_at = 0.0

    backend.append("signoff:run:new", ["b 2"])

    assert not old.exists()
    assert backend.path("signoff:run:new").exists()


# -- the Redis backend (with a redis:// broker, as `make test-postgres` runs) --------------------

needs_redis = pytest.mark.skipif(
    not django_settings.CELERY_BROKER_URL.startswith("redis://"), reason="needs Redis (CELERY_BROKER_URL)"
)


@needs_redis
def test_the_redis_backend_appends_with_a_bound_and_an_expiry_and_resumes_after_an_id(settings: Any) -> None:
    import redis

    settings.SIGNOFF_STREAM_MAXLEN = 5
    settings.SIGNOFF_STREAM_TTL_SECONDS = 300
    backend = streams.RedisBackend(settings.CELERY_BROKER_URL)
    stream = streams.stream_key(uuid.uuid4())
    backend.append(stream, ["a 1", "b 2"])
    backend.append(stream, ["c 3"])

    everything = read(backend, stream)
    after_first = read(backend, stream, everything[0][0])
    plain = redis.Redis.from_url(settings.CELERY_BROKER_URL)

    assert [line for _id, line in everything] == ["a 1", "b 2", "c 3"]
    assert after_first == everything[1:]
    assert all(backend.valid_id(event_id) for event_id, _line in everything)
    assert 0 < plain.ttl(stream) <= 300
    backend.append(stream, [f"x {n}" for n in range(200)])
    # MAXLEN ~ trims whole nodes: the stream is bounded, if not to the exact number.
    assert plain.xlen(stream) < 200
    plain.delete(stream)


@needs_redis
def test_a_redis_reader_blocks_until_the_next_event(settings: Any) -> None:
    backend = streams.RedisBackend(settings.CELERY_BROKER_URL)
    writer = streams.RedisBackend(settings.CELERY_BROKER_URL)
    stream = streams.stream_key(uuid.uuid4())

    async def late_append() -> list[tuple[str, str]]:
        reading = asyncio.ensure_future(backend.read(stream, None, wait=5))
        await asyncio.sleep(0.3)
        await asyncio.to_thread(writer.append, stream, ["late 1"])
        found = await reading
        await backend.close()
        return found

    assert [line for _id, line in asyncio.run(late_append())] == ["late 1"]


# -- how an event is stored ----------------------------------------------------------------------


def test_an_event_is_one_line_of_plain_json_without_a_key() -> None:
    stored = streams.encode("signoff:run:r", "values", {"note": "line\nbreak", "euro": "€"})

    assert "\n" not in stored
    assert streams.decode("signoff:run:r", stored) == ("values", '{"note":"line\\nbreak","euro":"\\u20ac"}')


def test_with_a_key_an_event_is_sealed_and_opens_only_on_its_own_stream(settings: Any) -> None:
    settings.SIGNOFF_ENCRYPTION_KEY = KEY

    stored = streams.encode("signoff:run:r", "values", {"note": "secret-note"})

    assert stored.startswith("sealed:v1:")
    assert "secret-note" not in stored
    assert "values" not in stored
    assert streams.decode("signoff:run:r", stored) == ("values", '{"note":"secret-note"}')
    with pytest.raises(SealBroken):
        streams.decode("signoff:run:other", stored)
    with pytest.raises(PlaintextRefused):
        streams.decode("signoff:run:r", 'values {"note":"slipped in"}')


def test_a_frame_is_written_as_langgraphs_server_writes_it() -> None:
    assert frame("values", '{"a":1}', "17") == b'event: values\ndata: {"a":1}\nid: 17\n\n'
    assert frame("end", "null", None) == b"event: end\ndata: null\n\n"


def test_a_reader_gets_the_modes_it_asked_for_and_always_the_control_events() -> None:
    modes = {"updates", "messages-tuple"}

    assert [
        event
        for event in (
            "metadata",
            "values",
            "updates",
            "messages",
            "messages/partial",
            "events",
            "end",
            "error",
        )
        if wanted(event, modes)
    ] == ["metadata", "updates", "messages", "end", "error"]
    assert wanted("messages/complete", {"messages"})
    assert not wanted("messages", {"messages"})


# -- the worker's publisher ------------------------------------------------------------------------


class Recording:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def append(self, stream: str, lines: list[str]) -> None:
        self.lines.extend(lines)

    def events(self, stream: str) -> list[tuple[str, Any]]:
        import json

        return [
            (event, json.loads(data)) for event, data in (streams.decode(stream, line) for line in self.lines)
        ]


def publisher(modes: list[str]) -> tuple[streams.Publisher, Recording]:
    run = Run(public_id=uuid.uuid4(), stream_modes=modes, command={"input": {"count": 0}}, attempts=1)
    run.thread = Thread(workflow="wf", public_id=uuid.uuid4())
    recording = Recording()
    return streams.Publisher(run, recording), recording  # type: ignore[arg-type]


def test_a_run_without_stream_modes_publishes_nothing() -> None:
    run = Run(public_id=uuid.uuid4(), stream_modes=[])

    assert not streams.publisher_for(run).active


def test_messages_are_published_as_tuples_and_as_langgraph_apis_partial_messages() -> None:
    pub, recording = publisher(["messages-tuple", "messages"])
    meta = {"langgraph_node": "talk"}

    pub.chunk("messages", (AIMessageChunk(content="Hel", id="m1"), meta))
    pub.chunk("messages", (AIMessageChunk(content="lo", id="m1"), meta))
    pub.chunk("messages", (AIMessage(content="Whole", id="m2"), meta))

    events = recording.events(pub.stream)
    assert [name for name, _data in events] == [
        "messages",
        "messages/metadata",
        "messages/partial",
        "messages",
        "messages/partial",
        "messages",
        "messages/metadata",
        "messages/complete",
    ]
    assert events[0][1][0]["content"] == "Hel"
    assert events[0][1][1] == meta
    assert events[1][1] == {"m1": {"metadata": meta}}
    assert events[4][1][0]["content"] == "Hello"
    assert events[7][1][0]["content"] == "Whole"


INTERRUPT = {"value": {"question": "go on?"}, "id": "i1", "response_schema": None}


def test_a_redelivered_run_at_its_pause_sends_the_interrupt_from_the_head_once() -> None:
    pub, recording = publisher(["updates"])
    head = StateSnapshot(
        values={"count": 1},
        next=("ask",),
        config={},
        metadata=None,
        created_at=None,
        parent_config=None,
        tasks=(),
        interrupts=(Interrupt(value={"question": "go on?"}, id="i1"),),
    )

    pub.begin(attempt=2)
    pub.stopped(head)
    pub.end()

    assert recording.events(pub.stream) == [
        ("metadata", {"run_id": str(pub.run.public_id), "attempt": 2}),
        ("updates", {"__interrupt__": [INTERRUPT]}),
        ("end", None),
    ]
    # Streamed by LangGraph already: not sent twice.
    again, recorded = publisher(["updates"])
    again.chunk("updates", {"__interrupt__": (Interrupt(value=1, id="i1"),)})
    again.stopped(head)
    again.end()
    assert [name for name, _data in recorded.events(again.stream)] == ["updates", "end"]


def test_the_interrupt_is_published_only_once_the_outcome_has_committed() -> None:
    # A client that sees the interrupt may answer it at once: the thread must be interrupted by
    # then, not still running (a 409). The worker calls end() after finish_run commits.
    pub, recording = publisher(["updates", "values"])

    pub.begin(attempt=1)
    pub.chunk("values", {"count": 1})
    pub.chunk("updates", {"__interrupt__": (Interrupt(value=1, id="i1"),)})
    pub.stopped(StateSnapshot({"count": 1}, ("ask",), {}, None, None, None, (), ()))
    before_end = [name for name, _data in recording.events(pub.stream)]
    pub.end()

    assert before_end == ["metadata", "values"]
    assert [name for name, _data in recording.events(pub.stream)] == ["metadata", "values", "updates", "end"]


def test_a_backend_that_fails_stops_the_publishing_not_the_run(caplog: pytest.LogCaptureFixture) -> None:
    pub, _recording = publisher(["values"])

    class Down:
        calls = 0

        def append(self, stream: str, lines: list[str]) -> None:
            Down.calls += 1
            raise ConnectionError("redis is down")

    pub.backend = Down()  # type: ignore[assignment]
    pub.chunk("values", {"count": 1})
    pub.chunk("values", {"count": 2})
    pub.end()

    assert Down.calls == 1
    assert "could not publish" in caplog.text


# -- stream_response, as a sync view calls it (POST /threads/{id}/runs/stream) ------------------


def test_stream_response_frames_a_published_run_from_a_sync_caller(tmp_path: Path, settings: Any) -> None:
    import warnings

    settings.SIGNOFF_STREAM_BACKEND = "file"
    settings.SIGNOFF_STREAM_DIR = tmp_path
    run = Run(pk=7, public_id=uuid.uuid4(), stream_modes=["values", "updates"], attempts=1)
    run.thread = Thread(workflow="wf", public_id=uuid.uuid4())
    pub = streams.Publisher(run, streams.FileBackend(tmp_path))
    pub.begin(attempt=1)
    pub.chunk("values", {"count": 0})
    pub.chunk("updates", {"first": {"count": 1}})
    pub.end()

    response = stream_response(None, run, ["values"], last_event_id=None)  # type: ignore[arg-type]
    with warnings.catch_warnings():
        # Served synchronously (a WSGI server, this test), Django collects the async stream.
        warnings.simplefilter("ignore")
        body = b"".join(response)

    assert response["Content-Type"] == "text/event-stream"
    assert (
        response["Location"]
        == f"/threads/{run.thread.public_id}/runs/{run.public_id}/stream?stream_mode=values"
    )
    assert response["Content-Location"] == f"/threads/{run.thread.public_id}/runs/{run.public_id}"
    frames = body.decode().split("\n\n")[:-1]
    assert [chunk.splitlines()[0] for chunk in frames] == ["event: metadata", "event: values", "event: end"]
    assert frames[1].splitlines()[1] == 'data: {"count":0}'
