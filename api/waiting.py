"""Waiting for a run to end, for POST .../runs/wait and GET .../runs/{run_id}/join.

The view polls the run's status with one short query at a time, outside any transaction, so a
waiting client holds no lock and no snapshot; the worker's commits show at the next poll.
"""

from __future__ import annotations

import time

from workflows.models import Run

POLL_SECONDS = 0.025
WAITING = (Run.Status.PENDING, Run.Status.QUEUED, Run.Status.RUNNING)


def wait_for_end(run_pk: int, timeout_seconds: float) -> Run:
    """The run once it has ended (succeeded, interrupted, failed, cancelled), or as it is when
    `timeout_seconds` have passed."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        status = Run.objects.filter(pk=run_pk).values_list("status", flat=True).first()
        if status not in WAITING or time.monotonic() >= deadline:
            return Run.objects.select_related("thread").get(pk=run_pk)
        time.sleep(POLL_SECONDS)
