"""An expense claim: drafted, stopped before `pay` for a reviewer, then paid or rejected.

The reviewer may correct `amount` and sets `approved`; `pay` is a static breakpoint
(interrupt_before), so nothing is paid until someone has looked.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal, NotRequired, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.types import Command

from workflows.registry import SummaryField, register


class ExpenseState(TypedDict):
    employee: str
    description: str
    amount: float
    category: Literal["travel", "meals", "equipment", "other"]
    approved: NotRequired[bool]
    summary: NotRequired[str]
    outcome: NotRequired[str]


def draft(state: ExpenseState) -> dict[str, object]:
    amount = Decimal(str(state.get("amount", 0))).quantize(Decimal("0.01"))
    summary = (
        f"{state.get('employee', 'Someone')} claims {amount} for {state.get('category', 'other')}: "
        f"{state.get('description', '').strip() or 'no description'}."
    )
    return {"summary": summary, "approved": False}


def pay(state: ExpenseState) -> Command[Literal["reject"]] | dict[str, object]:
    # The branch is taken after the breakpoint, from the state the reviewer left.
    if not state.get("approved"):
        return Command(goto="reject")
    return {"outcome": f"paid {Decimal(str(state['amount'])).quantize(Decimal('0.01'))}"}


def reject(state: ExpenseState) -> dict[str, object]:
    return {"outcome": "rejected"}


@register(
    "expense_approval",
    title="Expense approval",
    description="Check the claim and correct the amount if needed: approve pays it, reject declines it.",
    reviewer_group="finance",
    editable=["amount", "category", "approved"],
    interrupt_before=["pay"],
    # Approving pays and rejecting takes the reject branch, whatever the checkbox says.
    on_approve={"approved": True},
    on_reject={"approved": False},
    # The queue's columns. Who claims and for what is searchable in the queue even with an
    # encryption key set; the amount is shown but, secret, then neither searched nor sorted;
    # the description is not a column at all.
    summary_fields=[
        SummaryField("employee", "Employee"),
        SummaryField("amount", "Amount", "money", secret=True),
        SummaryField("category", "Category"),
    ],
)
def build() -> StateGraph[ExpenseState]:
    builder = StateGraph(ExpenseState)
    builder.add_node("draft", draft)
    builder.add_node("pay", pay)
    builder.add_node("reject", reject)
    builder.add_edge(START, "draft")
    builder.add_edge("draft", "pay")
    builder.add_edge("pay", END)
    builder.add_edge("reject", END)
    return builder
