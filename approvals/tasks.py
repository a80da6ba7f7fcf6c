"""The approvals app's Celery tasks, found by Celery's autodiscovery and sent by beat."""

from __future__ import annotations

from dataclasses import asdict

from celery import shared_task
from celery.contrib.django.task import DjangoTask

from approvals import deadlines

SWEEP_DEADLINES = "approvals.tasks.sweep_deadlines"


@shared_task(base=DjangoTask, name=SWEEP_DEADLINES)  # type: ignore[untyped-decorator]
def sweep_deadlines() -> dict[str, int]:
    return asdict(deadlines.sweep_deadlines())
