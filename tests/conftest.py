from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from approvals.models import Review
from tests.factories import capture_doorbell, make_user, open_review, paused, run_queued
from tests.fake_workflows import TYPED_INPUT, build_typed

# A real SMTP server (aiosmtpd) with the email settings pointed at it (tests/mailserver.py).
from tests.mailserver import smtp  # noqa: F401
from tests.pages import client_for, expense_thread, grant

# The app under uvicorn, for any test that streams (tests/servers.py).
from tests.servers import asgi_server  # noqa: F401
from workflows import registry, services
from workflows.checkpointer import DjangoSaver, close_write_connections
from workflows.leases import RunLeaseFence
from workflows.models import Thread


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `postgres` only mean something on PostgreSQL; skip them on SQLite."""
    from django.conf import settings

    if settings.DATABASES["default"]["ENGINE"].endswith("postgresql"):
        return
    skip = pytest.mark.skip(reason="needs PostgreSQL (DATABASE_URL=postgres://...)")
    for item in items:
        if item.get_closest_marker("postgres"):
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _checkpoint_connections_closed_at_the_end(django_db_setup: None) -> Iterator[None]:
    # Depending on django_db_setup makes this teardown run first: PostgreSQL will not
    # drop the test database while the saver's write connections are open.
    yield
    close_write_connections()


@pytest.fixture(scope="session", autouse=True)
def _flush_outlasts_a_busy_worker() -> Iterator[None]:
    """A transactional test ends with a flush (TRUNCATE on PostgreSQL). A real worker or the
    uvicorn server may still be finishing the test's last task (a notification's delivery after
    the thread paused), and PostgreSQL can pick the TRUNCATE as the victim of the deadlock between
    them; the test's data then stays and the next test fails on it (CI, once). The flush is
    retried, since the worker's transaction ends in moments."""
    from django.core.management.base import CommandError
    from django.db import OperationalError
    from django.test import TransactionTestCase

    flush = TransactionTestCase._fixture_teardown

    def patient_flush(self: TransactionTestCase) -> None:
        for attempt in range(1, 6):
            try:
                return flush(self)
            except CommandError as error:
                if not isinstance(error.__cause__, OperationalError) or attempt == 5:
                    raise
                print(f"flush failed ({error.__cause__}); retrying", file=sys.stderr)
                time.sleep(0.5 * attempt)

    TransactionTestCase._fixture_teardown = patient_flush  # type: ignore[method-assign]
    yield
    TransactionTestCase._fixture_teardown = flush  # type: ignore[method-assign]


@pytest.fixture(autouse=True)
def _plain_static_files(settings: Any) -> None:
    # Production serves hashed files from collectstatic's manifest; tests do not run
    # collectstatic, so they resolve static files by name.
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


@pytest.fixture
def saver() -> DjangoSaver:
    return DjangoSaver(fence=RunLeaseFence())


@pytest.fixture
def doorbell(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The run ids services would publish to Celery, captured instead of sent."""
    return capture_doorbell(monkeypatch)


# The personas. Reviewers belong to the groups of the example workflows they review.
@pytest.fixture
def staff() -> User:
    return make_user("sam", staff=True)


@pytest.fixture
def admin() -> User:
    return make_user("ada", superuser=True)


# Reviewers of the four-eyes workflows (tests/fake_workflows.py `four_eyes`): one in each of the
# two approval groups.
@pytest.fixture
def quinn() -> User:
    return make_user("quinn", groups=["quorum", "quorum_finance"])


@pytest.fixture
def lena() -> User:
    return make_user("lena", groups=["quorum", "quorum_legal"])


@pytest.fixture
def reviewer() -> User:
    return make_user("rita", groups=["finance", "editors", "contracts"])


@pytest.fixture
def other_reviewer() -> User:
    return make_user("oscar", groups=["finance", "editors", "contracts"])


@pytest.fixture
def tester() -> User:
    """Tess, who reviews the fake workflows of tests/fake_workflows.py (testers)."""
    return make_user("tess", groups=["testers"])


@pytest.fixture
def auditor(staff: User) -> User:
    """Sam, holding the permission that lets staff read the audit trail."""
    return grant(staff, "view_auditevent")


# What the reviewer's pages are tested on (tests/test_queue.py, test_review_page.py, ...).
@pytest.fixture
def expense(staff: User) -> Thread:
    return expense_thread(staff)


@pytest.fixture
def review(expense: Thread) -> Review:
    return open_review(expense)


@pytest.fixture
def contract(staff: User) -> Thread:
    thread = services.start_thread(
        workflow="parallel_approval",
        input={"counterparty": "Acme", "value": 5000.0},
        actor=staff,
        title="Acme contract",
    )
    run_queued(thread)
    return thread


@pytest.fixture
def rita(reviewer: User) -> Client:
    return client_for(reviewer)


@pytest.fixture
def oscar(other_reviewer: User) -> Client:
    return client_for(other_reviewer)


@pytest.fixture
def mixed(staff: User, contract: Thread) -> dict[str, Any]:
    """Two expense claims and a contract (two parallel reviews): four open reviews."""
    lyon = expense_thread(staff, "Train to Lyon")
    laptop = expense_thread(staff, "New laptop", description="A laptop", category="equipment", amount=1500.0)
    return {
        "lyon": open_review(lyon),
        "laptop": open_review(laptop),
        "legal": open_review(contract, "legal"),
        "finance": open_review(contract, "finance"),
    }


@pytest.fixture
def typed(staff: User) -> Iterator[Thread]:
    workflow = registry.Workflow(
        name="typed_fields",
        title="Typed fields",
        builder=build_typed,
        reviewer_group="finance",
        editable=tuple(TYPED_INPUT),
        interrupt_before=("finish",),
    )
    with paused(workflow, TYPED_INPUT, staff) as thread:
        assert thread.status == Thread.Status.INTERRUPTED
        yield thread
