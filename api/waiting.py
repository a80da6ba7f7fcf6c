"""Waiting for a run to end, for POST .../runs/wait and GET .../runs/{run_id}/join.

`/wait` and `/join` answer with a response whose body is awaited (`final_body`): the sync view
returns at once and gives its database connection back, and the wait happens on the server's
event loop, so a client that waits minutes holds no worker thread, no connection, no lock and no
snapshot (under ASGI Django runs every sync view on one thread: a view that slept there would
stop every other). A streamed run (the API's runs publish at least `values`) wakes the waiter
with its `end` or `error` event; a run nobody streams is looked at every POLL_SECONDS, one
short query each time.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.core.serializers.json import DjangoJSONEncoder

from api.streaming import release_connection
from workflows import streams
from workflows.models import Run

POLL_SECONDS = 0.025
# How long one read of a streamed run's events blocks before the run's row is looked at again
# (a run that ended without its `end` event: a cancel, or a worker the sweeper gave up on).
CHECK_SECONDS = 0.5
WAITING = (Run.Status.PENDING, Run.Status.QUEUED, Run.Status.RUNNING)


def _status(run_pk: int) -> str | None:
    try:
        return Run.objects.filter(pk=run_pk).values_list("status", flat=True).first()
    finally:
        release_connection()


async def ended(run: Run, timeout_seconds: float) -> None:
    """Return once `run` has ended, or after `timeout_seconds`, holding no database connection
    in between."""
    deadline = time.monotonic() + timeout_seconds
    backend = streams.backend() if run.stream_modes else None
    stream = streams.stream_key(run.public_id)
    after: str | None = None
    try:
        while True:
            status = await sync_to_async(_status)(run.pk)
            remaining = deadline - time.monotonic()
            if status not in WAITING or remaining <= 0:
                return
            if backend is None:
                await asyncio.sleep(min(POLL_SECONDS, remaining))
                continue
            # Read until the final event (or a quiet spell), then look at the row: the event is
            # published after the run's outcome has committed.
            while remaining > 0:
                found = await backend.read(stream, after, wait=min(CHECK_SECONDS, remaining))
                if not found:
                    break
                after = found[-1][0]
                if any(_is_final(stream, stored) for _, stored in found):
                    break
                remaining = deadline - time.monotonic()
    finally:
        if backend is not None:
            await backend.close()


def _is_final(stream: str, stored: str) -> bool:
    # An unreadable line (torn by a killed worker) is not final: the row is looked at after the
    # next quiet read anyway.
    try:
        event, _ = streams.decode(stream, stored)
    except ValueError:
        return False
    return event in streams.FINAL_EVENTS


async def final_body(
    run: Run, timeout_seconds: float, answer: Callable[[Run], dict[str, Any]]
) -> AsyncIterator[bytes]:
    """The body of /wait and /join: `answer(run)` as JSON once the run has ended."""
    await ended(run, timeout_seconds)

    def read() -> dict[str, Any]:
        try:
            return answer(Run.objects.select_related("thread").get(pk=run.pk))
        finally:
            release_connection()

    body = await sync_to_async(read)()
    yield json.dumps(body, cls=DjangoJSONEncoder).encode()
