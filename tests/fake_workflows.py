"""Workflows for the tests that run real worker processes (loaded via SIGNOFF_GRAPH_MODULES).

Every node execution is counted in a table, `signoff_test_node_calls`, because the
nodes run in other processes; tests read the counts back with `node_calls`.
Behaviour is steered by the thread's input, so one registration serves every test:
`hold_at` makes that node's first call wait while the file `hold_file` exists (so a
test can kill or freeze the worker there), `die_at` makes that node kill its
worker process every time, and `pause` makes every node sleep that many seconds.
"""

from __future__ import annotations

import enum
import os
import time
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, NotRequired, TypedDict
from uuid import UUID

from django.db import connection
from langgraph.config import get_config
from langgraph.graph import END, START, StateGraph
from langgraph.types import interrupt
from pydantic import BaseModel

from workflows.registry import register

CALLS_TABLE = "signoff_test_node_calls"
STEPS = ("s1", "s2", "s3", "s4", "s5")


class StepsState(TypedDict):
    count: int
    hold_at: NotRequired[str]
    hold_file: NotRequired[str]
    die_at: NotRequired[str]
    pause: NotRequired[float]


def create_calls_table() -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TABLE IF NOT EXISTS {CALLS_TABLE} "
            "(id integer PRIMARY KEY, thread_id varchar(64) NOT NULL, node varchar(64) NOT NULL, pid integer)"
            if connection.vendor == "sqlite"
            else f"CREATE TABLE IF NOT EXISTS {CALLS_TABLE} "
            "(id serial PRIMARY KEY, thread_id varchar(64) NOT NULL, node varchar(64) NOT NULL, pid integer)"
        )


def node_calls(thread_id: str) -> Counter[str]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT node FROM {CALLS_TABLE} WHERE thread_id = %s", [thread_id])
        return Counter(node for (node,) in cursor.fetchall())


def _record(thread_id: str, node: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {CALLS_TABLE} (thread_id, node, pid) VALUES (%s, %s, %s)",
            [thread_id, node, os.getpid()],
        )
    return node_calls(thread_id)[node]


def _step(name: str) -> Any:
    def node(state: StepsState) -> dict[str, Any]:
        thread_id = str(get_config()["configurable"]["thread_id"])
        calls = _record(thread_id, name)
        # A slow run, for a backlog that takes a while to drain.
        time.sleep(state.get("pause", 0))
        if state.get("die_at") == name:
            os._exit(1)
        hold_file = state.get("hold_file")
        if hold_file and state.get("hold_at") == name and calls == 1:
            while Path(hold_file).exists():
                time.sleep(0.05)
        return {"count": state["count"] + 1}

    return node


@register("test_five_steps", title="Five counted steps", reviewer_group="testers")
def five_steps() -> StateGraph[StepsState]:
    builder = StateGraph(StepsState)
    previous = START
    for name in STEPS:
        builder.add_node(name, _step(name))
        builder.add_edge(previous, name)
        previous = name
    builder.add_edge(previous, END)
    return builder


# -- typed edits (issue 9): every kind of field a reviewer may edit --------------------------


class Level(enum.StrEnum):
    LOW = "low"
    HIGH = "high"


class Address(BaseModel):
    city: str
    since: date


@dataclass
class Point:
    x: int
    y: int


class TypedEditState(TypedDict):
    level: NotRequired[Level]
    choice: NotRequired[Literal["a", "b", "c"]]
    price: NotRequired[Decimal]
    day: NotRequired[date]
    moment: NotRequired[datetime]
    ref: NotRequired[UUID]
    address: NotRequired[Address]
    stops: NotRequired[list[Address]]
    point: NotRequired[Point]
    answer: NotRequired[str]
    # What the last node found in the state: field -> its value's type (lists: of their items).
    seen: NotRequired[dict[str, str]]


TYPED_EDIT_FIELDS = ("level", "choice", "price", "day", "moment", "ref", "address", "stops", "point")


def _type_name(value: Any) -> str:
    if isinstance(value, list):
        return "list[" + ",".join(sorted({_type_name(item) for item in value})) + "]"
    return f"{type(value).__module__}.{type(value).__qualname__}"


def _look(state: TypedEditState) -> dict[str, Any]:
    return {"seen": {name: _type_name(value) for name, value in state.items() if name in TYPED_EDIT_FIELDS}}


def _typed_builder(*, ask: bool) -> StateGraph[TypedEditState]:
    builder = StateGraph(TypedEditState)
    builder.add_node("prepare", lambda state: {"answer": ""})
    builder.add_node("look", _look)
    builder.add_edge(START, "prepare")
    if ask:

        def question(state: TypedEditState) -> dict[str, Any]:
            answer = interrupt({"question": "Do these look right?"})
            return {"answer": str(answer.get("action") if isinstance(answer, dict) else answer)}

        builder.add_node("ask", question)
        builder.add_edge("prepare", "ask")
        builder.add_edge("ask", "look")
    else:
        builder.add_edge("prepare", "look")
    builder.add_edge("look", END)
    return builder


@register(
    "test_typed_breakpoint",
    title="Typed edits at a breakpoint",
    reviewer_group="testers",
    editable=TYPED_EDIT_FIELDS,
    interrupt_before=["look"],
)
def typed_breakpoint() -> StateGraph[TypedEditState]:
    return _typed_builder(ask=False)


@register(
    "test_typed_interrupt",
    title="Typed edits at a dynamic interrupt",
    reviewer_group="testers",
    editable=TYPED_EDIT_FIELDS,
)
def typed_interrupt() -> StateGraph[TypedEditState]:
    return _typed_builder(ask=True)


# What approving sets, as the workflow's author writes it: typed values, and models as dicts.
TYPED_ON_APPROVE: dict[str, Any] = {
    "level": Level.HIGH,
    "choice": "c",
    "price": Decimal("12.30"),
    "day": date(2027, 2, 3),
    "moment": datetime.fromisoformat("2027-02-03T04:05:06.789012+00:00"),
    "ref": UUID("00000000-0000-4000-8000-000000000002"),
    "address": {"city": "Oslo", "since": "2027-02-03"},
    "stops": [{"city": "Oslo", "since": "2027-02-03"}, {"city": "Bergen", "since": "2027-02-04"}],
    "point": {"x": 7, "y": 8},
}


@register(
    "test_typed_bulk",
    title="Typed edits set by approving",
    reviewer_group="testers",
    editable=TYPED_EDIT_FIELDS,
    interrupt_before=["look"],
    on_approve=TYPED_ON_APPROVE,
)
def typed_bulk() -> StateGraph[TypedEditState]:
    return _typed_builder(ask=False)


# -- honest failures (issue 9): a node whose database work fails the same way every time ------


class FaultState(TypedDict):
    count: int
    ratio: NotRequired[float]
    scale: NotRequired[float]


def _duplicate_row(state: FaultState) -> dict[str, Any]:
    # The same primary key twice: an IntegrityError no retry can cure.
    with connection.cursor() as cursor:
        for _ in range(2):
            cursor.execute(
                f"INSERT INTO {CALLS_TABLE} (id, thread_id, node, pid) VALUES (%s, %s, %s, %s)",
                [-state["count"], "duplicate", "dup", os.getpid()],
            )
    return {"count": state["count"] + 1}


@register("test_duplicate_row", title="A node that inserts a duplicate row", reviewer_group="testers")
def duplicate_row() -> StateGraph[FaultState]:
    builder = StateGraph(FaultState)
    builder.add_node("insert", _duplicate_row)
    builder.add_edge(START, "insert")
    builder.add_edge("insert", END)
    return builder


def _divide(state: FaultState) -> dict[str, Any]:
    return {"count": state["count"] + 1, "ratio": float("nan"), "scale": float("-inf")}


@register("test_not_a_number", title="A node that leaves NaN and infinity in state", reviewer_group="testers")
def not_a_number() -> StateGraph[FaultState]:
    builder = StateGraph(FaultState)
    builder.add_node("divide", _divide)
    builder.add_edge(START, "divide")
    builder.add_edge("divide", END)
    return builder


# -- the reviewer's pages (issue 4): an agent-inbox request, and fields of every widget ------


class InboxState(TypedDict):
    to: str
    note: NotRequired[str]


def build_inbox(allow_edit: bool = False) -> StateGraph[InboxState]:
    def ask(state: InboxState) -> dict[str, Any]:
        request = {
            "action_request": {"action": "send_mail", "args": {"to": state["to"], "subject": "Q3 numbers"}},
            "config": {
                "allow_accept": True,
                "allow_edit": allow_edit,
                "allow_respond": True,
                "allow_ignore": False,
            },
            "description": (
                "Send **the figures**? <script>alert(1)</script> <img src=x onerror=alert(2)> "
                "[click me](javascript:alert(3))"
            ),
        }
        answer = interrupt([request])[0]
        return {"note": str(answer.get("type"))}

    builder = StateGraph(InboxState)
    builder.add_node("ask", ask)
    builder.add_edge(START, "ask")
    builder.add_edge("ask", END)
    return builder


class TypedState(TypedDict):
    flag: bool
    ratio: float
    level: Literal["low", "high"]
    label: str
    tags: list[str]
    limits: dict[str, int]


def build_typed() -> StateGraph[TypedState]:
    builder = StateGraph(TypedState)
    builder.add_node("prepare", lambda state: {"label": state["label"].strip()})
    builder.add_node("finish", lambda state: {})
    builder.add_edge(START, "prepare")
    builder.add_edge("prepare", "finish")
    builder.add_edge("finish", END)
    return builder


TYPED_INPUT = {"flag": True, "ratio": 0.5, "level": "low", "label": "Q3", "tags": ["a"], "limits": {"x": 1}}
