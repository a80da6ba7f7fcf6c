"""The notification tasks, found by Celery's autodiscovery and published by name
(notifications.services): each hands over to notifications.services."""

from __future__ import annotations

from celery import shared_task
from celery.contrib.django.task import DjangoTask

from notifications import services


@shared_task(bind=True, base=DjangoTask, name=services.DELIVER, max_retries=None)  # type: ignore[untyped-decorator]
def deliver(self: DjangoTask, send_id: int) -> str:
    # The send row counts the attempts and bounds them (SIGNOFF_NOTIFY_MAX_ATTEMPTS), not Celery.
    attempt = services.deliver(send_id=send_id)
    if attempt.retry_in is not None:
        raise self.retry(countdown=attempt.retry_in)
    return attempt.status


@shared_task(base=DjangoTask, name="notifications.tasks.sweep")  # type: ignore[untyped-decorator]
def sweep() -> dict[str, list[int]]:
    return services.sweep()
