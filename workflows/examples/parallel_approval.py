"""A contract that needs two sign-offs at once: legal and finance review in parallel.

Both nodes run in the same step and each calls `interrupt()`, so the thread waits on
two reviews; each answer resumes its own interrupt by id, and `close` runs when both
have answered.
"""

from __future__ import annotations

import operator
from typing import Annotated, Any, NotRequired, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.types import interrupt

from workflows.registry import SummaryField, register


class ContractState(TypedDict):
    counterparty: str
    value: float
    signoffs: Annotated[list[str], operator.add]
    outcome: NotRequired[str]


def prepare(state: ContractState) -> dict[str, Any]:
    return {"signoffs": []}


def _sign_off(team: str, question: str) -> Any:
    def node(state: ContractState) -> dict[str, Any]:
        answer = interrupt({"team": team, "question": question.format(**state)})
        verdict = answer.get("action") if isinstance(answer, dict) else answer
        return {"signoffs": [f"{team}:{'approved' if verdict == 'approve' else 'rejected'}"]}

    return node


def close(state: ContractState) -> dict[str, Any]:
    approved = all(item.endswith(":approved") for item in state["signoffs"])
    return {"outcome": "signed" if approved else "declined"}


@register(
    "parallel_approval",
    title="Contract sign-off (legal and finance)",
    description="Legal and finance each approve or reject the contract; it is signed only if both approve.",
    reviewer_group="contracts",
    editable=["value"],
    # Who the contract is with and what it is worth, as the queue's columns (sortable by value).
    summary_fields=[SummaryField("counterparty", "Counterparty"), SummaryField("value", "Value", "money")],
)
def build() -> StateGraph[ContractState]:
    builder = StateGraph(ContractState)
    builder.add_node("prepare", prepare)
    builder.add_node("legal", _sign_off("legal", "May we sign with {counterparty}?"))
    builder.add_node("finance", _sign_off("finance", "Is a value of {value} within budget?"))
    builder.add_node("close", close)
    builder.add_edge(START, "prepare")
    builder.add_edge("prepare", "legal")
    builder.add_edge("prepare", "finance")
    builder.add_edge(["legal", "finance"], "close")
    builder.add_edge("close", END)
    return builder
