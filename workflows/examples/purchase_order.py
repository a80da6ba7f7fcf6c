"""A purchase order under the four-eyes rule, with a deadline that acts.

Two different purchasing reviewers must approve before `order` runs (any reject declines it),
the person who raised the order may not approve it, and an order still waiting after 24 hours
goes to finance, whose members also lead purchasing and can hand reviews around.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal, NotRequired, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.types import Command

from workflows.registry import SummaryField, register


class OrderState(TypedDict):
    supplier: str
    item: str
    amount: float
    approved: NotRequired[bool]
    summary: NotRequired[str]
    outcome: NotRequired[str]


def _money(value: float) -> Decimal:
    return Decimal(str(value)).quantize(Decimal("0.01"))


def draft(state: OrderState) -> dict[str, object]:
    item, supplier = state.get("item", "something"), state.get("supplier", "a supplier")
    summary = f"Order {item} from {supplier} for {_money(state.get('amount', 0))}."
    return {"summary": summary, "approved": False}


def order(state: OrderState) -> Command[Literal["decline"]] | dict[str, object]:
    if not state.get("approved"):
        return Command(goto="decline")
    return {"outcome": f"ordered from {state['supplier']} for {_money(state['amount'])}"}


def decline(state: OrderState) -> dict[str, object]:
    return {"outcome": "declined"}


@register(
    "purchase_order",
    title="Purchase order (four eyes)",
    description="Two purchasing reviewers approve an order before it is placed; after a day, finance.",
    reviewer_group="purchasing",
    editable=["amount", "approved"],
    interrupt_before=["order"],
    on_approve={"approved": True},
    on_reject={"approved": False},
    approvals_required=2,
    review_hours=24,
    on_due={"escalate": "finance"},
    lead_group="finance",
    summary_fields=[
        SummaryField("supplier", "Supplier"),
        SummaryField("item", "Item"),
        SummaryField("amount", "Amount", "money"),
    ],
)
def build() -> StateGraph[OrderState]:
    builder = StateGraph(OrderState)
    builder.add_node("draft", draft)
    builder.add_node("order", order)
    builder.add_node("decline", decline)
    builder.add_edge(START, "draft")
    builder.add_edge("draft", "order")
    builder.add_edge("order", END)
    builder.add_edge("decline", END)
    return builder
