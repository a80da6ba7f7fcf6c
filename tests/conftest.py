from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User

from tests.factories import capture_doorbell, make_user
from workflows.checkpointer import DjangoSaver, close_write_connections


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
    return DjangoSaver()


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


@pytest.fixture
def reviewer() -> User:
    return make_user("rita", groups=["finance", "editors", "contracts"])


@pytest.fixture
def other_reviewer() -> User:
    return make_user("oscar", groups=["finance", "editors", "contracts"])
