"""Everything at once on PostgreSQL (issue 9, item 1): reviewers deciding parallel reviews over
HTTP, two real worker processes running and recording, an admin cancelling, retrying and
rolling back, and the sweeper, for a bounded time. One lock order means no deadlock anywhere,
at most one active run per thread, every decision applied once, an intact audit chain, and
no 5xx."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.urls import reverse

from approvals.models import Decision, Review
from tests.fake_workflows import create_calls_table
from tests.html import form_fields
from tests.pages import client_for
from tests.workers import Worker, wait_for
from workflows import engine, services
from workflows.models import ACTIVE_RUN_STATUSES, AuditEvent, Run, Thread

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.workers,
    pytest.mark.slow,
    pytest.mark.postgres,
]

MIX_SECONDS = 40
SETTLE_SECONDS = 40
CONTRACT = {"counterparty": "Acme", "value": 5000.0}


@pytest.fixture(autouse=True)
def _empty_queue(django_db_setup: None, django_db_blocker: Any) -> None:
    from config.celery import app

    with django_db_blocker.unblock():
        create_calls_table()
    app.control.purge()


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[list[Worker]]:
    started = [Worker(tmp_path, name, SIGNOFF_LEASE_SECONDS="6").start() for name in ("w1", "w2")]
    yield started
    for worker in started:
        worker.stop()


class Mix:
    """The shared record of what every actor saw."""

    def __init__(self, seconds: float) -> None:
        self.until = time.monotonic() + seconds
        self.statuses: Counter[int] = Counter()
        self.errors: list[str] = []
        self.lock = threading.Lock()

    def running(self) -> bool:
        return time.monotonic() < self.until

    def actor(self, body: Callable[[], None], pause: float) -> threading.Thread:
        def loop() -> None:
            try:
                while self.running():
                    try:
                        body()
                    except services.ServiceError:
                        pass  # a refusal the service explains: expected in a race
                    except Exception as exc:  # noqa: BLE001 - every other failure is the finding
                        with self.lock:
                            self.errors.append(f"{body.__name__}: {exc!r}")
                    time.sleep(pause * random.random())
            finally:
                connection.close()

        return threading.Thread(target=loop, name=body.__name__)


def open_contract_reviews() -> list[Review]:
    return list(Review.objects.filter(workflow="parallel_approval", status=Review.Status.OPEN))


def settled() -> bool:
    services.sweep()
    return (
        not Run.objects.filter(status__in=ACTIVE_RUN_STATUSES).exists()
        and not Review.objects.filter(status=Review.Status.OPEN).exists()
    )


def test_reviewers_workers_cancels_retries_and_rollbacks_at_once_never_deadlock(
    two_workers: list[Worker], reviewer: User, other_reviewer: User, admin: User
) -> None:
    contracts = [
        services.start_thread(workflow="parallel_approval", input=CONTRACT, actor=admin) for _ in range(12)
    ]
    crashing = [
        services.start_thread(workflow="seed_demo", input={"count": 0}, actor=admin) for _ in range(3)
    ]
    wait_for(lambda: len(open_contract_reviews()) >= 8, timeout=60, what="the first reviews to open")
    mix = Mix(MIX_SECONDS)

    def reviewing(user: User) -> Callable[[], None]:
        client = client_for(user, raise_request_exception=False)

        def review() -> None:
            reviews = open_contract_reviews()
            if not reviews:
                return
            chosen = random.choice(reviews)
            page = client.get(reverse("approvals:review", args=[chosen.pk]))
            with mix.lock:
                mix.statuses[page.status_code] += 1
            if page.status_code != 200 or 'id="decision-form"' not in page.text:
                return
            data = {**form_fields(page.text, "decision-form"), "action": "approve"}
            response = client.post(reverse("approvals:decide", args=[chosen.pk]), data)
            with mix.lock:
                mix.statuses[response.status_code] += 1

        review.__name__ = f"review_as_{user.get_username()}"
        return review

    cancelled: list[int] = []
    rolled_back: list[int] = []

    def cancel() -> None:
        if len(cancelled) >= 3:
            return
        thread = random.choice(contracts)
        services.cancel_thread(thread=thread, actor=admin, reason="stress")
        cancelled.append(thread.pk)

    def retry() -> None:
        thread = random.choice(crashing)
        thread.refresh_from_db()
        if thread.status == Thread.Status.FAILED:
            services.retry_thread(thread=thread, actor=admin)

    def rollback() -> None:
        if len(rolled_back) >= 3:
            return
        thread = random.choice(contracts)
        graph = engine.graph_for(thread.workflow)
        paused = [
            snapshot
            for snapshot in graph.get_state_history(engine.config_for(thread.thread_id))
            if set(snapshot.next) == {"legal", "finance"}
        ]
        head = engine.checkpoint_id_of(engine.head(thread.workflow, thread.thread_id))
        earlier = [snapshot for snapshot in paused if engine.checkpoint_id_of(snapshot) != head]
        if earlier:
            services.rollback_thread(
                thread=thread,
                actor=admin,
                checkpoint_id=engine.checkpoint_id_of(earlier[-1]),
                reason="stress: decide again",
            )
            rolled_back.append(thread.pk)

    def sweep() -> None:
        services.sweep()

    actors = [
        mix.actor(reviewing(reviewer), 0.05),
        mix.actor(reviewing(other_reviewer), 0.05),
        mix.actor(cancel, 6.0),
        mix.actor(retry, 1.0),
        mix.actor(rollback, 4.0),
        mix.actor(sweep, 1.0),
    ]
    for actor in actors:
        actor.start()
    for actor in actors:
        actor.join(MIX_SECONDS + 30)
    # Let the last decisions' runs finish (answers given while a run was busy wait for its pause).
    wait_for(settled, timeout=SETTLE_SECONDS, what="every run to finish and every review to be decided")

    logs = "\n".join(worker.text() for worker in two_workers)
    assert "deadlock detected" not in logs
    assert not mix.errors, mix.errors
    assert not [status for status in mix.statuses if status >= 500], mix.statuses
    assert mix.statuses[204] + mix.statuses[302] + mix.statuses[200] > 0
    for thread in [*contracts, *crashing]:
        assert thread.runs.filter(status__in=ACTIVE_RUN_STATUSES).count() <= 1
    applied: Counter[int] = Counter()
    for data in AuditEvent.objects.filter(action="thread.resumed").values_list("data", flat=True):
        applied.update(data.get("decisions", []))
    assert all(count == 1 for count in applied.values()), applied
    for decision in Decision.objects.select_related("review__thread"):
        if decision.review.thread.status != Thread.Status.CANCELLED:
            assert applied[decision.pk] == 1, f"decision {decision.pk} applied {applied[decision.pk]} times"
    assert services.verify_audit_chain()[1] is None
    assert Thread.objects.filter(pk__in=[t.pk for t in contracts], status=Thread.Status.COMPLETED).exists()
