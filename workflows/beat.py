"""Beat's scheduler, which runs the sweeper itself instead of queueing it.

Sent as a task, a sweep waits in the workers' queue behind every `run_thread` message ahead
of it, so a frozen worker's runs were taken back only once the backlog drained, however
short the lease (issue 9: 43 s for a 6 s lease and a 3 s sweep). Run here, in beat's own
process, recovery takes at most lease + sweep interval whatever the queue holds, and it
still works while the broker is down (the runs it re-rings are published when it is back,
or by a later sweep).
"""

from __future__ import annotations

import logging
from typing import Any

from celery.beat import PersistentScheduler, ScheduleEntry

from workflows import doorbell

logger = logging.getLogger(__name__)

SWEEP_TASK = doorbell.SWEEP


class SweepingScheduler(PersistentScheduler):
    """PersistentScheduler that calls `services.sweep()` in this process when the sweep is
    due; every other entry is sent to the broker as usual. Beat is one process, so sweeps
    never overlap."""

    def apply_entry(self, entry: ScheduleEntry, producer: Any = None) -> None:
        if entry.task != SWEEP_TASK:
            super().apply_entry(entry, producer=producer)
            return
        import django
        from django.apps import apps
        from django.db import close_old_connections

        if not apps.ready:
            django.setup()
        from workflows import services

        close_old_connections()
        try:
            result = services.sweep()
        except Exception:
            # A database outage must not stop beat: the next interval sweeps again.
            logger.exception("the sweep failed; the next one runs in %ss", entry.schedule.seconds)
        else:
            if result.republished or result.reclaimed or result.failed:
                logger.info(
                    "sweep: republished %s, reclaimed %s, failed %s",
                    result.republished,
                    result.reclaimed,
                    result.failed,
                )
        finally:
            close_old_connections()
