"""A run's events, published by the worker while it runs the graph and read by the web process.

A run whose `stream_modes` is not empty (an API client asked to stream it) has every chunk of
`graph.stream(...)` published as an event, in the API's stream modes (`MODES`), on the run's
own stream; a run without (one started in the browser) is invoked as before and publishes
nothing. Each delivery of the run (attempt N) opens with `metadata` `{"run_id", "attempt": N}`,
so a redelivered run (a worker killed, the sweeper's second attempt) appends to the same
stream after a second `metadata`: a reader tells attempts apart by the `metadata` event that
precedes each event. The stream ends with `end` once the outcome is recorded (an interrupt
included), or `error` `{"error", "message"}` once the run failed for good; neither is written
by an attempt that is handed back (a transient database error, a lost lease).

Two backends behind `Backend`, chosen by SIGNOFF_STREAM_BACKEND (by default from the broker:
Redis with a redis:// broker, else the file backend):

- `RedisBackend`: an XADD per event to `signoff:run:<run public id>`, capped at
  SIGNOFF_STREAM_MAXLEN events and expiring SIGNOFF_STREAM_TTL_SECONDS after its last event;
  the event id is Redis's entry id. Readers block in XREAD.
- `FileBackend`: for the embedded default (`make run`: SQLite and the on-disk broker), one
  append-only file per run under SIGNOFF_STREAM_DIR, one event per line, appended with one
  `write` (no fsync: an event lost in a crash is only a missed frame, the run itself is in the
  database); the event id is the byte offset just past the event's line, so a reader resumes
  by seeking there. Readers poll. Logs older than SIGNOFF_STREAM_TTL_SECONDS are removed by
  the workers now and then.

An event is stored as one line of text, `<event name> <data as JSON>`; with
SIGNOFF_ENCRYPTION_KEY set the line is sealed (AES-GCM, `workflows.sealed`, with the run's
stream as associated data), so no plaintext copy of state sits in Redis or under var/.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

from django.conf import settings
from langgraph.types import StateSnapshot

from workflows.jsonable import jsonable
from workflows.models import Run
from workflows.sealed import TAG, PlaintextRefused, current_key, seal, unseal

logger = logging.getLogger(__name__)

# The API's stream modes a run can be streamed in, and the LangGraph stream mode each is made
# from. `events` is derived from LangGraph's `tasks` (see `_Events`); `messages` and
# `messages-tuple` both from LangGraph's `messages`.
MODES: dict[str, str] = {
    "values": "values",
    "updates": "updates",
    "checkpoints": "checkpoints",
    "tasks": "tasks",
    "debug": "debug",
    "custom": "custom",
    "messages": "messages",
    "messages-tuple": "messages",
    "events": "tasks",
}
# Always sent, whatever modes a reader asked for.
CONTROL_EVENTS = ("metadata", "end", "error")
FINAL_EVENTS = ("end", "error")


def stream_key(run_public_id: uuid.UUID | str) -> str:
    return f"signoff:run:{run_public_id}"


def mode_of(event: str) -> str:
    """The stream mode an event belongs to: `messages/partial` is `messages`'s, `values|ns` is
    `values`'s."""
    return event.split("|", 1)[0].split("/", 1)[0]


# -- how an event is stored --------------------------------------------------------------------


def encode(stream: str, event: str, data: Any) -> str:
    """One event as one line of text: ASCII JSON has no line break in it, and is sealed with a
    key set."""
    text = f"{event} {json.dumps(data, ensure_ascii=True, separators=(',', ':'), allow_nan=False)}"
    key = current_key()
    return text if key is None else seal(text, key=key, context=stream)


def decode(stream: str, stored: str) -> tuple[str, str]:
    """The event name and its data as JSON text (what an SSE frame's `data:` carries)."""
    key = current_key()
    if stored.startswith(TAG):
        text = unseal(stored, key=key, context=stream)
    elif key is not None:
        raise PlaintextRefused(
            f"refusing to read an event of {stream} stored without encryption while "
            "SIGNOFF_ENCRYPTION_KEY is set"
        )
    else:
        text = stored
    event, _, data = text.partition(" ")
    return event, data


# -- backends ----------------------------------------------------------------------------------


class Backend(Protocol):
    """Where a run's events go: appended by the worker (sync), read by the web process (async)."""

    def append(self, stream: str, lines: list[str]) -> None: ...

    async def read(self, stream: str, after: str | None, *, wait: float) -> list[tuple[str, str]]:
        """The events after id `after` (all without one) as (id, stored line), waiting up to
        `wait` seconds for the first; [] when none came."""
        ...

    async def close(self) -> None: ...

    def valid_id(self, event_id: str) -> bool: ...


READER_CLIENT_NAME = "signoff-stream-reader"


# The writers' clients, one per URL and process: a worker publishes every run it executes
# through one connection pool instead of connecting to Redis for each run. Keyed by pid too, so
# a forked child (a Celery prefork worker) never writes on its parent's sockets.
_sync_clients: dict[tuple[str, int], Any] = {}
_sync_clients_lock = threading.Lock()


def _sync_client(url: str) -> Any:
    import redis

    key = (url, os.getpid())
    with _sync_clients_lock:
        client = _sync_clients.get(key)
        if client is None:
            client = _sync_clients[key] = redis.Redis.from_url(
                url, socket_timeout=5, socket_connect_timeout=5
            )
        return client


class RedisBackend:
    def __init__(self, url: str) -> None:
        self.url = url
        self._async: Any = None

    def append(self, stream: str, lines: list[str]) -> None:
        with _sync_client(self.url).pipeline(transaction=False) as pipe:
            for line in lines:
                pipe.xadd(stream, {"e": line}, maxlen=settings.SIGNOFF_STREAM_MAXLEN, approximate=True)
            # Every append pushes the expiry on, so a stream whose worker died expires too.
            pipe.expire(stream, int(settings.SIGNOFF_STREAM_TTL_SECONDS))
            pipe.execute()

    async def read(self, stream: str, after: str | None, *, wait: float) -> list[tuple[str, str]]:
        import redis.asyncio

        if self._async is None:
            # Named, so that an operator (and a test) can count the streams waiting in CLIENT LIST.
            self._async = redis.asyncio.Redis.from_url(
                self.url, socket_connect_timeout=5, client_name=READER_CLIENT_NAME
            )
        found = await self._async.xread({stream: after or "0-0"}, count=500, block=max(1, int(wait * 1000)))
        return [
            (entry_id.decode(), fields[b"e"].decode())
            for _name, entries in found or []
            for entry_id, fields in entries
        ]

    async def close(self) -> None:
        if self._async is not None:
            await self._async.aclose()
            self._async = None

    def valid_id(self, event_id: str) -> bool:
        first, sep, second = event_id.partition("-")
        return bool(sep) and first.isdigit() and second.isdigit()


class FileBackend:
    # How often a reader looks at the file again while it waits.
    POLL_SECONDS = 0.1
    _pruned_at = 0.0

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def path(self, stream: str) -> Path:
        # The key's prefix is the same on every run: the file is named by the run's id.
        return self.directory / f"{stream.rsplit(':', 1)[-1]}.log"

    def append(self, stream: str, lines: list[str]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._prune()
        path = self.path(stream)
        payload = "".join(line + "\n" for line in lines).encode()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            size = os.fstat(fd).st_size
            if size:
                # A worker killed in mid-write leaves a line without its end: close it, so the
                # next attempt's events start on a line of their own (readers skip the torn one).
                with path.open("rb") as file:
                    file.seek(size - 1)
                    if file.read(1) != b"\n":
                        payload = b"\n" + payload
            # One write with O_APPEND: two writers (a fenced attempt still finishing its step
            # and its successor) never interleave inside a line.
            os.write(fd, payload)
        finally:
            os.close(fd)

    async def read(self, stream: str, after: str | None, *, wait: float) -> list[tuple[str, str]]:
        path = self.path(stream)
        offset = int(after) if after else 0
        deadline = time.monotonic() + wait
        while True:
            found = self._read_from(path, offset)
            if found or time.monotonic() >= deadline:
                return found
            await asyncio.sleep(self.POLL_SECONDS)

    @staticmethod
    def _read_from(path: Path, offset: int) -> list[tuple[str, str]]:
        try:
            with path.open("rb") as file:
                file.seek(offset)
                data = file.read()
        except FileNotFoundError:
            return []
        found = []
        # Only whole lines: the last one may still be being written.
        for raw in data.split(b"\n")[:-1]:
            offset += len(raw) + 1
            if raw:
                found.append((str(offset), raw.decode(errors="replace")))
        return found

    async def close(self) -> None:
        return None

    def valid_id(self, event_id: str) -> bool:
        return event_id.isdigit()

    def _prune(self) -> None:
        """Remove logs untouched for SIGNOFF_STREAM_TTL_SECONDS, at most every tenth of it."""
        ttl = settings.SIGNOFF_STREAM_TTL_SECONDS
        now = time.time()
        if now - FileBackend._pruned_at < ttl / 10:
            return
        FileBackend._pruned_at = now
        for path in self.directory.glob("*.log"):
            try:
                if now - path.stat().st_mtime > ttl:
                    path.unlink()
            except FileNotFoundError:
                pass


def backend() -> Backend:
    """The backend the settings choose (a new one: the async side's connection belongs to one
    event loop)."""
    if settings.SIGNOFF_STREAM_BACKEND == "redis":
        return RedisBackend(settings.SIGNOFF_STREAM_REDIS_URL)
    return FileBackend(settings.SIGNOFF_STREAM_DIR)


# -- the worker's side -------------------------------------------------------------------------


class Publisher:
    """What one attempt of a run publishes. A failing backend never fails the run: the first
    error is logged and the attempt publishes nothing more (readers see the run end in the
    database instead, see `api.streaming`)."""

    def __init__(self, run: Run, backend: Backend | None) -> None:
        self.run = run
        self.modes = [mode for mode in run.stream_modes if mode in MODES]
        self.stream = stream_key(run.public_id)
        self.backend = backend if self.modes else None
        self.graph_modes = sorted({MODES[mode] for mode in self.modes})
        self.interrupt_sent = False
        self._events = _Events(run) if "events" in self.modes else None
        self._messages: dict[str, Any] = {}
        # What the stop publishes (the pause's `__interrupt__`, the graph's end event): held
        # until the run's outcome has committed, so a client that sees the interrupt finds the
        # thread interrupted and can answer it at once, never a 409 for a thread still running.
        self._held: list[tuple[str, Any]] = []

    @property
    def active(self) -> bool:
        return self.backend is not None

    def _emit(self, events: Iterable[tuple[str, Any]]) -> None:
        if self.backend is None:
            return
        try:
            lines = [encode(self.stream, event, data) for event, data in events]
            if lines:
                self.backend.append(self.stream, lines)
        except Exception:
            logger.exception("run %s: could not publish its events; it goes on without", self.run.pk)
            self.backend = None

    def begin(self, *, attempt: int) -> None:
        first = [("metadata", {"run_id": str(self.run.public_id), "attempt": attempt})]
        if self._events is not None:
            first.append(("events", self._events.graph_start()))
        self._emit(first)

    def chunk(self, mode: str, data: Any) -> None:
        """One `(mode, data)` chunk of `graph.stream(stream_mode=[...])`."""
        self._emit(self._translate(mode, data))

    def _translate(self, mode: str, data: Any) -> Iterator[tuple[str, Any]]:
        if mode == "tasks":
            if "tasks" in self.modes:
                yield "tasks", jsonable(data)
            if self._events is not None:
                yield from (("events", event) for event in self._events.task(data))
        elif mode == "messages":
            yield from self._message(data)
        elif mode in self.modes:
            if mode == "updates" and isinstance(data, dict) and "__interrupt__" in data:
                self.interrupt_sent = True
                self._held.append((mode, jsonable(data)))
                return
            yield mode, jsonable(data)

    def _message(self, data: Any) -> Iterator[tuple[str, Any]]:
        message, metadata = data
        if "messages-tuple" in self.modes:
            yield "messages", [jsonable(message), jsonable(metadata)]
        if "messages" not in self.modes:
            return
        # langgraph-api's `messages` mode: the metadata once per message, then the message so
        # far after each chunk (`partial`), or whole when it came whole (`complete`).
        message_id = str(getattr(message, "id", "") or "")
        if message_id not in self._messages:
            yield "messages/metadata", {message_id: {"metadata": jsonable(metadata)}}
        if type(message).__name__.endswith("Chunk"):
            so_far = self._messages.get(message_id)
            self._messages[message_id] = message if so_far is None else so_far + message
            yield "messages/partial", [jsonable(self._messages[message_id])]
        else:
            self._messages[message_id] = message
            yield "messages/complete", [jsonable(message)]

    def stopped(self, snapshot: StateSnapshot) -> None:
        """The graph stopped (at an interrupt or the end). An attempt that found the graph
        already at its pause (a redelivery) streamed nothing of it: the pause is sent from the
        head snapshot, as LangGraph would have sent it. Published by `end`, once the outcome
        has committed."""
        events: list[tuple[str, Any]] = []
        if "updates" in self.modes and not self.interrupt_sent and snapshot.next:
            events.append(("updates", {"__interrupt__": jsonable(list(snapshot.interrupts))}))
        if self._events is not None:
            events.append(("events", self._events.graph_end(snapshot.values)))
        self._held.extend(events)

    def end(self) -> None:
        """The run's outcome has committed: what the stop held back, then `end`."""
        self._emit([*self._held, ("end", None)])
        self._held = []

    def error(self, exc: BaseException) -> None:
        self._emit([("error", {"error": type(exc).__name__, "message": str(exc) or repr(exc)})])


class _Events:
    """The subset of LangChain's `astream_events` (v2) shapes that `events` streams, from
    LangGraph's `tasks` stream: `on_chain_start` / `on_chain_end` for the graph (name: the
    workflow) and for each node's task (name: the node; `metadata.langgraph_node`, which Agent
    Inbox reads). No model, tool or prompt events: nodes run in a worker, not under the
    callbacks astream_events needs."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.graph_run_id = str(run.public_id)
        self.workflow = run.thread.workflow
        self.thread_id = run.thread.thread_id

    def _base(self, event: str, name: str, run_id: str, parents: list[str]) -> dict[str, Any]:
        metadata: dict[str, Any] = {"thread_id": self.thread_id, "run_id": self.graph_run_id}
        if parents:
            metadata["langgraph_node"] = name
        return {
            "event": event,
            "name": name,
            "run_id": run_id,
            "tags": [],
            "metadata": metadata,
            "parent_ids": parents,
        }

    def graph_start(self) -> dict[str, Any]:
        return {
            **self._base("on_chain_start", self.workflow, self.graph_run_id, []),
            "data": {"input": jsonable(self.run.command.get("input"))},
        }

    def graph_end(self, values: Any) -> dict[str, Any]:
        base = self._base("on_chain_end", self.workflow, self.graph_run_id, [])
        return {**base, "data": {"output": jsonable(values)}}

    def task(self, data: dict[str, Any]) -> Iterator[dict[str, Any]]:
        parents = [self.graph_run_id]
        base = self._base(
            "on_chain_start" if "input" in data else "on_chain_end", data["name"], data["id"], parents
        )
        if "input" in data:
            base["metadata"]["langgraph_triggers"] = jsonable(data.get("triggers", ()))
            yield {**base, "data": {"input": jsonable(data["input"])}}
        elif data.get("error") is None:
            yield {**base, "data": {"output": jsonable(data.get("result"))}}


def publisher_for(run: Run) -> Publisher:
    return Publisher(run, backend() if run.stream_modes else None)


def advance(graph: Any, value: Any, config: Any, publisher: Publisher, **options: Any) -> None:
    """Run the graph on from `value`: `invoke` for a run nobody streams, `stream` in the modes
    its events need for one that is, publishing each chunk as it comes. `options` go to both
    (durability, interrupt_before/after)."""
    if not publisher.active:
        graph.invoke(value, config, **options)
        return
    for mode, data in graph.stream(value, config, stream_mode=publisher.graph_modes, **options):
        publisher.chunk(mode, data)
