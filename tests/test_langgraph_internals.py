"""What Signoff copies from LangGraph's private modules instead of importing them: a copy that
drifts from LangGraph's value fails here, on upgrade, not in a thread."""

from __future__ import annotations

from langgraph._internal._constants import NULL_TASK_ID

from workflows import engine


def test_the_null_task_id_is_langgraphs():
    assert engine.NULL_TASK_ID == NULL_TASK_ID


def test_the_app_imports_nothing_from_langgraphs_engine_internals():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    for path in [*root.glob("workflows/*.py"), *root.glob("approvals/*.py")]:
        assert "from langgraph._internal._constants import" not in path.read_text(), path
