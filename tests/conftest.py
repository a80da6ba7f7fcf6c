from __future__ import annotations

import pytest
from django.db import connection

from workflows.checkpointer import DjangoSaver


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `postgres` only mean something on PostgreSQL; skip them on SQLite."""
    from django.conf import settings

    if settings.DATABASES["default"]["ENGINE"].endswith("postgresql"):
        return
    skip = pytest.mark.skip(reason="needs PostgreSQL (DATABASE_URL=postgres://...)")
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def saver() -> DjangoSaver:
    return DjangoSaver()


@pytest.fixture
def on_postgres() -> bool:
    return connection.vendor == "postgresql"
