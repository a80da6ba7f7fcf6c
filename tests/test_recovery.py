"""DjangoSaver under real LangGraph graphs: recovery, breakpoints, forks, long threads."""

from __future__ import annotations

import uuid
from collections import Counter

import pytest

from tests.fake_workflows import (
    config_for,
    make_expense_graph,
    make_growing_graph,
    make_log_graph,
    make_seed_graph,
)
from workflows.checkpointer import DjangoSaver

pytestmark = pytest.mark.django_db(transaction=True)


def new_thread() -> str:
    return str(uuid.uuid4())


def test_seed_demo_resumes_at_step3_without_rerunning_steps_1_and_2(saver: DjangoSaver):
    calls: Counter[str] = Counter()
    graph = make_seed_graph(saver, calls)
    config = config_for(new_thread())

    with pytest.raises(RuntimeError, match="Simulated crash"):
        graph.invoke({"count": 0}, config, durability="sync")
    state = graph.get_state(config)
    assert state.next == ("step3",)
    assert state.values == {"count": 2}
    assert state.tasks[0].error is not None

    # A fresh graph object and saver, as a new worker process would have.
    resumed = make_seed_graph(DjangoSaver(), calls)
    result = resumed.invoke(None, config, durability="sync")

    assert result == {"count": 3}
    assert calls == {"step1": 1, "step2": 1, "step3": 2}
    assert resumed.get_state(config).next == ()


def test_breakpoint_update_state_then_resume_finishes_with_the_edit(saver: DjangoSaver):
    calls: Counter[str] = Counter()
    graph = make_expense_graph(saver, calls)
    config = config_for(new_thread())

    graph.invoke({"amount": 120.0}, config, durability="sync")
    paused = graph.get_state(config)
    assert paused.next == ("pay",)
    assert paused.values == {"amount": 120.0, "approved": False}

    graph.update_state(config, {"approved": True, "amount": 99.5})
    result = graph.invoke(None, config, durability="sync")

    assert result["outcome"] == "paid 99.50"
    assert calls == {"draft": 1, "pay": 1}


def test_without_the_edit_the_breakpoint_resumes_to_rejection(saver: DjangoSaver):
    calls: Counter[str] = Counter()
    graph = make_expense_graph(saver, calls)
    config = config_for(new_thread())

    graph.invoke({"amount": 10.0}, config, durability="sync")
    result = graph.invoke(None, config, durability="sync")

    assert result["outcome"] == "rejected"


def test_forking_from_an_earlier_checkpoint_leaves_the_original_branch_intact(saver: DjangoSaver):
    calls: Counter[str] = Counter()
    graph = make_log_graph(saver, calls)
    config = config_for(new_thread())
    graph.invoke({"log": ["start"]}, config, durability="sync")
    original_head = graph.get_state(config)
    assert original_head.values == {"log": ["start", "a", "b", "c"]}

    # The checkpoint after "a" ran, about to run "b".
    after_a = next(s for s in graph.get_state_history(config) if s.next == ("b",))
    forked = graph.update_state(after_a.config, {"log": ["EDIT"]}, as_node="a")
    result = graph.invoke(None, forked, durability="sync")

    assert result == {"log": ["start", "a", "EDIT", "b", "c"]}
    assert graph.get_state(config).values == {"log": ["start", "a", "EDIT", "b", "c"]}
    # The first branch's head still reads back exactly as it was.
    assert graph.get_state(original_head.config).values == {"log": ["start", "a", "b", "c"]}
    assert calls == {"a": 1, "b": 2, "c": 2}


def test_a_1000_step_thread_reads_back_correctly(saver: DjangoSaver):
    graph = make_growing_graph(saver)
    config = config_for(new_thread())

    result = graph.invoke(
        {"items": [], "target": 1000}, {**config, "recursion_limit": 1100}, durability="sync"
    )

    expected = [f"item-{i:05d}-" + "x" * 40 for i in range(1000)]
    assert result["items"] == expected
    assert DjangoSaver().get_tuple(config).checkpoint["channel_values"]["items"] == expected
    history = list(graph.get_state_history(config))
    assert len(history) == 1002  # the input checkpoint, one per step, and the start
    # Every historical checkpoint holds exactly the items appended up to its step.
    for snapshot in history[::97]:
        step = snapshot.metadata["step"]
        assert snapshot.values.get("items", []) == expected[: max(step, 0)]


async def test_async_invoke_resumes_like_the_sync_one(saver: DjangoSaver):
    calls: Counter[str] = Counter()
    graph = make_seed_graph(saver, calls)
    config = config_for(new_thread())

    with pytest.raises(RuntimeError):
        await graph.ainvoke({"count": 0}, config, durability="sync")
    result = await graph.ainvoke(None, config, durability="sync")

    assert result == {"count": 3}
    assert calls == {"step1": 1, "step2": 1, "step3": 2}
