"""A run attempted again after its earlier attempt got partway (invariant 4): the answers and
edits it carries (`Command(resume=..., update=...)`) are applied once, however far the earlier
attempt got before it ended without recording an outcome."""

from __future__ import annotations

import operator
from collections import Counter
from collections.abc import Iterator
from typing import Annotated, Any, TypedDict

import pytest
from django.contrib.auth.models import User
from django.db import OperationalError
from langgraph.graph import END, START, StateGraph
from langgraph.types import interrupt

from tests.factories import decide, head, make_thread, open_review, open_reviews, registered, run_queued
from workflows import registry, services
from workflows.models import Run, Thread

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("doorbell")]

CALLS: Counter[str] = Counter()
# Where a fault is planted: "<node>" raises once after its interrupt() was answered.
FAULTS: Counter[str] = Counter()


class NotesState(TypedDict, total=False):
    notes: Annotated[list[str], operator.add]
    label: str
    answers: Annotated[list[Any], operator.add]


def _fault(name: str, error: type[Exception]) -> None:
    if FAULTS[name]:
        FAULTS[name] -= 1
        raise error(f"{name}: planted fault")


def build_notes(*, second_question: bool = False, error: type[Exception] = OperationalError) -> Any:
    """ask (interrupts; a second time if `second_question`) -> check (renames label) -> finish."""

    def build() -> StateGraph[NotesState]:
        def ask(state: NotesState) -> NotesState:
            CALLS["ask"] += 1
            answers = [interrupt({"question": "Any notes?"})]
            if second_question:
                answers.append(interrupt({"question": "Sure?"}))
            _fault("ask", error)
            return {"answers": answers}

        def check(state: NotesState) -> NotesState:
            CALLS["check"] += 1
            _fault("check", error)
            return {"label": f"{state['label']}, checked"}

        def finish(state: NotesState) -> NotesState:
            CALLS["finish"] += 1
            return {"notes": ["finished"]}

        builder = StateGraph(NotesState)
        builder.add_node("ask", ask)
        builder.add_node("check", check)
        builder.add_node("finish", finish)
        builder.add_edge(START, "ask")
        builder.add_edge("ask", "check")
        builder.add_edge("check", "finish")
        builder.add_edge("finish", END)
        return builder

    return build


def notes_workflow(name: str, **options: Any) -> registry.Workflow:
    return registry.Workflow(
        name=name,
        title="Notes",
        builder=build_notes(**options),
        reviewer_group="editors",
        editable=("notes", "label"),
    )


@pytest.fixture(autouse=True)
def _fresh() -> None:
    CALLS.clear()
    FAULTS.clear()


@pytest.fixture
def notes() -> Iterator[str]:
    with registered(notes_workflow("notes")):
        yield "notes"


@pytest.fixture
def notes_twice() -> Iterator[str]:
    with registered(notes_workflow("notes_twice", second_question=True)):
        yield "notes_twice"


@pytest.fixture
def notes_failing() -> Iterator[str]:
    with registered(notes_workflow("notes_failing", error=RuntimeError)):
        yield "notes_failing"


@pytest.fixture(
    params=[{"notes": ["from the reviewer"]}, {"notes": ["from the reviewer"], "label": "edited"}],
    ids=["a list edit", "a list and a plain edit"],
)
def edits(request: pytest.FixtureRequest) -> dict[str, Any]:
    """A reviewer's edits: to a field with a reducer (appended), and to a plain one (set)."""
    return dict(request.param)


def label(edits: dict[str, Any], *suffix: str) -> str:
    return ", ".join([edits.get("label", "draft"), *suffix])


def answered(workflow: str, staff: User, reviewer: User, edits: dict[str, Any]) -> Thread:
    """A thread paused at ask, answered with these edits; its resume run is queued."""
    thread = make_thread(workflow, {"notes": ["draft"], "label": "draft"}, staff)
    run_queued(thread)
    assert thread.status == Thread.Status.INTERRUPTED
    decide(open_review(thread), reviewer, "approve", updates=edits)
    thread.refresh_from_db()
    assert thread.status == Thread.Status.QUEUED
    return thread


def finished_with_edits_once(thread: Thread, edits: dict[str, Any]) -> dict[str, Any]:
    """Asserts the thread completed with the reviewer's edits applied once; its final values."""
    assert thread.status == Thread.Status.COMPLETED
    values = head(thread).values
    assert values["notes"] == ["draft", "from the reviewer", "finished"]
    assert values["label"] == label(edits, "checked")
    return values


def fail_finish_run_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The graph ran; recording its outcome hits a database error once."""
    real = services.finish_run
    left = [1]

    def finish_run(**kwargs: Any) -> bool:
        if left[0]:
            left[0] -= 1
            raise OperationalError("the database went away while recording")
        return real(**kwargs)

    monkeypatch.setattr(services, "finish_run", finish_run)


def resume_run(thread: Thread) -> Run:
    return thread.runs.get(kind=Run.Kind.RESUME)


def test_a_run_released_after_the_answered_step_was_checkpointed_applies_the_edits_once(
    staff: User, reviewer: User, edits: dict[str, Any], notes: str
):
    thread = answered(notes, staff, reviewer, edits)
    FAULTS["check"] = 1

    assert run_queued(thread).status == "released"
    assert head(thread).next == ("check",)
    assert run_queued(thread).status == "recorded"

    values = finished_with_edits_once(thread, edits)
    assert len(values["answers"]) == 1
    assert CALLS == {"ask": 2, "check": 2, "finish": 1}
    assert resume_run(thread).attempts == 2


def test_a_run_released_while_the_answered_node_ran_applies_the_edits_once(
    staff: User, reviewer: User, edits: dict[str, Any], notes: str
):
    thread = answered(notes, staff, reviewer, edits)
    from_checkpoint = resume_run(thread).from_checkpoint_id
    FAULTS["ask"] = 1

    assert run_queued(thread).status == "released"
    # The answered step did not finish: the head is still the checkpoint the run started
    # from, but the Command's edits are already stored there as pending writes.
    assert str(head(thread).config["configurable"]["checkpoint_id"]) == from_checkpoint
    assert run_queued(thread).status == "recorded"

    values = finished_with_edits_once(thread, edits)
    assert len(values["answers"]) == 1
    assert CALLS == {"ask": 3, "check": 1, "finish": 1}
    assert resume_run(thread).attempts == 2


def test_a_run_released_after_the_graph_completed_runs_no_node_again(
    staff: User, reviewer: User, edits: dict[str, Any], notes: str, monkeypatch: pytest.MonkeyPatch
):
    thread = answered(notes, staff, reviewer, edits)
    fail_finish_run_once(monkeypatch)

    assert run_queued(thread).status == "released"
    assert thread.status == Thread.Status.QUEUED
    assert run_queued(thread).status == "recorded"

    finished_with_edits_once(thread, edits)
    assert CALLS == {"ask": 2, "check": 1, "finish": 1}


def test_a_run_released_at_the_next_question_of_the_same_node_applies_answer_and_edits_once(
    staff: User, reviewer: User, edits: dict[str, Any], notes_twice: str, monkeypatch: pytest.MonkeyPatch
):
    # The node asks twice: the first answer re-runs it to its second interrupt() without a
    # new checkpoint, so the re-attempt finds the head where the run started.
    thread = answered(notes_twice, staff, reviewer, edits)
    first = resume_run(thread)
    fail_finish_run_once(monkeypatch)

    assert run_queued(thread).status == "released"
    assert run_queued(thread).status == "recorded"

    assert thread.status == Thread.Status.INTERRUPTED
    snapshot = head(thread)
    assert str(snapshot.config["configurable"]["checkpoint_id"]) == first.from_checkpoint_id
    assert snapshot.values["notes"] == ["draft", "from the reviewer"]
    assert snapshot.values["label"] == label(edits)
    second = open_review(thread)
    assert second.value == {"question": "Sure?"}
    # The re-attempt found the pause already reached and recorded it without running ask.
    assert CALLS == {"ask": 2}

    decide(second, reviewer, "approve")
    assert run_queued(thread).status == "recorded"

    values = finished_with_edits_once(thread, edits)
    assert [answer["action"] for answer in values["answers"]] == ["approve", "approve"]
    assert open_reviews(thread) == []


def test_a_retry_after_the_answered_node_raised_applies_the_edits_once(
    staff: User, reviewer: User, admin: User, edits: dict[str, Any], notes_failing: str
):
    thread = answered(notes_failing, staff, reviewer, edits)
    FAULTS["ask"] = 1

    assert run_queued(thread).status == "failed"
    services.retry_thread(thread=thread, actor=admin)
    assert run_queued(thread).status == "recorded"

    values = finished_with_edits_once(thread, edits)
    assert len(values["answers"]) == 1
    assert CALLS == {"ask": 3, "check": 1, "finish": 1}


def build_two_reviews() -> StateGraph[NotesState]:
    """legal and finance ask in parallel; legal's answered step fails once (FAULTS)."""

    def asking(name: str) -> Any:
        def node(state: NotesState) -> NotesState:
            CALLS[name] += 1
            answer = interrupt({"question": f"{name}?"})
            _fault(name, OperationalError)
            return {"answers": [answer]}

        return node

    def finish(state: NotesState) -> NotesState:
        CALLS["finish"] += 1
        return {"notes": ["finished"]}

    builder = StateGraph(NotesState)
    for name in ("legal", "finance"):
        builder.add_node(name, asking(name))
        builder.add_edge(START, name)
    builder.add_node("finish", finish)
    builder.add_edge(["legal", "finance"], "finish")
    builder.add_edge("finish", END)
    return builder


@pytest.fixture
def two_reviews() -> Iterator[str]:
    workflow = registry.Workflow(
        name="two_reviews",
        title="Two reviews",
        builder=build_two_reviews,
        reviewer_group="editors",
        editable=("notes", "label"),
    )
    with registered(workflow):
        yield workflow.name


def test_an_answer_given_while_a_released_run_waits_is_applied_after_it_and_each_edit_once(
    staff: User, reviewer: User, other_reviewer: User, two_reviews: str
):
    thread = make_thread(two_reviews, {"notes": ["draft"], "label": "draft"}, staff)
    run_queued(thread)
    decide(open_review(thread, "legal"), reviewer, "approve", updates={"notes": ["legal"]})
    FAULTS["legal"] = 1
    assert run_queued(thread).status == "released"

    # The released run already handed its edits to LangGraph: this answer must not join it.
    late = decide(open_review(thread, "finance"), other_reviewer, "approve", updates={"label": "finance"})
    assert late.applied_at is None

    assert run_queued(thread).status == "recorded"  # pauses on finance, whose answer is waiting
    late.refresh_from_db()
    assert late.applied_at is not None
    assert run_queued(thread).status == "recorded"

    assert thread.status == Thread.Status.COMPLETED
    values = head(thread).values
    assert values["notes"] == ["draft", "legal", "finished"]
    assert values["label"] == "finance"
    assert len(values["answers"]) == 2
    # An interrupted task runs again on every resume of its step (finance: pause, both legal
    # attempts, its own answer); nothing after the pauses ran twice.
    assert CALLS == {"legal": 3, "finance": 4, "finish": 1}
