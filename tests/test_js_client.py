"""Agent Inbox's calls, made as Agent Inbox makes them: through the JS client
`@langchain/langgraph-sdk` (tests/js, pinned by its package-lock.json) run with node against the
live server, with a real worker running the graphs. And the CORS preflight a browser sends
before them.

The thread an inbox shows is started the way an engineer's product would start it, with the
Python `langgraph_sdk`; the inbox then lists it, reads it, and resumes it with a list of
HumanResponse (or marks it resolved). `content_review` is written for Agent Inbox: it calls
`interrupt([HumanInterrupt])`.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

import pytest
from django.contrib.auth.models import User
from langgraph_sdk import get_sync_client

from approvals.models import Review
from tests.clients import CORS_ORIGINS, key_for, run_node
from tests.factories import make_user
from tests.workers import Worker
from workflows.models import Thread

pytest_plugins = ["tests.client_fixtures"]
pytestmark = pytest.mark.django_db(transaction=True)

GRAPH = "content_review"
TOPIC = {"topic": "durable workflows", "audience": "engineers"}
DRAFT = "Durable workflows: what engineers should know."


def interrupted_thread(api_url: str, key: str) -> str:
    """A content_review thread started through the API and run to its review, as a product
    would do it with the Python client; its id."""
    client = get_sync_client(url=api_url, api_key=key)
    thread = client.threads.create(graph_id=GRAPH)
    client.runs.wait(thread["thread_id"], GRAPH, input=TOPIC)
    assert client.threads.get(thread["thread_id"])["status"] == "interrupted"
    return thread["thread_id"]


def test_the_inbox_reads_info_without_a_key_and_the_assistants_with_one(api_url: str, reviewer: User) -> None:
    found = run_node("discover.mjs", url=api_url, api_key=key_for(reviewer))

    assert found["info"]["status"] == 200
    assert found["info"]["body"]["host"]["project_id"] is None
    assert found["info"]["body"]["host"]["tenant_id"] is None
    assert found["assistants"] == ["content_review", "expense_approval", "parallel_approval"]
    assert found["graph_id"] == "content_review"


def test_the_inbox_with_a_bad_key_fails_with_the_servers_401(api_url: str) -> None:
    with pytest.raises(pytest.fail.Exception, match="401"):
        run_node("discover.mjs", url=api_url, api_key="sk-not-a-key")


def test_the_inbox_lists_reads_and_resumes_a_thread_with_a_human_response(
    api_url: str, reviewer: User, other_reviewer: User, worker: Worker
) -> None:
    # Oscar starts the thread and Rita accepts it: the starter may not approve his own thread.
    thread_id = interrupted_thread(api_url, key_for(other_reviewer, "start_thread"))
    key = key_for(reviewer)

    seen = run_node(
        "inbox.mjs",
        url=api_url,
        api_key=key,
        args={
            "graphId": GRAPH,
            "threadId": thread_id,
            "action": "resume",
            "response": {"type": "accept", "args": None},
        },
    )

    assert {"thread_id": thread_id, "status": "interrupted"} in seen["listed"]
    assert seen["thread"]["status"] == "interrupted"
    assert seen["thread"]["metadata"]["graph_id"] == GRAPH
    # The interrupt's value, where the inbox reads it: content_review asks with [HumanInterrupt].
    [request] = seen["request"]
    assert request["action_request"] == {
        "action": "publish_post",
        "args": {"title": TOPIC["topic"], "body": DRAFT},
    }
    assert request["config"]["allow_accept"] is True
    assert seen["fallback"] == seen["request"]
    assert seen["next"] == ["review"]
    # The stream opens with the run's metadata, then the events the inbox reads.
    assert seen["events"][0]["event"] == "metadata"
    assert {"event": "events", "kind": "on_chain_start", "node": "publish"} in seen["events"]
    assert not [event for event in seen["events"] if event["event"] == "error"]
    assert seen["after"]["status"] == "idle"
    assert seen["after"]["values"]["published"] == DRAFT
    assert seen["after"]["values"]["status"] == "published"
    assert seen["after"]["interrupts"] == {}
    assert thread_id not in seen["relisted"]
    # One runtime, two doors: the resume was rita's decision on the review.
    review = Review.objects.get(thread__public_id=thread_id)
    assert review.status == Review.Status.DECIDED
    assert review.decision.actor == reviewer
    assert Thread.objects.get(public_id=thread_id).status == Thread.Status.COMPLETED


def test_the_inbox_marks_a_thread_resolved_by_updating_its_state_as_the_end(
    api_url: str, reviewer: User, worker: Worker
) -> None:
    key = key_for(reviewer, "start_thread")
    thread_id = interrupted_thread(api_url, key)

    seen = run_node(
        "inbox.mjs",
        url=api_url,
        api_key=key,
        args={"graphId": GRAPH, "threadId": thread_id, "action": "ignore"},
    )

    assert {"thread_id": thread_id, "status": "interrupted"} in seen["listed"]
    assert seen["events"] == []
    assert seen["after"]["status"] == "idle"
    assert seen["after"]["interrupts"] == {}
    assert seen["after"]["values"]["draft"] == DRAFT
    assert "published" not in seen["after"]["values"]
    assert thread_id not in seen["relisted"]


def test_another_groups_inbox_lists_none_of_these_threads(
    api_url: str, reviewer: User, worker: Worker
) -> None:
    thread_id = interrupted_thread(api_url, key_for(reviewer, "start_thread"))
    outsider = key_for(make_user("otto", groups=["operators"]))

    with pytest.raises(pytest.fail.Exception, match="404"):
        run_node(
            "inbox.mjs",
            url=api_url,
            api_key=outsider,
            args={"graphId": GRAPH, "threadId": thread_id, "action": "ignore"},
        )


# -- CORS: the browser's preflight -------------------------------------------------------------

# The origins the api_url server lets in (tests/client_fixtures.CORS_ORIGINS).
INBOX, LOCAL_INBOX = CORS_ORIGINS


def request(url: str, method: str, headers: dict[str, str], body: bytes | None = None) -> Any:
    """What the server answers a browser's request, even an error (urllib raises on those)."""
    try:
        return urllib.request.urlopen(urllib.request.Request(url, body, headers, method=method), timeout=30)
    except urllib.error.HTTPError as error:
        return error


@pytest.mark.parametrize("origin", [INBOX, LOCAL_INBOX])
def test_a_browsers_preflight_from_an_allowed_origin_is_answered(api_url: str, origin: str) -> None:
    response = request(
        f"{api_url}/threads/search",
        "OPTIONS",
        {
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-api-key",
        },
    )

    assert response.status == 200
    assert response.headers["Access-Control-Allow-Origin"] == origin
    allowed = {name.strip().lower() for name in response.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"content-type", "x-api-key"} <= allowed
    methods = {name.strip().upper() for name in response.headers["Access-Control-Allow-Methods"].split(",")}
    assert {"GET", "POST", "PATCH", "DELETE"} <= methods


def test_a_preflight_from_another_origin_gets_no_cors_headers(api_url: str) -> None:
    response = request(
        f"{api_url}/threads/search",
        "OPTIONS",
        {
            "Origin": "https://evil.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-api-key",
        },
    )

    assert "Access-Control-Allow-Origin" not in response.headers


def test_the_answer_to_an_allowed_origin_exposes_the_headers_the_sdk_reads(
    api_url: str, reviewer: User
) -> None:
    response = request(
        f"{api_url}/assistants/search",
        "POST",
        {"Origin": INBOX, "Content-Type": "application/json", "x-api-key": key_for(reviewer)},
        b"{}",
    )

    assert response.status == 200
    assert response.headers["Access-Control-Allow-Origin"] == INBOX
    exposed = {name.strip().lower() for name in response.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"content-location", "location"} <= exposed
