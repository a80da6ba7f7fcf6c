"""The apps' modules import one another without a circle, and only downwards: notifications on
top of api on top of approvals on top of workflows, the write layer knowing nothing of Celery's
tasks (the doorbell publishes them by name)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APPS = ("workflows", "approvals", "api", "notifications")


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
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                names.add(submodule)
                # `from package import submodule` needs the submodule, not what the
                # package's __init__ defines: a package's own modules import their
                # siblings that way without a circle.
                if not _is_module(submodule):
                    names.add(node.module)
    return names


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


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


def test_the_engine_imports_nothing_of_the_app_above_it() -> None:
    modules = _modules()
    upward = {
        name: sorted(target for target in _imports(path) if target.split(".")[0] == "approvals")
        for name, path in modules.items()
        if name.startswith("workflows")
    }

    assert {name: targets for name, targets in upward.items() if targets} == {}


def _private_uses(path: Path) -> list[str]:
    """Private names of workflows that `path` imports or reads off a workflows module."""
    tree = ast.parse(path.read_text())
    modules: set[str] = set()
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "workflows":
            for alias in node.names:
                if alias.name.startswith("_"):
                    found.append(f"{node.module}.{alias.name}")
                modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            modules.update(
                alias.asname or alias.name for alias in node.names if alias.name.startswith("workflows")
            )
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            found.append(f"{node.value.id}.{node.attr}")
    return found


def test_approvals_uses_no_private_name_of_workflows() -> None:
    used = {name: _private_uses(path) for name, path in _modules().items() if name.startswith("approvals")}

    assert {name: names for name, names in used.items() if names} == {}


def test_the_private_name_finder_finds_one(tmp_path: Path) -> None:
    source = tmp_path / "probe.py"
    source.write_text("from workflows import services as s\nfrom workflows.x import _y\ns._ring(1)\n")

    assert _private_uses(source) == ["workflows.x._y", "s._ring"]


def test_nothing_imports_the_api_but_the_root_urls_and_notifications() -> None:
    # include("api.urls") names the module in a string, which counts as importing it; so do the
    # settings, which list the API's middleware (its JSON 405) and beat's webhook sweep.
    # Config sits on top of every app, and notifications on top of the API (it reuses its
    # signed webhooks).
    files = [path for top in (*APPS, "config") for path in (ROOT / top).rglob("*.py")]
    importers = sorted(
        str(path.relative_to(ROOT))
        for path in files
        if path.parts[len(ROOT.parts)] not in ("api", "notifications")
        and (any(name.split(".")[0] == "api" for name in _imports(path)) or '"api.' in _text(path))
    )

    assert importers == ["config/settings.py", "config/urls.py"]


def test_the_api_uses_no_private_name_of_workflows() -> None:
    used = {name: _private_uses(path) for name, path in _modules().items() if name.startswith("api")}

    assert {name: names for name, names in used.items() if names} == {}


def test_nothing_imports_notifications_but_the_root_urls() -> None:
    # Notifications hear of reviews through approvals' signals; nothing below asks them anything.
    files = [path for top in (*APPS, "config") for path in (ROOT / top).rglob("*.py")]
    importers = sorted(
        str(path.relative_to(ROOT))
        for path in files
        if path.parts[len(ROOT.parts)] != "notifications"
        and (
            any(name.split(".")[0] == "notifications" for name in _imports(path))
            or '"notifications.' in _text(path)
        )
    )

    assert importers == ["config/settings.py", "config/urls.py"]
