"""The webhook tasks, found by Celery's autodiscovery and published by name (api.webhooks):
each hands over to api.webhooks. Nothing in the apps imports this module."""

from __future__ import annotations

from celery import shared_task
from celery.contrib.django.task import DjangoTask

from api import webhooks


@shared_task(bind=True, base=DjangoTask, name=webhooks.DELIVER, max_retries=None)  # type: ignore[untyped-decorator]
def deliver_webhook(self: DjangoTask, delivery_id: int) -> str:
    # The delivery row counts the attempts and bounds them (SIGNOFF_WEBHOOK_MAX_ATTEMPTS), not Celery.
    attempt = webhooks.attempt_delivery(delivery_id=delivery_id)
    if attempt.retry_in is not None:
        raise self.retry(countdown=attempt.retry_in)
    return attempt.status


@shared_task(base=DjangoTask, name=webhooks.SWEEP)  # type: ignore[untyped-decorator]
def sweep_webhooks() -> list[int]:
    return webhooks.sweep_deliveries()
