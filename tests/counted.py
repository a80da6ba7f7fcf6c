"""Test workflows run in this process whose nodes count their executions (in CALLS)."""

from __future__ import annotations

from collections import Counter
from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph

CALLS: Counter[str] = Counter()


class CountState(TypedDict):
    count: int


def counted_step(name: str, *, fails: int = 0) -> Any:
    def node(state: CountState) -> dict[str, int]:
        CALLS[name] += 1
        if CALLS[name] <= fails:
            raise RuntimeError(f"{name} failed (call {CALLS[name]})")
        return {"count": state["count"] + 1}

    return node


def build_three_steps() -> StateGraph[CountState]:
    """step1 -> step2 -> step3, each adding 1 to count; step3 fails on its first call."""
    builder = StateGraph(CountState)
    builder.add_node("step1", counted_step("step1"))
    builder.add_node("step2", counted_step("step2"))
    builder.add_node("step3", counted_step("step3", fails=1))
    builder.add_edge(START, "step1")
    builder.add_edge("step1", "step2")
    builder.add_edge("step2", "step3")
    builder.add_edge("step3", END)
    return builder
