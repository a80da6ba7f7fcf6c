"""Workflows for the tests that run real worker processes (loaded via SIGNOFF_GRAPH_MODULES).

Every node execution is counted in a table, `signoff_test_node_calls`, because the
nodes run in other processes; tests read the counts back with `node_calls`.
Behaviour is steered by the thread's input, so one registration serves every test:
`hold_at` makes that node's first call wait while the file `hold_file` exists (so a
test can kill or freeze the worker there), `die_at` makes that node kill its
worker process every time, and `pause` makes every node sleep that many seconds.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path
from typing import Any, NotRequired, TypedDict

from django.db import connection
from langgraph.config import get_config
from langgraph.graph import END, START, StateGraph

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
