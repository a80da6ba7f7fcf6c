"""`make test-langgraph` (bin/test-langgraph) fails when LangGraph's tests fail, and when
they select nothing: a run that checked nothing must not pass."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from config.settings import BASE_DIR

pytestmark = pytest.mark.slow

SCRIPT = BASE_DIR / "bin" / "test-langgraph"
# One quick checkpointer test of the sdist.
ONE_TEST = "test_conditional_state_graph"


def _run(*pytest_args: str, sdist_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ}
    if sdist_dir is not None:
        env["LANGGRAPH_SDIST_DIR"] = str(sdist_dir)
    return subprocess.run(
        [str(SCRIPT), "django-sqlite", "--", *pytest_args],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_the_target_passes_when_the_selected_tests_pass():
    ran = _run("-k", ONE_TEST)

    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "passed" in ran.stdout


def test_the_target_fails_when_a_test_fails(tmp_path: Path):
    assert _run("-k", ONE_TEST).returncode == 0  # also fetches the sdist when missing
    version = importlib.metadata.version("langgraph")
    copy = tmp_path / f"langgraph-{version}"
    shutil.copytree(BASE_DIR / "var" / "langgraph-sdist" / f"langgraph-{version}", copy)
    (copy / "tests" / "test_signoff_broken.py").write_text(
        "def test_a_checkpointer_test_that_fails(sync_checkpointer):\n"
        "    assert sync_checkpointer.get_tuple({'configurable': {'thread_id': 'none'}}) == 'a tuple'\n"
    )

    ran = _run("-k", "test_a_checkpointer_test_that_fails", sdist_dir=tmp_path)

    assert ran.returncode != 0
    assert "1 failed" in ran.stdout
    assert "LangGraph checkpointer tests failed: django-sqlite" in ran.stderr


def test_the_target_fails_when_no_test_is_selected():
    ran = _run("-k", "no_test_has_this_name")

    assert ran.returncode != 0
    assert "django-sqlite collected no test" in ran.stderr
