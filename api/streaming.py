"""Server-sent events of a run, as LangGraph's server writes them, from the events the worker
publishes while it runs (`workflows.streams`).

Each frame is `event: <name>\\ndata: <json>\\nid: <id>\\n\\n`. A stream opens with the run's
`metadata` (one per attempt: a redelivered run's second attempt sends its own), carries the
modes asked for, and closes after `end` or `error`. A client that sends `Last-Event-ID` gets
the events after that one. While it waits the stream holds no database connection: the run
row is read once before streaming starts, and again only when the backend has been quiet for
SIGNOFF_STREAM_CHECK_SECONDS, in a short read whose connection is closed at once. A run that
ended without its `end` reaching the stream (a run nobody streamed, a backend that lost it,
a run the sweeper gave up on) is closed from that read: `end`, or `error` for a failed or
cancelled run.

Served by an async Django view (`join_run_stream`, routed in api/urls.py ahead of ninja's
operations, which are sync), under an ASGI server (uvicorn: see docs/operations.md).
`stream_response` is the one function other endpoints use (POST /threads/{id}/runs/stream).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlencode

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from ninja.errors import AuthenticationError, HttpError, ValidationError

from api import convert
from api.access import run_or_404
from api.auth import BearerKey, KeyHeader, KeyRefused
from api.params import refuse, refuse_unknown_query
from api.services import MISSING
from approvals.middleware import RETRY_AFTER_SECONDS
from workflows import streams
from workflows.execution import TRANSIENT_DATABASE_ERRORS
from workflows.models import Run

logger = logging.getLogger(__name__)

JOIN_QUERY = ("stream_mode", "cancel_on_disconnect")
# The statuses of a run that is over: its stream gets no more events.
CLOSED = (Run.Status.SUCCEEDED, Run.Status.INTERRUPTED, Run.Status.FAILED, Run.Status.CANCELLED)
# How long a reader that found the run over waits for the `end` the worker publishes just after
# recording the outcome.
STRAGGLER_SECONDS = 1.0


@dataclass(frozen=True)
class _Streamed:
    """What a stream needs of its run, read before streaming starts."""

    pk: int
    public_id: uuid.UUID


def frame(event: str, data: str, event_id: str | None) -> bytes:
    text = f"event: {event}\ndata: {data}\n"
    if event_id is not None:
        text += f"id: {event_id}\n"
    return (text + "\n").encode()


def wanted(event: str, modes: set[str]) -> bool:
    """Whether a reader that asked for `modes` gets `event` (control events always)."""
    if event in streams.CONTROL_EVENTS:
        return True
    if event == "messages":
        return "messages-tuple" in modes
    if event.startswith("messages/"):
        return "messages" in modes
    return streams.mode_of(event) in modes


def release_connection() -> None:
    """Give this thread's database connection back (to the pool, or closed) now rather than
    when the response ends: a stream may last for hours. Not inside a transaction (a test's)."""
    if not connection.in_atomic_block:
        connection.close()


def _run_outcome(pk: int) -> tuple[str, int, str] | None:
    try:
        return Run.objects.filter(pk=pk).values_list("status", "attempts", "error").first()
    finally:
        release_connection()


def _error_of(status: str, error: str) -> dict[str, str]:
    if status == Run.Status.CANCELLED:
        return {"error": "Cancelled", "message": "the run was cancelled"}
    return convert.error_json(error)


async def events(run: _Streamed, modes: set[str], *, last_event_id: str | None) -> AsyncIterator[bytes]:
    """The run's frames after `last_event_id`, in `modes`, until `end` or `error`."""
    stream = streams.stream_key(run.public_id)
    backend = streams.backend()
    after = last_event_id
    check_every = settings.SIGNOFF_STREAM_CHECK_SECONDS
    # Look at the run at the first quiet read: a run that ended long ago closes at once.
    quiet = check_every
    sent_any = last_event_id is not None
    try:
        while True:
            found = await backend.read(stream, after, wait=min(check_every, 1.0))
            if not found:
                quiet += min(check_every, 1.0)
                if quiet < check_every:
                    continue
                quiet = 0.0
                outcome = await sync_to_async(_run_outcome)(run.pk)
                if outcome is not None and outcome[0] not in CLOSED:
                    # A comment: keeps proxies from closing an idle stream; clients skip it.
                    yield b": heartbeat\n\n"
                    continue
                found = await backend.read(stream, after, wait=STRAGGLER_SECONDS)
                if not found:
                    status, attempts, error = outcome or (Run.Status.FAILED, 0, "the run is gone")
                    if not sent_any:
                        meta = json.dumps({"run_id": str(run.public_id), "attempt": attempts})
                        yield frame("metadata", meta, None)
                    if status in (Run.Status.FAILED, Run.Status.CANCELLED):
                        yield frame("error", json.dumps(_error_of(status, error)), None)
                    else:
                        yield frame("end", "null", None)
                    return
            quiet = 0.0
            for event_id, stored in found:
                after = event_id
                try:
                    event, data = streams.decode(stream, stored)
                except ValueError:
                    # A line torn by a worker killed mid-write, or one that does not open.
                    logger.warning("skipping an unreadable event %s of %s", event_id, stream)
                    continue
                sent_any = True
                if wanted(event, modes):
                    yield frame(event, data, event_id)
                if event in streams.FINAL_EVENTS:
                    return
    finally:
        await backend.close()


def stream_response(
    request: HttpRequest, run: Run, modes: list[str], *, last_event_id: str | None
) -> StreamingHttpResponse:
    """The SSE response for `run` (already checked visible to the request's key), in `modes`,
    resuming after `last_event_id` when given. Sets `Location` to the run's join stream (where
    langgraph_sdk reconnects, with Last-Event-ID) and `Content-Location` to the run."""
    streamed = _Streamed(pk=run.pk, public_id=run.public_id)
    response = StreamingHttpResponse(
        events(streamed, set(modes), last_event_id=last_event_id), content_type="text/event-stream"
    )
    response["Cache-Control"] = "no-store"
    # nginx buffers responses by default, which would hold the frames back.
    response["X-Accel-Buffering"] = "no"
    # Relative to the API's root, as LangGraph's server sends them: the SDK resolves them
    # against its base URL (…/api).
    # The modes go along: a reconnect sends no query of its own.
    run_path = f"/threads/{run.thread.public_id}/runs/{run.public_id}"
    response["Location"] = f"{run_path}/stream?" + urlencode({"stream_mode": modes}, doseq=True)
    response["Content-Location"] = run_path
    if not _in_event_loop():
        # A sync view's (POST …/runs/stream): its connection must not wait for the stream's end.
        # The async view has given its connection back already.
        release_connection()
    return response


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


# -- GET /threads/{thread_id}/runs/{run_id}/stream ---------------------------------------------


def _refused(exc: Exception) -> JsonResponse:
    """The JSON the ninja operations answer with for the same errors (api.main)."""
    if isinstance(exc, AuthenticationError):
        response = JsonResponse({"detail": str(exc) if isinstance(exc, KeyRefused) else MISSING}, status=401)
        response["WWW-Authenticate"] = "Bearer"
        return response
    if isinstance(exc, ValidationError):
        return JsonResponse({"detail": exc.errors}, status=422)
    if isinstance(exc, HttpError):
        return JsonResponse({"detail": exc.message}, status=exc.status_code)
    raise exc


def _join(request: HttpRequest, thread_id: str, run_id: str) -> tuple[Run, list[str], str | None]:
    """Authenticate, find the run, read the parameters: the part that needs the database."""
    try:
        key = KeyHeader()(request) or BearerKey()(request)
        if key is None:
            raise AuthenticationError()
        request.auth = key  # type: ignore[attr-defined]
        _, run = run_or_404(request, thread_id, run_id)
        return run, _modes(request, run), _last_event_id(request)
    finally:
        release_connection()


def _modes(request: HttpRequest, run: Run) -> list[str]:
    refuse_unknown_query(request, *JOIN_QUERY)
    cancel = request.GET.get("cancel_on_disconnect", "false").lower()
    if cancel not in ("false", "0"):
        raise refuse(
            ["query", "cancel_on_disconnect"],
            "Signoff does not cancel a run when its stream disconnects; cancel it with POST .../cancel",
            cancel,
        )
    # langgraph_sdk sends `stream_mode=` (empty) when none was given.
    asked = [mode for mode in request.GET.getlist("stream_mode") if mode]
    if not asked:
        return list(run.stream_modes)
    for mode in asked:
        if mode not in streams.MODES:
            raise refuse(
                ["query", "stream_mode"],
                f"unknown stream mode {mode!r}: one of {', '.join(streams.MODES)}",
                mode,
            )
        if mode not in run.stream_modes:
            raise refuse(
                ["query", "stream_mode"],
                f"the run was not created with stream mode {mode!r} (it streams: "
                f"{', '.join(run.stream_modes) or 'nothing'})",
                mode,
            )
    return asked


def _last_event_id(request: HttpRequest) -> str | None:
    value = request.headers.get("Last-Event-ID") or None
    if value is not None and not streams.backend().valid_id(value):
        raise refuse(["header", "Last-Event-ID"], "not an event id of this server's streams", value)
    return value


async def join_run_stream(request: HttpRequest, thread_id: str, run_id: str) -> HttpResponseBase:
    """langgraph_sdk's `runs.join_stream`: the run's events in the modes asked for (those it was
    created with, by default), after the Last-Event-ID header's event if given."""
    if request.method != "GET":
        response = JsonResponse({"detail": "Method Not Allowed"}, status=405)
        response["Allow"] = "GET"
        return response
    try:
        run, modes, last_event_id = await sync_to_async(_join)(request, thread_id, run_id)
    except (AuthenticationError, HttpError, ValidationError) as exc:
        return _refused(exc)
    except TRANSIENT_DATABASE_ERRORS:
        logger.warning("database unavailable for %s", request.path)
        response = JsonResponse({"detail": "the database is unavailable; try again shortly"}, status=503)
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
    return stream_response(request, run, modes, last_event_id=last_event_id)
