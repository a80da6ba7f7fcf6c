"""Every fake graph of the tests, deterministic and with no model calls.

- Registered at import (`@register`), for tests whose runs execute in real worker
  processes, which load this module through SIGNOFF_GRAPH_MODULES: their node executions
  are counted in a table, `signoff_test_node_calls`, read back with `node_calls`.
  Behaviour is steered by the thread's input, so one registration serves every test:
  `hold_at` makes that node's first call wait while the file `hold_file` exists (so a
  test can kill or freeze the worker there), `die_at` makes that node kill its worker
  process every time, and `pause` makes every node sleep that many seconds.
- `build_*` builders that a test registers for itself with `tests.factories.registered`,
  run in this process; the counted ones count node executions in `CALLS`.
- `make_*_graph` graphs compiled against a saver the test passes, with no registry, for the
  checkpointer's own tests; `config_for` is their config.
"""

from __future__ import annotations

import enum
import operator
import os
import time
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, NotRequired, TypedDict
from uuid import UUID

from django.db import connection
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.config import get_config, get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import RetryPolicy, interrupt
from pydantic import BaseModel

from workflows.registry import Workflow, register


def line(schema: type[Any], **nodes: Any) -> StateGraph[Any]:
    """START -> each node in the order given -> END."""
    builder: StateGraph[Any] = StateGraph(schema)
    previous = START
    for name, node in nodes.items():
        builder.add_node(name, node)
        builder.add_edge(previous, name)
        previous = name
    builder.add_edge(previous, END)
    return builder


# -- run in worker processes, every node execution counted in a table ---------------------------

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
    return line(StepsState, **{name: _step(name) for name in STEPS})


# -- streamed through the HTTP API (tests/test_api_streaming.py) ------------------------------


class StreamedState(TypedDict):
    count: int
    # Carried along untouched: what a test looks for in the stored events.
    note: NotRequired[str]
    ask: NotRequired[bool]
    fail: NotRequired[bool]
    hold_file: NotRequired[str]
    answer: NotRequired[str]
    # Call a (fake) chat model, whose chunks LangGraph's `messages` stream carries.
    talk: NotRequired[bool]


def _streamed_first(state: StreamedState) -> dict[str, Any]:
    get_stream_writer()({"progress": "first", "note": state.get("note", "")})
    if state.get("talk"):
        from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
        from langchain_core.messages import AIMessage

        GenericFakeChatModel(messages=iter([AIMessage("Hi there, tess")])).invoke("hello")
    hold_file = state.get("hold_file")
    while hold_file and Path(hold_file).exists():
        time.sleep(0.05)
    return {"count": state["count"] + 1}


def _streamed_ask(state: StreamedState) -> dict[str, Any]:
    if not state.get("ask"):
        return {}
    return {"answer": str(interrupt({"question": "go on?"}))}


def _streamed_last(state: StreamedState) -> dict[str, Any]:
    if state.get("fail"):
        raise ValueError("the last step failed on purpose")
    return {"count": state["count"] + 1}


@register("test_streamed", title="Three streamed steps", reviewer_group="testers")
def streamed() -> StateGraph[StreamedState]:
    return line(StreamedState, first=_streamed_first, ask=_streamed_ask, last=_streamed_last)


# -- typed edits (issue 9): every kind of field a reviewer may edit ----------------------------


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


# -- honest failures (issue 9): a node whose database work fails the same way every time -------


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
    return line(FaultState, insert=_duplicate_row)


def _divide(state: FaultState) -> dict[str, Any]:
    return {"count": state["count"] + 1, "ratio": float("nan"), "scale": float("-inf")}


@register("test_not_a_number", title="A node that leaves NaN and infinity in state", reviewer_group="testers")
def not_a_number() -> StateGraph[FaultState]:
    return line(FaultState, divide=_divide)


# -- run in this process, every node execution counted in CALLS --------------------------------


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
    return line(
        CountState,
        step1=counted_step("step1"),
        step2=counted_step("step2"),
        step3=counted_step("step3", fails=1),
    )


def build_flaky_with_retry_policy() -> StateGraph[CountState]:
    builder = StateGraph(CountState)
    builder.add_node("step1", counted_step("step1"))
    builder.add_node(
        "flaky",
        counted_step("flaky", fails=2),
        retry_policy=RetryPolicy(max_attempts=3, initial_interval=0.0, jitter=False, retry_on=RuntimeError),
    )
    builder.add_edge(START, "step1")
    builder.add_edge("step1", "flaky")
    builder.add_edge("flaky", END)
    return builder


class ExpenseState(TypedDict, total=False):
    amount: float
    approved: bool
    outcome: str


def build_counted_expense() -> StateGraph[ExpenseState]:
    def draft(state: ExpenseState) -> ExpenseState:
        CALLS["draft"] += 1
        return {"approved": False}

    def pay(state: ExpenseState) -> ExpenseState:
        CALLS["pay"] += 1
        return {"outcome": f"paid {state['amount']:.2f}" if state.get("approved") else "rejected"}

    return line(ExpenseState, draft=draft, pay=pay)


# -- where a thread pauses: a dynamic interrupt, a breakpoint, two breakpoints at once ---------


class AskState(TypedDict):
    title: str
    data: NotRequired[dict[str, Any]]
    answer: NotRequired[str]


def build_ask() -> StateGraph[AskState]:
    def ask(state: AskState) -> dict[str, Any]:
        answer = interrupt({"question": "Is the data right?"})
        return {"answer": str(answer.get("action"))}

    return line(AskState, ask=ask)


def build_check() -> StateGraph[AskState]:
    return line(AskState, prepare=lambda state: {"answer": ""}, finish=lambda state: {"answer": "done"})


class GateState(TypedDict, total=False):
    done: list[str]


def build_two_gates() -> StateGraph[GateState]:
    builder = StateGraph(GateState)
    builder.add_node("prepare", lambda state: {"done": []})
    builder.add_node("ship", lambda state: {})
    builder.add_node("bill", lambda state: {})
    builder.add_edge(START, "prepare")
    builder.add_edge("prepare", "ship")
    builder.add_edge("prepare", "bill")
    builder.add_edge(["ship", "bill"], END)
    return builder


def build_ticks() -> StateGraph[CountState]:
    """`tick` runs 30 times (30 checkpoints and more), then a breakpoint before `finish`."""
    builder = StateGraph(CountState)
    builder.add_node("tick", lambda state: {"count": state["count"] + 1})
    builder.add_node("finish", lambda state: {})
    builder.add_edge(START, "tick")
    builder.add_conditional_edges("tick", lambda state: "finish" if state["count"] >= 30 else "tick")
    builder.add_edge("finish", END)
    return builder


def ticks_workflow() -> Workflow:
    """`build_ticks` for finance, paused before `finish`: a thread with a long history."""
    return Workflow(
        name="ticks",
        title="Ticks",
        builder=build_ticks,
        reviewer_group="finance",
        interrupt_before=("finish",),
    )


# -- the reviewer's pages (issue 4): an agent-inbox request, and fields of every widget --------


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

    return line(InboxState, ask=ask)


class TypedState(TypedDict):
    flag: bool
    ratio: float
    level: Literal["low", "high"]
    label: str
    tags: list[str]
    limits: dict[str, int]


def build_typed() -> StateGraph[TypedState]:
    return line(TypedState, prepare=lambda state: {"label": state["label"].strip()}, finish=lambda state: {})


TYPED_INPUT = {"flag": True, "ratio": 0.5, "level": "low", "label": "Q3", "tags": ["a"], "limits": {"x": 1}}


# -- compiled against the saver a test passes, no registry (the checkpointer's tests) ----------


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

    builder = line(CountState, step1=step("step1"), step2=step("step2"), step3=step("step3", crash=True))
    return builder.compile(checkpointer=checkpointer)


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

    return line(ExpenseState, draft=draft, pay=pay).compile(
        checkpointer=checkpointer, interrupt_before=["pay"]
    )


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

    return line(LogState, **{name: append(name) for name in nodes}).compile(checkpointer=checkpointer)


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


# -- the HTTP API's runs (tests/test_api_runs.py): a thread that completes by itself -----------


class TallyState(TypedDict):
    count: int
    # Seconds the step takes (a run still active when a second one is asked for), and a
    # failure on demand.
    pause: NotRequired[float]
    fail: NotRequired[bool]


def _tally(state: TallyState) -> dict[str, Any]:
    time.sleep(state.get("pause", 0))
    if state.get("fail"):
        raise ValueError("asked to fail")
    return {"count": state["count"] + 1}


@register("test_tally", title="A step that adds one", reviewer_group="testers")
def tally() -> StateGraph[TallyState]:
    return line(TallyState, add=_tally)


# -- deadlines (tests/test_deadline_workers.py): a default decided by the sweep ----------------


class DueState(TypedDict):
    title: str
    answer: NotRequired[str]


def _due_ask(state: DueState) -> dict[str, Any]:
    thread_id = str(get_config()["configurable"]["thread_id"])
    answer = interrupt({"question": "Pay it?"})
    # Counted after the interrupt returns: once per resume that reached this node.
    _record(thread_id, "answered")
    return {"answer": str(answer.get("action"))}


def _due_after(state: DueState) -> dict[str, Any]:
    _record(str(get_config()["configurable"]["thread_id"]), "after")
    return {}


# Due a second after its review opens; the sweep then approves it as "timeout".
@register(
    "test_due_default",
    title="Approved by default when due",
    reviewer_group="testers",
    review_hours=1 / 3600,
    on_due={"decide": "approve"},
)
def due_default() -> StateGraph[DueState]:
    return line(DueState, ask=_due_ask, after=_due_after)


# -- four-eyes and quorum (tests/test_quorum.py, test_browser.py): the expense claim, reviewed
# by the "quorum" group only (no persona of the other tests is in it), registered at import so
# worker processes know them too.

QUORUM_EXPENSE = {
    "reviewer_group": "quorum",
    "editable": ["amount", "category", "approved"],
    "interrupt_before": ["pay"],
    "on_approve": {"approved": True},
    "on_reject": {"approved": False},
}


@register("test_four_eyes", title="Expense claim, two approvers", approvals_required=2, **QUORUM_EXPENSE)
def four_eyes() -> StateGraph[Any]:
    from workflows.examples.expense_approval import build

    return build()


@register(
    "test_all_groups",
    title="Expense claim, one approver from each of finance and legal",
    approvals_required="all",
    approval_groups=["quorum_finance", "quorum_legal"],
    **QUORUM_EXPENSE,
)
def all_groups() -> StateGraph[Any]:
    from workflows.examples.expense_approval import build

    return build()
