"""The seed document's demo: three steps add 1 to `count`; step 3 fails on its first try.

The thread fails at step 3; retrying it runs step 3 alone (steps 1 and 2 are in the
checkpoints already) and ends with count 3.
"""

from __future__ import annotations

from typing import TypedDict

from langgraph.graph import END, START, StateGraph

from workflows.registry import register


class CountState(TypedDict):
    count: int


class SimulatedCrash(RuntimeError):
    pass


def step1(state: CountState) -> dict[str, int]:
    return {"count": state.get("count", 0) + 1}


def step2(state: CountState) -> dict[str, int]:
    return {"count": state["count"] + 1}


def step3(state: CountState) -> dict[str, int]:
    _fail_once(state)
    return {"count": state["count"] + 1}


def _fail_once(state: CountState) -> None:
    # "First try" must hold across processes and crashes, so ask the database how many
    # runs this thread has had: its start run fails, the retry run passes.
    from langgraph.config import get_config

    from workflows.models import Run

    thread_id = str(get_config()["configurable"]["thread_id"])
    if Run.objects.filter(thread__public_id=thread_id).count() <= 1:
        raise SimulatedCrash("Simulated crash in step 3 (it fails on the thread's first run only)")


@register(
    "seed_demo",
    title="Seed demo: resume after a crash",
    description="Three steps add 1 to count. Step 3 fails on the first run; retry resumes at step 3.",
    reviewer_group="operators",
)
def build() -> StateGraph[CountState]:
    builder = StateGraph(CountState)
    builder.add_node("step1", step1)
    builder.add_node("step2", step2)
    builder.add_node("step3", step3)
    builder.add_edge(START, "step1")
    builder.add_edge("step1", "step2")
    builder.add_edge("step2", "step3")
    builder.add_edge("step3", END)
    return builder
