"""Celery tasks, found by autodiscovery and published by name (workflows.doorbell): each
fetches by id and hands over to the engine. Nothing in the apps imports this module."""

from __future__ import annotations

import logging

from celery import shared_task
from celery.contrib.django.task import DjangoTask
from django.conf import settings

from workflows import audit, doorbell, services
from workflows.execution import execute_run

logger = logging.getLogger(__name__)


@shared_task(bind=True, base=DjangoTask, name=doorbell.RUN_THREAD, max_retries=None)  # type: ignore[untyped-decorator]
def run_thread(self: DjangoTask, run_id: int) -> str:
    outcome = execute_run(run_id)
    if outcome.status == "busy" and self.request.retries < settings.SIGNOFF_BUSY_RETRIES:
        # Another worker's lease is still live (often a dead child's, after a redelivery):
        # come back when it runs out. Past the bound, the sweeper takes over.
        raise self.retry(countdown=min(outcome.busy_for + 1, settings.SIGNOFF_LEASE_SECONDS))
    return outcome.status


@shared_task(base=DjangoTask, name=doorbell.SWEEP)  # type: ignore[untyped-decorator]
def sweep() -> dict[str, list[int]]:
    result = services.sweep()
    return {"republished": result.republished, "reclaimed": result.reclaimed, "failed": result.failed}


@shared_task(base=DjangoTask, name=doorbell.SAVE_AUDIT_HEAD)  # type: ignore[untyped-decorator]
def save_audit_head() -> str:
    """Beat's record of how far the audit trail went (workflows.audit.save_head)."""
    try:
        head = audit.save_head()
    except audit.HeadError as exc:
        logger.error("%s", exc)
        return "refused"
    return f"{head.events} events up to {head.last_id}"
