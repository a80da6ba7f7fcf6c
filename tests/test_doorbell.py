"""The doorbell (workflows.doorbell) publishes a run's message by task name once the change
commits, and only then; a broker outage is logged, never raised."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from celery import current_app
from django.db import transaction

from workflows import doorbell


@pytest.mark.django_db(transaction=True)
def test_a_ring_publishes_by_task_name_after_the_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[tuple[str, Any, Any]] = []
    monkeypatch.setattr(
        current_app, "send_task", lambda name, args, countdown: sent.append((name, args, countdown))
    )

    with transaction.atomic():
        doorbell.ring(7, countdown=2.5)
        doorbell.ring(8)
        assert sent == []

    assert sent == [("workflows.tasks.run_thread", [7], 2.5), ("workflows.tasks.run_thread", [8], None)]


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_change_rings_nothing(doorbell: list[int]) -> None:
    from workflows import doorbell as bell

    def failed_change() -> None:
        with transaction.atomic():
            bell.ring(7)
            raise RuntimeError("the change failed")

    with pytest.raises(RuntimeError):
        failed_change()

    assert doorbell == []


@pytest.mark.django_db(transaction=True)
def test_a_broker_outage_is_logged_not_raised(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broker_down(*args: Any, **kwargs: Any) -> None:
        raise ConnectionRefusedError("broker down")

    monkeypatch.setattr(current_app, "send_task", broker_down)

    with caplog.at_level(logging.ERROR, logger="workflows.doorbell"):
        doorbell.ring(7)

    assert "could not publish run 7; the sweeper will deliver it" in caplog.text


def test_each_task_is_registered_under_the_name_the_doorbell_publishes() -> None:
    import workflows.tasks  # noqa: F401 - what Celery's autodiscovery does in a worker

    for name in (doorbell.RUN_THREAD, doorbell.SWEEP, doorbell.SAVE_AUDIT_HEAD):
        assert name in current_app.tasks
