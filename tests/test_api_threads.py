"""The threads endpoints (create, get, search, state, update_state, history, copy), with the
Django test client for their shapes and refusals, and with the real `langgraph_sdk` clients
against the live server and a real worker. A key sees the threads of the workflows its user
reviews and the NEW threads it made: anything else is a 404, and absent from search."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NotRequired, TypedDict

import pytest
from django.contrib.auth.models import User
from django.test import Client
from langgraph.graph import START, StateGraph
from langgraph_sdk import get_client, get_sync_client
from langgraph_sdk.errors import ConflictError, NotFoundError

from api import services as api_services
from api import threads
from approvals.models import Review
from tests.factories import (
    EXPENSE,
    audit_actions,
    capture_doorbell,
    decide,
    head,
    make_user,
    open_review,
    open_reviews,
    paused,
    registered,
    run_queued,
)
from tests.fake_workflows import CountState
from tests.pages import client_for, grant
from tests.workers import Worker, wait_for
from workflows import engine, registry, services
from workflows.models import AuditEvent, Checkpoint, CheckpointBlob, Thread
from workflows.registry import default_assistant_id

pytestmark = pytest.mark.django_db(transaction=True)

POST = {"topic": "Solar panels"}


@pytest.fixture(autouse=True)
def _runs_in_this_process(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs are executed here (run_queued), not published to Celery, except by the tests
    that start a real worker."""
    if request.node.get_closest_marker("workers") is None:
        capture_doorbell(monkeypatch)


def key_for(user: User) -> str:
    return api_services.create_api_key(user=user, name="tests", actor=None).secret


@pytest.fixture
def rita_key(reviewer: User) -> str:
    return key_for(reviewer)


@pytest.fixture
def otto_key() -> str:
    """A reviewer of another group (operators: seed_demo only)."""
    return key_for(make_user("otto", groups=["operators"]))


def post(key: str, path: str, body: Any = None, **params: Any) -> Any:
    query = "?" + "&".join(f"{name}={value}" for name, value in params.items()) if params else ""
    return Client().post(
        f"/api{path}{query}",
        body if body is not None else {},
        content_type="application/json",
        headers={"x-api-key": key},
    )


def get(key: str, path: str, **params: Any) -> Any:
    return Client().get(f"/api{path}", params, headers={"x-api-key": key})


def ok(response: Any) -> Any:
    assert response.status_code == 200, response.content
    return response.json()


def refused(response: Any, status: int = 422) -> Any:
    assert response.status_code == status, response.content
    return response.json()["detail"]


def named(detail: Any) -> set[str]:
    """The fields a 422's errors name (the last part of each `loc`)."""
    return {str(error["loc"][-1]) for error in detail}


def content_thread(actor: User) -> Thread:
    """A post paused at its Agent Inbox interrupt (a dynamic interrupt), its review open."""
    thread = services.start_thread(workflow="content_review", input=POST, actor=actor)
    run_queued(thread)
    assert thread.status == Thread.Status.INTERRUPTED
    return thread


def expense_thread(actor: User) -> Thread:
    """An expense claim paused before `pay` (a static breakpoint), its review open."""
    thread = services.start_thread(workflow="expense_approval", input=EXPENSE, actor=actor)
    run_queued(thread)
    assert thread.status == Thread.Status.INTERRUPTED
    return thread


def new_thread(key: str, **body: Any) -> dict[str, Any]:
    result: dict[str, Any] = ok(post(key, "/threads", body))
    return result


# -- create -----------------------------------------------------------------------------------------


def test_a_created_thread_is_new_with_its_metadata_and_audited(rita_key: str, reviewer: User) -> None:
    body = new_thread(rita_key, metadata={"graph_id": "content_review", "customer": "acme"})

    assert set(body) == {
        "thread_id",
        "created_at",
        "updated_at",
        "metadata",
        "status",
        "values",
        "interrupts",
    }
    assert body["status"] == "idle"
    assert body["values"] == {}
    assert body["interrupts"] == {}
    assert body["metadata"] == {"graph_id": "content_review", "customer": "acme"}
    thread = Thread.objects.get(public_id=body["thread_id"])
    assert (thread.status, thread.workflow, thread.created_by) == (Thread.Status.NEW, "", reviewer)
    event = AuditEvent.objects.get(thread=thread)
    assert event.action == "thread.created"
    assert event.actor == reviewer
    assert event.data["api_key"] == rita_key.split("_")[1]
    assert event.data["metadata"] == body["metadata"]


def test_a_thread_id_that_exists_is_a_409_or_with_do_nothing_the_same_thread(
    rita_key: str, otto_key: str
) -> None:
    thread_id = str(uuid.uuid4())
    first = new_thread(rita_key, thread_id=thread_id, metadata={"n": 1})

    assert "already exists" in refused(post(rita_key, "/threads", {"thread_id": thread_id}), 409)
    again = ok(
        post(rita_key, "/threads", {"thread_id": thread_id, "metadata": {"n": 2}, "if_exists": "do_nothing"})
    )
    assert again["thread_id"] == thread_id
    assert again["metadata"] == first["metadata"] == {"n": 1}
    # Another group's key cannot take the id, nor be handed the thread.
    refused(post(otto_key, "/threads", {"thread_id": thread_id, "if_exists": "do_nothing"}), 409)
    assert Thread.objects.count() == 1
    assert AuditEvent.objects.filter(action="thread.created").count() == 1


@pytest.mark.parametrize(
    "body",
    [
        {"supersteps": [{"updates": [{"values": {}, "as_node": "write"}]}]},
        {"ttl": {"ttl": 5, "strategy": "delete"}},
        {"if_exists": "replace"},
        {"thread_id": "not-a-uuid"},
        {"metadata": ["not", "an", "object"]},
    ],
)
def test_what_create_does_not_implement_is_a_422_naming_it(rita_key: str, body: dict[str, Any]) -> None:
    assert named(refused(post(rita_key, "/threads", body))) == set(body)
    assert not Thread.objects.exists()


# -- who sees what -------------------------------------------------------------------------------


def test_another_groups_key_sees_none_of_a_thread(rita_key: str, otto_key: str, staff: User) -> None:
    thread = content_thread(staff)
    made = new_thread(rita_key)
    checkpoint_id = engine.checkpoint_id_of(head(thread))

    for thread_id in (thread.thread_id, made["thread_id"]):
        for response in (
            get(otto_key, f"/threads/{thread_id}"),
            get(otto_key, f"/threads/{thread_id}/state"),
            get(otto_key, f"/threads/{thread_id}/state/{checkpoint_id}"),
            post(
                otto_key,
                f"/threads/{thread_id}/state/checkpoint",
                {"checkpoint": {"checkpoint_id": checkpoint_id}},
            ),
            post(otto_key, f"/threads/{thread_id}/state", {"values": None, "as_node": "__end__"}),
            post(otto_key, f"/threads/{thread_id}/history"),
            post(otto_key, f"/threads/{thread_id}/copy"),
        ):
            assert refused(response, 404) == f"Thread '{thread_id}' not found"
    assert ok(post(otto_key, "/threads/search", {"ids": [thread.thread_id, made["thread_id"]]})) == []
    assert ok(post(otto_key, "/threads/search")) == []
    # Rita reviews content and made the NEW one: she sees both.
    assert len(ok(post(rita_key, "/threads/search"))) == 2
    thread.refresh_from_db()
    assert thread.status == Thread.Status.INTERRUPTED
    assert Thread.objects.count() == 2


def test_a_thread_id_that_is_not_a_uuid_is_a_404(rita_key: str) -> None:
    assert refused(get(rita_key, "/threads/nope"), 404) == "Thread 'nope' not found"


# -- get --------------------------------------------------------------------------------------------


def test_get_gives_the_heads_values_and_its_interrupts_by_task(rita_key: str, staff: User) -> None:
    thread = content_thread(staff)
    snapshot = head(thread)

    body = ok(get(rita_key, f"/threads/{thread.thread_id}"))

    assert body["status"] == "interrupted"
    assert body["values"]["topic"] == "Solar panels"
    assert body["values"]["draft"] == snapshot.values["draft"]
    (task,) = [task for task in snapshot.tasks if task.interrupts]
    (interrupt,) = body["interrupts"][task.id]
    assert interrupt["id"] == task.interrupts[0].id == open_review(thread).interrupt_id
    assert interrupt["value"][0]["action_request"]["action"] == "publish_post"


def test_get_refuses_include(rita_key: str) -> None:
    made = new_thread(rita_key)

    assert named(refused(get(rita_key, f"/threads/{made['thread_id']}", include="ttl"))) == {"include"}


# -- search -----------------------------------------------------------------------------------------


def test_a_thread_started_in_the_browser_is_found_by_its_graph_id_as_agent_inbox_searches(
    rita_key: str, staff: User
) -> None:
    thread = content_thread(staff)

    found = ok(post(rita_key, "/threads/search", {"metadata": {"graph_id": "content_review"}}))
    by_assistant = ok(
        post(
            rita_key,
            "/threads/search",
            {"metadata": {"assistant_id": default_assistant_id("content_review")}},
        )
    )

    assert [item["thread_id"] for item in found] == [thread.thread_id]
    assert [item["thread_id"] for item in by_assistant] == [thread.thread_id]


def test_search_by_metadata_needs_every_key_equal(rita_key: str) -> None:
    wanted = new_thread(
        rita_key,
        metadata={"graph_id": "content_review", "n": 1, "vip": True, "tags": ["a", "b"], "a__in": "x"},
    )
    new_thread(rita_key, metadata={"graph_id": "content_review", "n": 2, "vip": False})
    new_thread(rita_key, metadata={"graph_id": "expense_approval"})

    def found(metadata: dict[str, Any]) -> list[str]:
        return [item["thread_id"] for item in ok(post(rita_key, "/threads/search", {"metadata": metadata}))]

    assert len(found({"graph_id": "content_review"})) == 2
    assert found({"graph_id": "content_review", "n": 1}) == [wanted["thread_id"]]
    assert found({"vip": True}) == [wanted["thread_id"]]
    assert found({"tags": ["a", "b"]}) == [wanted["thread_id"]]
    # A key spelled like a Django lookup is a key.
    assert found({"a__in": "x"}) == [wanted["thread_id"]]
    assert found({"n": "1"}) == []
    assert found({"missing": None}) == []


def test_search_by_status_values_and_ids(rita_key: str, staff: User) -> None:
    paused = content_thread(staff)
    made = new_thread(rita_key)

    def found(**body: Any) -> list[str]:
        return [item["thread_id"] for item in ok(post(rita_key, "/threads/search", body))]

    assert found(status="interrupted") == [paused.thread_id]
    assert found(status="idle") == [made["thread_id"]]
    assert found(status="busy") == found(status="error") == []
    assert found(values={"topic": "Solar panels"}) == [paused.thread_id]
    assert found(values={"topic": "Wind"}) == []
    assert found(ids=[made["thread_id"]]) == [made["thread_id"]]


def test_a_search_by_values_over_too_many_threads_is_a_422_not_a_partial_answer(
    rita_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(threads, "VALUES_SCAN_LIMIT", 1)
    new_thread(rita_key)
    new_thread(rita_key)

    assert named(refused(post(rita_key, "/threads/search", {"values": {"topic": "x"}}))) == {"values"}
    assert len(ok(post(rita_key, "/threads/search", {"values": {"topic": "x"}, "limit": 1, "ids": []}))) == 0


def test_a_thread_whose_workflow_is_gone_is_a_409_to_read_and_empty_in_a_search(admin: User) -> None:
    key = key_for(admin)
    gone = Thread.objects.create(workflow="retired_workflow", status=Thread.Status.COMPLETED)

    assert "retired_workflow" in refused(get(key, f"/threads/{gone.thread_id}"), 409)
    assert "retired_workflow" in refused(get(key, f"/threads/{gone.thread_id}/state"), 409)
    (found,) = ok(post(key, "/threads/search"))
    assert (found["thread_id"], found["values"], found["status"]) == (gone.thread_id, {}, "idle")


def test_a_tampered_checkpoint_is_a_409_audited_once_and_empty_in_a_search(
    rita_key: str, staff: User
) -> None:
    thread = content_thread(staff)
    Checkpoint.objects.filter(thread_id=thread.thread_id).update(values=b"\xc1\xc1garbage")
    CheckpointBlob.objects.filter(thread_id=thread.thread_id).update(blob=b"\xc1\xc1garbage")

    for response in (
        get(rita_key, f"/threads/{thread.thread_id}"),
        get(rita_key, f"/threads/{thread.thread_id}/state"),
        post(rita_key, f"/threads/{thread.thread_id}/history"),
        post(rita_key, f"/threads/{thread.thread_id}/state", {"values": None, "as_node": "__end__"}),
    ):
        assert "checkpoint cannot be read" in refused(response, 409)
    (found,) = ok(post(rita_key, "/threads/search"))
    assert found["values"] == {}
    assert AuditEvent.objects.filter(thread=thread, action="checkpoint.unreadable").count() == 1
    thread.refresh_from_db()
    assert thread.status == Thread.Status.INTERRUPTED


def test_subgraphs_true_is_refused_for_a_graph_that_has_subgraphs(rita_key: str) -> None:
    def build() -> StateGraph[Any]:
        inner: StateGraph[Any] = StateGraph(CountState)
        inner.add_node("tick", lambda state: {"count": state["count"] + 1})
        inner.add_edge(START, "tick")
        outer: StateGraph[Any] = StateGraph(CountState)
        outer.add_node("inner", inner.compile())
        outer.add_edge(START, "inner")
        return outer

    workflow = registry.Workflow(name="test_nested", title="Nested", builder=build, reviewer_group="finance")
    with registered(workflow):
        thread = Thread.objects.create(workflow="test_nested", status=Thread.Status.COMPLETED)
        path = f"/threads/{thread.thread_id}/state"

        assert ok(get(rita_key, path))["values"] == {}
        assert named(refused(get(rita_key, path, subgraphs="true"))) == {"subgraphs"}


def test_search_sorts_pages_and_selects(rita_key: str) -> None:
    made = [new_thread(rita_key, metadata={"n": n})["thread_id"] for n in range(3)]

    first = post(rita_key, "/threads/search", {"limit": 2})
    assert [item["thread_id"] for item in ok(first)] == made[::-1][:2]
    assert first["X-Pagination-Next"] == "2"
    last = post(rita_key, "/threads/search", {"limit": 2, "offset": 2})
    assert [item["thread_id"] for item in ok(last)] == made[:1]
    assert "X-Pagination-Next" not in last
    oldest = ok(post(rita_key, "/threads/search", {"sort_by": "created_at", "sort_order": "asc"}))
    assert [item["thread_id"] for item in oldest] == made
    by_id = ok(post(rita_key, "/threads/search", {"sort_by": "thread_id", "sort_order": "asc"}))
    assert [item["thread_id"] for item in by_id] == sorted(made)
    selected = ok(post(rita_key, "/threads/search", {"select": ["thread_id", "metadata"], "limit": 1}))
    assert selected == [{"thread_id": made[-1], "metadata": {"n": 2}}]


@pytest.mark.parametrize(
    "body",
    [
        {"extract": {"last": "values.messages[-1]"}},
        {"status": "running"},
        {"sort_by": "state_updated_at"},
        {"select": ["config"]},
        {"limit": 0},
        {"ids": ["nope"]},
    ],
)
def test_what_search_does_not_implement_is_a_422_naming_it(rita_key: str, body: dict[str, Any]) -> None:
    detail = refused(post(rita_key, "/threads/search", body))

    assert set(body) <= {str(part) for error in detail for part in error["loc"]}


# -- state ------------------------------------------------------------------------------------------


def test_the_state_of_a_new_thread_is_empty(rita_key: str) -> None:
    made = new_thread(rita_key)

    state = ok(get(rita_key, f"/threads/{made['thread_id']}/state"))

    assert state["values"] == {}
    assert state["next"] == []
    assert state["tasks"] == []
    assert state["interrupts"] == []
    assert state["checkpoint"]["thread_id"] == made["thread_id"]
    assert state["checkpoint"]["checkpoint_id"] is None
    assert ok(post(rita_key, f"/threads/{made['thread_id']}/history")) == []


def test_the_state_at_the_head_and_at_a_checkpoint(rita_key: str, staff: User) -> None:
    thread = expense_thread(staff)
    snapshot = head(thread)
    parent_id = snapshot.parent_config["configurable"]["checkpoint_id"]  # type: ignore[index]
    path = f"/threads/{thread.thread_id}/state"

    state = ok(get(rita_key, path))
    assert state["next"] == ["pay"]
    assert state["values"]["summary"] == snapshot.values["summary"]
    assert state["checkpoint"]["checkpoint_id"] == engine.checkpoint_id_of(snapshot)
    assert state["parent_checkpoint"]["checkpoint_id"] == parent_id
    # Signoff's workflows have no subgraphs: asking for theirs changes nothing.
    assert ok(get(rita_key, path, subgraphs="true")) == state
    earlier = ok(get(rita_key, f"{path}/{parent_id}"))
    assert earlier["checkpoint"]["checkpoint_id"] == parent_id
    assert earlier["next"] == ["draft"]
    assert ok(post(rita_key, f"{path}/checkpoint", {"checkpoint": {"checkpoint_id": parent_id}})) == earlier
    assert refused(get(rita_key, f"{path}/1f0-nope"), 404) == "Checkpoint '1f0-nope' not found"
    missing = post(rita_key, f"{path}/checkpoint", {"checkpoint": {"checkpoint_id": "1f0-nope"}})
    assert refused(missing, 404) == "Checkpoint '1f0-nope' not found"


@pytest.mark.parametrize(
    ("checkpoint", "field"),
    [
        ({"checkpoint_ns": "sub:1"}, "checkpoint_ns"),
        ({"thread_id": str(uuid.uuid4())}, "thread_id"),
        ({"checkpoint_map": {"sub": "1"}}, "checkpoint_map"),
        ({"checkpoint_id": "x", "select": ["values"]}, "select"),
    ],
)
def test_a_checkpoint_outside_the_threads_root_is_a_422_naming_it(
    rita_key: str, checkpoint: dict[str, Any], field: str
) -> None:
    made = new_thread(rita_key)

    detail = refused(
        post(rita_key, f"/threads/{made['thread_id']}/state/checkpoint", {"checkpoint": checkpoint})
    )

    assert field in named(detail)


def test_state_refuses_select(rita_key: str) -> None:
    made = new_thread(rita_key)

    assert named(refused(get(rita_key, f"/threads/{made['thread_id']}/state", select="values"))) == {"select"}


# -- update_state -----------------------------------------------------------------------------------


def test_mark_as_resolved_ends_the_thread_and_closes_its_review(
    rita_key: str, reviewer: User, staff: User
) -> None:
    """Agent Inbox's "mark as resolved": update_state(values=None, as_node="__end__")."""
    thread = content_thread(staff)
    review = open_review(thread)
    before = engine.checkpoint_id_of(head(thread))

    body = ok(post(rita_key, f"/threads/{thread.thread_id}/state", {"values": None, "as_node": "__end__"}))

    thread.refresh_from_db()
    assert thread.status == Thread.Status.COMPLETED
    assert body["checkpoint"]["checkpoint_id"] == engine.checkpoint_id_of(head(thread)) != before
    assert body["checkpoint"]["thread_id"] == thread.thread_id
    assert head(thread).next == ()
    review.refresh_from_db()
    assert review.status == Review.Status.CANCELLED
    assert ok(get(rita_key, f"/threads/{thread.thread_id}"))["status"] == "idle"
    event = AuditEvent.objects.get(thread=thread, action="thread.state_updated")
    assert event.actor == reviewer
    assert event.data["api_key"] == rita_key.split("_")[1]
    assert event.data["as_node"] == "__end__"
    assert event.data["status"] == {"before": "interrupted", "after": "completed"}
    assert audit_actions(thread)[-2:] == ["review.cancelled", "thread.state_updated"]


def test_an_edit_at_a_breakpoint_is_typed_and_its_pause_gets_a_new_review(
    rita_key: str, reviewer: User, staff: User
) -> None:
    thread = expense_thread(staff)
    old = open_review(thread)

    ok(post(rita_key, f"/threads/{thread.thread_id}/state", {"values": {"amount": 75, "category": "meals"}}))

    snapshot = head(thread)
    assert snapshot.values["amount"] == 75.0
    assert isinstance(snapshot.values["amount"], float)
    assert snapshot.values["category"] == "meals"
    assert snapshot.next == ("pay",)
    thread.refresh_from_db()
    assert thread.status == Thread.Status.INTERRUPTED
    old.refresh_from_db()
    assert old.status == Review.Status.CANCELLED
    assert AuditEvent.objects.get(thread=thread, action="review.cancelled").actor == reviewer
    fresh = open_review(thread)
    assert fresh.checkpoint_id == engine.checkpoint_id_of(snapshot)
    assert fresh.kind == Review.Kind.BREAKPOINT
    # It is a review like any other: approving it pays the edited amount.
    decide(fresh, reviewer, "approve")
    run_queued(thread)
    assert thread.status == Thread.Status.COMPLETED
    assert head(thread).values["outcome"] == "paid 75.00"
    event = AuditEvent.objects.get(thread=thread, action="thread.state_updated")
    assert event.data["updates"] == {
        "before": {"amount": 120.0, "category": "travel"},
        "after": {"amount": 75.0, "category": "meals"},
    }


def test_an_edit_at_an_interrupt_leaves_the_thread_waiting_for_a_run(rita_key: str, staff: User) -> None:
    thread = content_thread(staff)

    ok(post(rita_key, f"/threads/{thread.thread_id}/state", {"values": {"audience": "engineers"}}))

    thread.refresh_from_db()
    assert thread.status == Thread.Status.INTERRUPTED
    assert head(thread).values["audience"] == "engineers"
    assert head(thread).next == ("review",)
    # Its review was pinned to the old checkpoint; the interrupt is raised again when it runs.
    assert open_reviews(thread) == []


class FixState(TypedDict):
    count: int
    fixed: NotRequired[bool]


def build_fixable() -> StateGraph[FixState]:
    def prepare(state: FixState) -> dict[str, Any]:
        return {"count": state["count"] + 1}

    def check(state: FixState) -> dict[str, Any]:
        if not state.get("fixed"):
            raise ValueError("not fixed yet")
        return {"count": state["count"] + 1}

    builder: StateGraph[FixState] = StateGraph(FixState)
    builder.add_node("prepare", prepare)
    builder.add_node("check", check)
    builder.add_edge(START, "prepare")
    builder.add_edge("prepare", "check")
    return builder


def test_a_failed_thread_whose_state_is_fixed_stays_failed_for_a_retry(rita_key: str, staff: User) -> None:
    workflow = registry.Workflow(
        name="test_fixable",
        title="Fixable",
        builder=build_fixable,
        reviewer_group="finance",
        editable=("fixed",),
    )
    with paused(workflow, {"count": 0}, staff) as thread:
        assert thread.status == Thread.Status.FAILED

        ok(post(rita_key, f"/threads/{thread.thread_id}/state", {"values": {"fixed": True}}))

        thread.refresh_from_db()
        assert thread.status == Thread.Status.FAILED
        assert head(thread).next == ("check",)
        assert ok(get(rita_key, f"/threads/{thread.thread_id}"))["status"] == "error"
        services.retry_thread(thread=thread, actor=staff)
        run_queued(thread)
        assert thread.status == Thread.Status.COMPLETED
        assert head(thread).values == {"count": 2, "fixed": True}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"values": {"summary": "forged"}}, "summary"),
        ({"values": {"amount": "lots"}}, "amount"),
        ({"values": {"amount": 5}, "as_node": "nowhere"}, "as_node"),
        ({"values": [{"amount": 5}]}, "values"),
        ({"values": None, "command": {"goto": "pay"}}, "command"),
    ],
)
def test_an_update_that_does_not_fit_is_a_422_naming_it_and_changes_nothing(
    rita_key: str, staff: User, body: dict[str, Any], field: str
) -> None:
    thread = expense_thread(staff)
    before = engine.checkpoint_id_of(head(thread))

    assert field in named(refused(post(rita_key, f"/threads/{thread.thread_id}/state", body)))
    assert engine.checkpoint_id_of(head(thread)) == before
    assert not AuditEvent.objects.filter(action="thread.state_updated").exists()


def test_an_update_while_a_run_is_queued_before_any_run_or_after_a_cancel_is_a_409(
    rita_key: str, staff: User
) -> None:
    queued = services.start_thread(workflow="content_review", input=POST, actor=staff)
    made = new_thread(rita_key)
    cancelled = services.cancel_thread(thread=content_thread(staff), actor=staff)

    for thread_id in (queued.thread_id, made["thread_id"], cancelled.thread_id):
        response = post(rita_key, f"/threads/{thread_id}/state", {"values": None, "as_node": "__end__"})
        assert response.status_code == 409, response.content
    assert "queued or running" in refused(post(rita_key, f"/threads/{queued.thread_id}/copy"), 409)
    assert not AuditEvent.objects.filter(action__in=["thread.state_updated", "thread.copied"]).exists()


def test_an_update_from_an_earlier_checkpoint_is_a_fork_that_needs_the_rollback_permission(
    reviewer: User, staff: User
) -> None:
    thread = expense_thread(staff)
    snapshot = head(thread)
    # The step after draft: its checkpoint's next is pay; one back (draft's) cannot be forked
    # from without running draft again, which is fine too, but this one keeps the edit.
    target = snapshot.parent_config["configurable"]["checkpoint_id"]  # type: ignore[index]
    body = {"values": {"amount": 10.0}, "checkpoint": {"checkpoint_id": target}, "as_node": "draft"}
    path = f"/threads/{thread.thread_id}/state"

    detail = refused(post(key_for(reviewer), path, body), 403)
    assert "workflows.rollback_thread" in detail
    assert not AuditEvent.objects.filter(action="thread.state_updated").exists()
    allowed = key_for(grant(reviewer, "rollback_thread"))
    unknown = {**body, "checkpoint": {"checkpoint_id": "1f0-nope"}}
    assert (
        refused(post(allowed, path, unknown), 404)
        == "Checkpoint '1f0-nope' not found in this thread's history"
    )
    forked = ok(post(allowed, path, body))

    fork = engine.graph_for(thread.workflow).get_state(
        engine.config_for(thread.thread_id, checkpoint_id=forked["checkpoint"]["checkpoint_id"])
    )
    assert fork.parent_config["configurable"]["checkpoint_id"] == target  # type: ignore[index]
    assert engine.checkpoint_id_of(head(thread)) == forked["checkpoint"]["checkpoint_id"]
    assert head(thread).values["amount"] == 10.0
    assert AuditEvent.objects.get(action="thread.state_updated").data["fork"] is True
    # Naming the head is no fork: no permission needed.
    at_head = {"values": {"amount": 11.0}, "checkpoint": forked["checkpoint"]}
    ok(post(key_for(reviewer), path, at_head))
    assert head(thread).values["amount"] == 11.0


# -- history ----------------------------------------------------------------------------------------


def test_history_is_newest_first_with_limit_before_and_metadata(rita_key: str, staff: User) -> None:
    thread = expense_thread(staff)
    graph = engine.graph_for(thread.workflow)
    everything = list(graph.get_state_history(engine.config_for(thread.thread_id)))
    ids = [engine.checkpoint_id_of(snapshot) for snapshot in everything]
    path = f"/threads/{thread.thread_id}/history"

    history = ok(post(rita_key, path, {"limit": 100}))
    assert [state["checkpoint"]["checkpoint_id"] for state in history] == ids
    assert ids == sorted(ids, reverse=True)
    assert len(ok(post(rita_key, path))) == min(10, len(ids))
    assert [s["checkpoint"]["checkpoint_id"] for s in ok(post(rita_key, path, {"limit": 1}))] == ids[:1]
    older = ok(post(rita_key, path, {"before": {"checkpoint_id": ids[0]}}))
    assert [state["checkpoint"]["checkpoint_id"] for state in older] == ids[1:]
    assert ok(post(rita_key, path, {"before": ids[0]})) == older
    inputs = ok(post(rita_key, path, {"metadata": {"source": "input"}}))
    assert [state["metadata"]["source"] for state in inputs] == ["input"]
    only = ok(post(rita_key, path, {"checkpoint": {"checkpoint_id": ids[1]}}))
    assert [state["checkpoint"]["checkpoint_id"] for state in only] == ids[1:2]
    assert named(refused(post(rita_key, path, {"select": ["values"]}))) == {"select"}


# -- copy -------------------------------------------------------------------------------------------


def test_a_copy_goes_on_separately_and_its_pause_has_its_own_review(
    rita_key: str, reviewer: User, staff: User, rita: Client
) -> None:
    thread = content_thread(staff)
    Thread.objects.filter(pk=thread.pk).update(metadata={"graph_id": "content_review"})

    body = ok(post(rita_key, f"/threads/{thread.thread_id}/copy"))

    copy = Thread.objects.get(public_id=body["thread_id"])
    assert copy.pk != thread.pk
    assert (copy.workflow, copy.status, copy.created_by) == (
        "content_review",
        Thread.Status.INTERRUPTED,
        reviewer,
    )
    assert body["metadata"] == {"graph_id": "content_review"}
    assert body["status"] == "interrupted"
    assert body["values"] == ok(get(rita_key, f"/threads/{thread.thread_id}"))["values"]
    assert list(body["interrupts"].values()) == list(
        ok(get(rita_key, f"/threads/{thread.thread_id}"))["interrupts"].values()
    )
    copied, original = open_review(copy), open_review(thread)
    assert copied.interrupt_id == original.interrupt_id
    assert copied.checkpoint_id == original.checkpoint_id
    # The copy is in rita's queue like any thread.
    page = rita.get("/").content.decode()
    assert f"/reviews/{copied.pk}/" in page
    assert f"/reviews/{original.pk}/" in page
    event = AuditEvent.objects.get(action="thread.copied")
    assert event.thread == copy
    assert event.data["from"] == thread.thread_id
    assert event.data["api_key"] == rita_key.split("_")[1]
    # The copy and the original are separate: resolving one leaves the other waiting.
    ok(post(rita_key, f"/threads/{copy.thread_id}/state", {"values": None, "as_node": "__end__"}))
    thread.refresh_from_db()
    assert thread.status == Thread.Status.INTERRUPTED
    assert open_review(thread).pk == original.pk


def test_copy_takes_no_body(rita_key: str) -> None:
    made = new_thread(rita_key)

    assert refused(post(rita_key, f"/threads/{made['thread_id']}/copy", {"deep": True}))[0]["loc"] == ["body"]
    copy = ok(post(rita_key, f"/threads/{made['thread_id']}/copy"))
    assert copy["thread_id"] != made["thread_id"]
    assert copy["status"] == "idle"


# -- pages ------------------------------------------------------------------------------------------


def test_a_new_thread_breaks_no_page(rita_key: str, admin: User) -> None:
    made = new_thread(rita_key, metadata={"graph_id": "content_review"})
    thread = Thread.objects.get(public_id=made["thread_id"])
    pages = client_for(admin)

    changelist = pages.get("/admin/workflows/thread/")
    assert changelist.status_code == 200
    assert made["thread_id"] in changelist.content.decode() or str(thread.pk) in changelist.content.decode()
    change = pages.get(f"/admin/workflows/thread/{thread.pk}/change/")
    assert change.status_code == 200
    assert "has not run yet" in change.content.decode()
    assert pages.get(f"/admin/workflows/auditevent/?thread__id__exact={thread.pk}").status_code == 200
    assert pages.get("/").status_code == 200
    thread_page = pages.get(f"/threads/{thread.public_id}/")
    assert thread_page.status_code == 404
    assert "has not run yet" in thread_page.content.decode()


# -- the real langgraph_sdk clients, against the live server and a worker -----------------------------


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[Worker]:
    from config.celery import app

    # Messages other tests' services left in the broker are for threads that no longer exist.
    app.control.purge()
    started = Worker(tmp_path, "threads").start()
    yield started
    started.stop()


def paused_by_worker(actor: User) -> Thread:
    thread = services.start_thread(workflow="content_review", input=POST, actor=actor)

    def interrupted() -> bool:
        thread.refresh_from_db()
        return thread.status == Thread.Status.INTERRUPTED

    wait_for(interrupted, timeout=60, what=f"thread to pause (it is {thread.status})")
    return thread


@pytest.mark.workers
def test_the_sync_sdk_reads_searches_updates_and_copies_threads(
    live_server: Any, worker: Worker, reviewer: User, staff: User
) -> None:
    client = get_sync_client(url=f"{live_server.url}/api", api_key=key_for(reviewer))
    made = client.threads.create(metadata={"purpose": "sdk"}, graph_id="content_review")
    assert made["status"] == "idle"
    with pytest.raises(ConflictError):
        client.threads.create(thread_id=made["thread_id"])
    assert client.threads.create(thread_id=made["thread_id"], if_exists="do_nothing")["metadata"] == {
        "purpose": "sdk",
        "graph_id": "content_review",
    }
    thread = paused_by_worker(staff)

    got = client.threads.get(thread.thread_id)
    assert got["status"] == "interrupted"
    assert got["values"]["topic"] == "Solar panels"
    ((interrupt,),) = got["interrupts"].values()
    assert interrupt["id"] == open_review(thread).interrupt_id
    assert [t["thread_id"] for t in client.threads.search(status="interrupted")] == [thread.thread_id]
    # The paused thread was started in the browser, and carries its graph_id as the API's do.
    assert {t["thread_id"] for t in client.threads.search(metadata={"graph_id": "content_review"})} == {
        made["thread_id"],
        thread.thread_id,
    }
    assert [t["thread_id"] for t in client.threads.search(metadata={"purpose": "sdk"})] == [made["thread_id"]]
    state = client.threads.get_state(thread.thread_id)
    assert state["next"] == ["review"]
    assert state["tasks"][0]["interrupts"][0]["id"] == interrupt["id"]
    assert client.threads.get_state(thread.thread_id, checkpoint=state["checkpoint"]) == state
    copy = client.threads.copy(thread.thread_id)
    assert copy["status"] == "interrupted"

    updated = client.threads.update_state(thread.thread_id, None, as_node="__end__")

    assert client.threads.get(thread.thread_id)["status"] == "idle"
    history = client.threads.get_history(thread.thread_id)
    assert history[0]["checkpoint"]["checkpoint_id"] == updated["checkpoint"]["checkpoint_id"]
    assert history[0]["next"] == []
    assert history[1]["checkpoint"] == state["checkpoint"]
    assert open_reviews(thread) == []
    assert len(open_reviews(Thread.objects.get(public_id=copy["thread_id"]))) == 1
    with pytest.raises(NotFoundError):
        client.threads.get(str(uuid.uuid4()))


@pytest.mark.workers
async def test_the_async_sdk_resolves_an_interrupted_thread(
    live_server: Any, worker: Worker, reviewer: User, staff: User
) -> None:
    from asgiref.sync import sync_to_async
    from django.db import connection

    try:
        thread = await sync_to_async(paused_by_worker)(staff)
        client = get_client(url=f"{live_server.url}/api", api_key=await sync_to_async(key_for)(reviewer))

        found = await client.threads.search(status="interrupted", values={"topic": "Solar panels"})
        assert [item["thread_id"] for item in found] == [thread.thread_id]
        await client.threads.update_state(thread.thread_id, None, as_node="__end__")
        got = await client.threads.get(thread.thread_id)
        assert got["status"] == "idle"
        assert got["interrupts"] == {}
        assert len(await client.threads.get_history(thread.thread_id, limit=2)) == 2
        await sync_to_async(thread.refresh_from_db)()
        assert thread.status == Thread.Status.COMPLETED
    finally:
        # The ORM ran on asgiref's thread: close its connection, or PostgreSQL will not drop
        # the test database.
        await sync_to_async(lambda: connection.close())()


# -- locks (PostgreSQL) --------------------------------------------------------------------------------


@pytest.mark.postgres
def test_resolving_while_a_reviewer_decides_takes_the_one_lock_order(
    reviewer: User, other_reviewer: User, staff: User
) -> None:
    """update_thread_state locks the thread row first, as decide does: the decision waits for
    the resolve, then finds its review withdrawn, and neither deadlocks."""
    from approvals.services import StaleReview
    from tests.test_lock_order import THREAD_LOCK, no_errors, side_by_side

    thread = content_thread(staff)
    review = open_review(thread)

    results = side_by_side(
        lambda: services.update_thread_state(thread=thread, actor=reviewer, values=None, as_node="__end__"),
        THREAD_LOCK,
        lambda: decide(review, other_reviewer, "approve"),
    )

    assert isinstance(results[1], StaleReview), results
    no_errors(results[:1])
    thread.refresh_from_db()
    assert thread.status == Thread.Status.COMPLETED
    review.refresh_from_db()
    assert review.status == Review.Status.CANCELLED
    assert services.verify_audit_chain()[1] is None
