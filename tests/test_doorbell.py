"""The doorbell publishes a run's message by task name once the change commits, and the apps'
modules import one another without a circle (the write layer knows nothing of Celery's tasks)."""

from __future__ import annotations

import ast
import logging
from pathlib import Path
from typing import Any

import pytest
from celery import current_app
from django.db import transaction

from workflows import doorbell

ROOT = Path(__file__).resolve().parent.parent
APPS = ("workflows", "approvals")


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


# -- imports ------------------------------------------------------------------------------


def _modules() -> dict[str, Path]:
    found = {}
    for app in APPS:
        for path in (ROOT / app).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(path: Path) -> set[str]:
    """Every module `path` imports, at its top or inside a function (a lazy import is still
    a dependency), with `from a import b` counted as a and a.b."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _circle(graph: dict[str, set[str]]) -> list[str]:
    """One import circle in `graph`, as the modules along it, or [] when there is none."""
    done: set[str] = set()
    path: list[str] = []

    def visit(module: str) -> list[str]:
        if module in path:
            return [*path[path.index(module) :], module]
        if module in done:
            return []
        path.append(module)
        for target in sorted(graph[module]):
            found = visit(target)
            if found:
                return found
        path.pop()
        done.add(module)
        return []

    for module in sorted(graph):
        found = visit(module)
        if found:
            return found
    return []


def test_the_apps_import_one_another_without_a_circle() -> None:
    modules = _modules()
    graph = {name: (_imports(path) & modules.keys()) - {name} for name, path in modules.items()}

    assert _circle(graph) == []


def test_the_circle_finder_finds_a_lazy_import_back() -> None:
    assert _circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_nothing_but_celery_imports_the_tasks_module() -> None:
    # bin/ holds shell scripts too: a `python -c "from workflows.tasks import ..."` counts.
    files = [path for top in (*APPS, "config", "bin") for path in (ROOT / top).rglob("*") if path.is_file()]
    importers = [
        str(path.relative_to(ROOT))
        for path in files
        if path != ROOT / "workflows" / "tasks.py"
        and (
            "workflows.tasks" in (_imports(path) if path.suffix == ".py" else set())
            or "workflows.tasks import" in _text(path)
            or "from workflows import tasks" in _text(path)
        )
    ]

    assert importers == []


def _text(path: Path) -> str:
    try:
        return path.read_text()
    except UnicodeDecodeError:
        return ""
