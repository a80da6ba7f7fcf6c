"""Fake graphs for tests: deterministic, no model calls, every node execution counted."""

from __future__ import annotations

import operator
from collections import Counter
from typing import Annotated, Any, TypedDict

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph


class CountState(TypedDict):
    count: int


def make_seed_graph(
    checkpointer: BaseCheckpointSaver[Any], calls: Counter[str], *, crashes: int = 1
) -> CompiledStateGraph[Any]:
    """The seed document's demo: three steps adding 1; step 3 raises `crashes` times."""

    def step(name: str, *, crash: bool = False) -> Any:
        def node(state: CountState) -> CountState:
            calls[name] += 1
            if crash and calls[name] <= crashes:
                raise RuntimeError("Simulated crash")
            return {"count": state["count"] + 1}

        return node

    builder = StateGraph(CountState)
    builder.add_node("step1", step("step1"))
    builder.add_node("step2", step("step2"))
    builder.add_node("step3", step("step3", crash=True))
    builder.add_edge(START, "step1")
    builder.add_edge("step1", "step2")
    builder.add_edge("step2", "step3")
    builder.add_edge("step3", END)
    return builder.compile(checkpointer=checkpointer)


class ExpenseState(TypedDict, total=False):
    amount: float
    approved: bool
    outcome: str


def make_expense_graph(
    checkpointer: BaseCheckpointSaver[Any], calls: Counter[str]
) -> CompiledStateGraph[Any]:
    """draft -> (breakpoint) -> pay or reject, decided by `approved`."""

    def draft(state: ExpenseState) -> ExpenseState:
        calls["draft"] += 1
        return {"amount": state.get("amount", 0.0), "approved": False}

    def pay(state: ExpenseState) -> ExpenseState:
        calls["pay"] += 1
        if state.get("approved"):
            return {"outcome": f"paid {state['amount']:.2f}"}
        return {"outcome": "rejected"}

    builder = StateGraph(ExpenseState)
    builder.add_node("draft", draft)
    builder.add_node("pay", pay)
    builder.add_edge(START, "draft")
    builder.add_edge("draft", "pay")
    builder.add_edge("pay", END)
    return builder.compile(checkpointer=checkpointer, interrupt_before=["pay"])


class LogState(TypedDict):
    log: Annotated[list[str], operator.add]


def make_log_graph(
    checkpointer: BaseCheckpointSaver[Any], calls: Counter[str], nodes: tuple[str, ...] = ("a", "b", "c")
) -> CompiledStateGraph[Any]:
    """A chain of nodes, each appending its name to an accumulating list."""

    def append(name: str) -> Any:
        def node(state: LogState) -> LogState:
            calls[name] += 1
            return {"log": [name]}

        return node

    builder = StateGraph(LogState)
    previous = START
    for name in nodes:
        builder.add_node(name, append(name))
        builder.add_edge(previous, name)
        previous = name
    builder.add_edge(previous, END)
    return builder.compile(checkpointer=checkpointer)


class GrowState(TypedDict):
    items: Annotated[list[Any], operator.add]
    target: int


def make_growing_graph(checkpointer: BaseCheckpointSaver[Any]) -> CompiledStateGraph[Any]:
    """One node that loops on itself, appending one item a step until `target` items."""

    def grow(state: GrowState) -> dict[str, Any]:
        return {"items": [f"item-{len(state['items']):05d}-" + "x" * 40]}

    def more(state: GrowState) -> str:
        return "grow" if len(state["items"]) < state["target"] else END

    builder = StateGraph(GrowState)
    builder.add_node("grow", grow)
    builder.add_edge(START, "grow")
    builder.add_conditional_edges("grow", more, ["grow", END])
    return builder.compile(checkpointer=checkpointer)


def config_for(thread_id: str, **configurable: Any) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread_id, **configurable}}
