"""The registry: what a workflow must declare, and the errors that say what is wrong."""

from __future__ import annotations

import operator
import re
from collections.abc import Iterator
from typing import Annotated, Literal, NotRequired, TypedDict

import pytest
from django.core.exceptions import ImproperlyConfigured
from langgraph.graph import END, START, StateGraph
from pydantic import BaseModel

from tests.factories import registered
from workflows import registry
from workflows.examples.parallel_approval import ContractState


class NoteState(TypedDict):
    title: str
    tags: Annotated[list[str], operator.add]
    score: NotRequired[float]
    status: NotRequired[Literal["draft", "final"]]


class NoteModel(BaseModel):
    title: str
    tags: Annotated[list[str], operator.add] = []
    score: float = 0.0


def build_notes() -> StateGraph[NoteState]:
    builder = StateGraph(NoteState)
    builder.add_node("write", lambda state: {"status": "draft"})
    builder.add_edge(START, "write")
    builder.add_edge("write", END)
    return builder


def build_model_notes() -> StateGraph[NoteModel]:
    builder = StateGraph(NoteModel)
    builder.add_node("write", lambda state: {"score": 1.0})
    builder.add_edge(START, "write")
    builder.add_edge("write", END)
    return builder


@pytest.fixture
def forget_notes() -> Iterator[None]:
    yield
    registry.remove("notes")


def test_the_four_examples_are_registered_at_startup():
    names = {workflow.name for workflow in registry.all_workflows()}

    assert {"seed_demo", "expense_approval", "content_review", "parallel_approval"} <= names
    assert registry.get("expense_approval").interrupt_before == ("pay",)
    assert registry.get("content_review").reviewer_group == "editors"


def test_registering_a_name_twice_names_the_workflow_and_both_modules():
    duplicate = registry.Workflow(name="expense_approval", title="Again", builder=build_notes)

    with pytest.raises(ImproperlyConfigured) as refused:
        registry.add(duplicate)

    message = str(refused.value)
    assert "'expense_approval'" in message
    assert "workflows.examples.expense_approval" in message
    assert "tests.test_registry" in message
    assert registry.get("expense_approval").builder is not build_notes


def test_an_editable_field_missing_from_the_schema_names_the_field_and_the_schema(forget_notes: None):
    workflow = registry.Workflow(name="notes", title="Notes", builder=build_notes, editable=("title", "body"))

    with pytest.raises(ImproperlyConfigured, match=r"editable field\(s\) body .* state schema NoteState"):
        registry.add(workflow)
    with pytest.raises(LookupError):
        registry.get("notes")


def test_interrupt_before_an_unknown_node_is_refused(forget_notes: None):
    workflow = registry.Workflow(
        name="notes", title="Notes", builder=build_notes, interrupt_before=("write", "publish")
    )

    with pytest.raises(
        ImproperlyConfigured, match=r"'notes'.*interrupt_before names unknown node\(s\) publish"
    ):
        registry.add(workflow)


def test_an_on_approve_that_does_not_fit_the_schema_is_refused(forget_notes: None):
    workflow = registry.Workflow(
        name="notes",
        title="Notes",
        builder=build_notes,
        editable=("score",),
        interrupt_before=("write",),
        on_approve={"score": "high"},
    )

    with pytest.raises(ImproperlyConfigured, match=r"'notes'.*on_approve does not fit"):
        registry.add(workflow)
    with pytest.raises(LookupError):
        registry.get("notes")


def test_field_types_come_from_a_typed_dict_without_not_required_or_reducers():
    workflow = registry.Workflow(
        name="notes", title="Notes", builder=build_notes, editable=("title", "tags", "score", "status")
    )

    with registered(workflow) as added:
        assert added.field_types == {
            "title": str,
            "tags": list[str],
            "score": float,
            "status": Literal["draft", "final"],
        }


def test_field_types_of_the_examples_are_read_from_their_schemas():
    assert registry.get("expense_approval").field_types == {
        "amount": float,
        "category": Literal["travel", "meals", "equipment", "other"],
        "approved": bool,
    }
    assert registry.schema_fields(ContractState)["signoffs"] == list[str]


def test_field_types_come_from_a_pydantic_state_model():
    workflow = registry.Workflow(
        name="notes", title="Notes", builder=build_model_notes, editable=("title", "tags", "score")
    )

    with registered(workflow) as added:
        assert added.field_types == {"title": str, "tags": list[str], "score": float}


def test_getting_an_unknown_workflow_lists_the_known_ones():
    with pytest.raises(LookupError) as missing:
        registry.get("payroll")

    message = str(missing.value)
    assert "'payroll'" in message
    for name in ("content_review", "expense_approval", "parallel_approval", "seed_demo"):
        assert re.search(rf"\b{name}\b", message)
