"""A graph compiled with DjangoSaver reads back the types of its own schemas, and no others.

DjangoSaver's serializer is strict (msgpack revives only allowed types). LangGraph derives
a graph's schema types and hands them to the saver only in its strict mode; these graphs
are compiled the way LangGraph's own tests and users compile them, not through the registry.
"""

# No `from __future__ import annotations`: an entrypoint reads its types from the
# signature as they are, and a string annotation names no type.
import dataclasses
import operator
from typing import Annotated, Any, TypedDict

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.func import entrypoint
from langgraph.graph import END, START, StateGraph
from pydantic import BaseModel

from tests.fake_workflows import config_for
from workflows.checkpointer import DjangoSaver

pytestmark = pytest.mark.django_db(transaction=True)


@dataclasses.dataclass
class Finding:
    summary: str
    severity: int


@dataclasses.dataclass
class Unlisted:
    note: str


class Verdict(BaseModel):
    approved: bool
    reason: str


class State(TypedDict):
    finding: Finding | None
    notes: Annotated[list[Any], operator.add]


def _graph(checkpointer: Any) -> Any:
    def inspect(state: State) -> dict[str, Any]:
        return {"finding": Finding("leak", 3), "notes": [Unlisted("not in any schema")]}

    builder = StateGraph(State)
    builder.add_node("inspect", inspect)
    builder.add_edge(START, "inspect")
    builder.add_edge("inspect", END)
    return builder.compile(checkpointer=checkpointer)


def test_a_state_schema_type_is_read_back_as_itself() -> None:
    graph = _graph(DjangoSaver())
    graph.invoke({"finding": None, "notes": []}, config_for("allow-1"))

    finding = graph.get_state(config_for("allow-1")).values["finding"]

    assert finding == Finding("leak", 3)
    assert isinstance(finding, Finding)


def test_a_type_in_no_schema_is_still_refused() -> None:
    graph = _graph(DjangoSaver())
    graph.invoke({"finding": None, "notes": []}, config_for("allow-2"))

    # Annotated `Any`: nothing names Unlisted, so strict msgpack gives back the raw payload.
    (note,) = graph.get_state(config_for("allow-2")).values["notes"]

    assert not isinstance(note, Unlisted)
    assert note == {"note": "not in any schema"}


def test_a_functional_entrypoint_reads_back_its_return_type() -> None:
    @entrypoint(checkpointer=DjangoSaver())
    def judge(text: str) -> Verdict:
        return Verdict(approved=True, reason=text)

    judge.invoke("fine", config_for("allow-3"))

    saved = judge.get_state(config_for("allow-3")).values

    assert saved == Verdict(approved=True, reason="fine")


def test_a_permissive_saver_stays_permissive() -> None:
    graph = _graph(InMemorySaver())
    graph.invoke({"finding": None, "notes": []}, config_for("allow-4"))

    (note,) = graph.get_state(config_for("allow-4")).values["notes"]

    assert note == Unlisted("not in any schema")
