"""LangGraph's `RemoteGraph` (langgraph.pregel.remote) driving a Signoff workflow over HTTP as
if it were a local graph: get_graph, invoke, stream, get_state, get_state_history, update_state,
and a `GraphInterrupt` raised on the client when the remote thread stops for a review.

invoke and stream go through `POST /threads/{id}/runs/stream` (always with
`if_not_exists="create"` and `updates` among the modes), so they need the server that streams:
the `api_url` fixture (tests/client_fixtures.py) says how it is switched to the ASGI server.
A real worker runs the graphs.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.contrib.auth.models import User
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.errors import GraphInterrupt
from langgraph.graph import START, StateGraph
from langgraph.pregel.remote import RemoteGraph
from langgraph.types import Command
from langgraph_sdk.errors import NotFoundError

from tests.clients import key_for
from tests.factories import make_user
from tests.workers import Worker
from workflows.examples.content_review import ContentState
from workflows.models import Thread

pytest_plugins = ["tests.client_fixtures"]
pytestmark = pytest.mark.django_db(transaction=True)

CLAIM = {"employee": "Ada", "description": "Train to Lyon", "amount": 42.0, "category": "travel"}
SUMMARY = "Ada claims 42.00 for travel: Train to Lyon."
TOPIC = {"topic": "durable workflows", "audience": "engineers"}
DRAFT = "Durable workflows: what engineers should know."


@pytest.fixture
def key(reviewer: User) -> str:
    return key_for(reviewer, "start_thread")


def remote(api_url: str, key: str, name: str = "expense_approval") -> RemoteGraph:
    return RemoteGraph(name, url=api_url, api_key=key)


def on(thread_id: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread_id}}


def test_get_graph_draws_the_workflow(api_url: str, key: str) -> None:
    drawn = remote(api_url, key).get_graph()

    assert {"__start__", "draft", "pay", "reject", "__end__"} <= set(drawn.nodes)
    edges = {(edge.source, edge.target) for edge in drawn.edges}
    assert {("__start__", "draft"), ("draft", "pay")} <= edges
    assert set(remote(api_url, key).get_graph(xray=True).nodes) >= {"draft", "pay"}


def test_get_graph_of_a_workflow_the_key_cannot_see_is_not_found(api_url: str) -> None:
    outsider = key_for(make_user("otto", groups=["operators"]))

    with pytest.raises(NotFoundError):
        remote(api_url, outsider).get_graph()


def test_invoke_runs_the_workflow_until_the_finance_review(api_url: str, key: str, worker: Worker) -> None:
    thread_id = str(uuid.uuid4())

    values = remote(api_url, key).invoke(CLAIM, on(thread_id))

    assert values["summary"] == SUMMARY
    assert values["approved"] is False
    assert "outcome" not in values
    # The thread RemoteGraph created (if_not_exists="create") is Signoff's, under that id.
    thread = Thread.objects.get(public_id=thread_id)
    assert thread.workflow == "expense_approval"
    assert thread.status == Thread.Status.INTERRUPTED
    assert thread.reviews.get().status == "open"


def test_get_state_and_history_read_the_thread_back(api_url: str, key: str, worker: Worker) -> None:
    graph = remote(api_url, key)
    thread_id = str(uuid.uuid4())
    graph.invoke(CLAIM, on(thread_id))

    state = graph.get_state(on(thread_id))
    history = list(graph.get_state_history(on(thread_id)))

    assert state.values["summary"] == SUMMARY
    assert state.next == ("pay",)
    assert [task.name for task in state.tasks] == ["pay"]
    assert state.config["configurable"]["thread_id"] == thread_id
    head = state.config["configurable"]["checkpoint_id"]
    assert head
    assert state.parent_config is not None
    # Newest first: the head, then the checkpoints before it, back to the input.
    assert history[0].config["configurable"]["checkpoint_id"] == head
    assert (
        history[1].config["configurable"]["checkpoint_id"]
        == state.parent_config["configurable"]["checkpoint_id"]
    )
    assert [snapshot.next for snapshot in history] == [("pay",), ("draft",), ("__start__",)]
    assert history[-1].parent_config is None
    # A past checkpoint, read by its config.
    earlier = graph.get_state(history[1].config)
    assert earlier.next == ("draft",)
    assert "summary" not in earlier.values
    assert len(list(graph.get_state_history(on(thread_id), limit=1))) == 1


def test_update_state_writes_a_new_checkpoint(api_url: str, key: str, worker: Worker) -> None:
    graph = remote(api_url, key)
    thread_id = str(uuid.uuid4())
    graph.invoke(CLAIM, on(thread_id))
    before = graph.get_state(on(thread_id))

    config = graph.update_state(on(thread_id), {"amount": 40.0})

    after = graph.get_state(on(thread_id))
    assert config["configurable"]["thread_id"] == thread_id
    assert config["configurable"]["checkpoint_id"] == after.config["configurable"]["checkpoint_id"]
    assert config["configurable"]["checkpoint_id"] != before.config["configurable"]["checkpoint_id"]
    assert after.values["amount"] == 40.0
    assert after.values["summary"] == SUMMARY
    assert after.next == ("pay",)


def test_stream_yields_each_step_and_resumes_an_agent_inbox_interrupt(
    api_url: str, key: str, other_reviewer: User, worker: Worker
) -> None:
    graph = remote(api_url, key, "content_review")
    # Rita starts the thread; Oscar accepts it (the starter may not approve her own thread).
    approver = remote(api_url, key_for(other_reviewer), "content_review")
    thread_id = str(uuid.uuid4())

    first = list(graph.stream(TOPIC, on(thread_id), stream_mode="updates"))

    assert first[0] == {"write": {"draft": DRAFT, "revision": 1}}
    [interrupt] = first[-1]["__interrupt__"]
    [request] = interrupt["value"]
    assert request["action_request"] == {
        "action": "publish_post",
        "args": {"title": TOPIC["topic"], "body": DRAFT},
    }

    resumed = list(
        approver.stream(
            Command(resume=[{"type": "accept", "args": None}]), on(thread_id), stream_mode="updates"
        )
    )

    assert resumed == [{"review": {"published": DRAFT}}, {"publish": {"status": "published"}}]
    done = graph.get_state(on(thread_id))
    assert done.next == ()
    assert done.values["status"] == "published"


def test_stream_of_values_ends_with_the_state_at_the_review(api_url: str, key: str, worker: Worker) -> None:
    chunks = list(remote(api_url, key).stream(CLAIM, on(str(uuid.uuid4())), stream_mode="values"))

    assert chunks[0] == CLAIM
    assert chunks[-1]["summary"] == SUMMARY


def test_a_graph_interrupt_is_raised_on_the_client_at_the_finance_review(
    api_url: str, key: str, worker: Worker
) -> None:
    thread_id = str(uuid.uuid4())
    # Called from a parent graph, RemoteGraph gets the parent's checkpoint namespace in its
    # config and raises the remote interrupt as its own.
    as_a_node = {"configurable": {"thread_id": thread_id, "checkpoint_ns": "signoff"}}

    with pytest.raises(GraphInterrupt):
        remote(api_url, key).invoke(CLAIM, as_a_node)

    thread = Thread.objects.get(public_id=thread_id)
    assert thread.status == Thread.Status.INTERRUPTED
    assert thread.reviews.get().node == "pay"


def test_a_remote_workflow_as_a_node_interrupts_the_local_graph(
    api_url: str, key: str, worker: Worker
) -> None:
    builder = StateGraph(ContentState)
    builder.add_node("signoff", remote(api_url, key, "content_review"))
    builder.add_edge(START, "signoff")
    parent = builder.compile(checkpointer=InMemorySaver())
    # RemoteGraph sends the parent's thread id as the remote thread's.
    thread_id = str(uuid.uuid4())

    result = parent.invoke(TOPIC, on(thread_id))

    [interrupt] = result["__interrupt__"]
    [request] = interrupt.value
    assert request["action_request"]["action"] == "publish_post"
    assert parent.get_state(on(thread_id)).next == ("signoff",)
    assert Thread.objects.get(public_id=thread_id).status == Thread.Status.INTERRUPTED


async def test_the_async_methods_reach_the_same_thread(api_url: str, key: str, worker: Worker) -> None:
    graph = remote(api_url, key)
    thread_id = str(uuid.uuid4())

    values = await graph.ainvoke(CLAIM, on(thread_id))
    state = await graph.aget_state(on(thread_id))
    history = [snapshot async for snapshot in graph.aget_state_history(on(thread_id))]

    assert values["summary"] == SUMMARY
    assert state.next == ("pay",)
    assert history[0].config["configurable"]["checkpoint_id"] == state.config["configurable"]["checkpoint_id"]
