"""Celery tasks: the doorbell. Each fetches by id and hands over to the engine."""

from __future__ import annotations

import functools
import logging
from typing import Any

from celery import shared_task
from celery.contrib.django.task import DjangoTask
from django.conf import settings
from django.db import transaction

from workflows import audit, services
from workflows.execution import execute_run

logger = logging.getLogger(__name__)


class DoorbellTask(DjangoTask):
    """Publishes after commit, and never lets a broker outage fail the committed change:
    the run is in the database, and the sweeper republishes runs left waiting."""

    def delay_on_commit(self, *args: Any, **kwargs: Any) -> None:
        self.apply_async_on_commit(args, kwargs)

    def apply_async_on_commit(self, *args: Any, **kwargs: Any) -> None:
        transaction.on_commit(functools.partial(self._publish, *args, **kwargs))

    def _publish(self, *args: Any, **kwargs: Any) -> None:
        try:
            self.apply_async(*args, **kwargs)
        except Exception:
            logger.exception("could not publish %s%s; the sweeper will deliver it", self.name, args)


@shared_task(bind=True, base=DoorbellTask, max_retries=None)  # type: ignore[untyped-decorator]
def run_thread(self: DoorbellTask, run_id: int) -> str:
    outcome = execute_run(run_id)
    if outcome.status == "busy" and self.request.retries < settings.SIGNOFF_BUSY_RETRIES:
        # Another worker's lease is still live (often a dead child's, after a redelivery):
        # come back when it runs out. Past the bound, the sweeper takes over.
        raise self.retry(countdown=min(outcome.busy_for + 1, settings.SIGNOFF_LEASE_SECONDS))
    return outcome.status


@shared_task(base=DoorbellTask)  # type: ignore[untyped-decorator]
def sweep() -> dict[str, list[int]]:
    result = services.sweep()
    return {"republished": result.republished, "reclaimed": result.reclaimed, "failed": result.failed}


@shared_task(base=DoorbellTask)  # type: ignore[untyped-decorator]
def save_audit_head() -> str:
    """Beat's record of how far the audit trail went (workflows.audit.save_head)."""
    try:
        head = audit.save_head()
    except audit.HeadError as exc:
        logger.error("%s", exc)
        return "refused"
    return f"{head.events} events up to {head.last_id}"
