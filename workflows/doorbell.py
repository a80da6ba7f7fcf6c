"""The doorbell: a run's message to the workers, published once its transaction commits.

The message only says "run N is waiting"; the run itself is in the database. So a broker that
is down loses nothing but time: the publish is logged and dropped, and the sweeper republishes
queued runs it finds waiting. Published by task name, so the services that ring know nothing
of the tasks module (which imports them).
"""

from __future__ import annotations

import functools
import logging

from celery import current_app
from django.db import transaction

logger = logging.getLogger(__name__)

# The tasks' names, given explicitly in workflows.tasks. They keep the names Celery derived
# from the module before they were explicit, so messages already queued under them (and the
# beat schedule in settings) are still delivered.
RUN_THREAD = "workflows.tasks.run_thread"
SWEEP = "workflows.tasks.sweep"
SAVE_AUDIT_HEAD = "workflows.tasks.save_audit_head"


def ring(run_id: int, *, countdown: float = 0) -> None:
    """Publish run `run_id`'s message when the current transaction commits (now, outside
    one); `countdown` seconds later, if given. Nothing is published on rollback."""
    transaction.on_commit(functools.partial(_deliver, run_id, countdown))


def publish(run_id: int, countdown: float) -> None:
    """Send the message to the broker; the one function tests replace to capture or fail it."""
    current_app.send_task(RUN_THREAD, args=[run_id], countdown=countdown or None)


def _deliver(run_id: int, countdown: float) -> None:
    # The change is committed already: a broker outage must not turn it into an error.
    try:
        publish(run_id, countdown)
    except Exception:
        logger.exception("could not publish run %s; the sweeper will deliver it", run_id)
