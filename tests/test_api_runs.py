"""The runs endpoints: creating a run starts a thread, answers its interrupt (a decision on its
review, by the key's user) or gives a completed one new input; /wait and /join block until
the run ends; cancel stops the thread. With the Django test client, and with the real
`langgraph_sdk` clients, sync and async, against the live server and a real worker."""

from __future__ import annotations

import contextlib
import json
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from django.contrib.auth.models import Group, User
from django.db import connection
from django.http import HttpResponse
from django.test import Client
from langgraph_sdk import get_client, get_sync_client
from langgraph_sdk.errors import ConflictError, NotFoundError, UnprocessableEntityError

from api import services as keys
from approvals.models import Decision, Review
from tests.factories import EXPENSE, make_user, open_review, row_counts, run_queued
from tests.pages import expense_thread, grant
from tests.workers import Worker
from workflows import services
from workflows.audit import Action
from workflows.models import AuditEvent, Run, Thread

pytestmark = pytest.mark.django_db

CONTENT_LOCATION = re.compile(r"^/threads/(?P<thread_id>[0-9a-f-]{36})/runs/(?P<run_id>[0-9a-f-]{36})$")


def key_for(user: User) -> str:
    return keys.create_api_key(user=user, name="tests", actor=None).secret


def prefix_of(secret: str) -> str:
    # signoff_<prefix>_<secret>
    return secret.split("_")[1]


@pytest.fixture
def starter(reviewer: User) -> User:
    """Rita, who may also start and cancel threads through the API, and reviews the test
    workflows (testers) too."""
    reviewer.groups.add(Group.objects.get_or_create(name="testers")[0])
    return grant(reviewer, "start_thread", "cancel_thread")


@pytest.fixture
def starter_key(starter: User) -> str:
    return key_for(starter)


@pytest.fixture
def rita_key(reviewer: User) -> str:
    return key_for(reviewer)


@pytest.fixture
def approver_key(other_reviewer: User) -> str:
    """Oscar's: he reviews what Rita starts (the starter may not approve her own thread)."""
    other_reviewer.groups.add(Group.objects.get_or_create(name="testers")[0])
    return key_for(other_reviewer)


def whole(response: Any) -> Any:
    """The answer read to its end: /wait and /join answer with a body awaited on the event loop
    (api.waiting), which the test client hands over as a stream."""
    if not response.streaming:
        return response
    body = b"".join(response)
    read = HttpResponse(body, status=response.status_code)
    for name, value in response.items():
        read[name] = value
    read.json = lambda: json.loads(body)  # type: ignore[attr-defined]
    return read


def post(key: str, path: str, body: Any = None, **params: Any) -> Any:
    query = "&".join(f"{name}={value}" for name, value in params.items())
    return whole(
        Client().post(
            f"/api{path}{'?' + query if query else ''}",
            body,
            content_type="application/json",
            headers={"x-api-key": key},
        )
    )


def get(key: str, path: str, **params: Any) -> Any:
    return whole(Client().get(f"/api{path}", params, headers={"x-api-key": key}))


def new_thread(user: User) -> Thread:
    """A NEW thread of `user`'s, as POST /threads makes one (no workflow yet)."""
    return services.create_thread(thread_id=None, metadata={}, actor=user)


def start(key: str, thread: Thread, **body: Any) -> Any:
    return post(
        key,
        f"/threads/{thread.thread_id}/runs",
        {"assistant_id": "expense_approval", "input": EXPENSE, **body},
    )


def loc_names(response: Any) -> list[str]:
    assert response.status_code == 422, response.content
    # ["body", "payload", "command", "goto"] -> "command.goto"; ["query", "action"] -> "action"
    return [
        ".".join(str(part) for part in item["loc"][2 if item["loc"][0] == "body" else 1 :])
        for item in response.json()["detail"]
    ]


def names_field(names: list[str], field: str) -> bool:
    return any(name == field or name.startswith(f"{field}.") for name in names)


def test_a_run_webhook_outside_the_allow_list_is_a_422_naming_it(starter: User, starter_key: str) -> None:
    thread = new_thread(starter)

    response = start(starter_key, thread, webhook="https://elsewhere.example.net/done")

    assert response.status_code == 422
    assert "SIGNOFF_WEBHOOK_ALLOWED_URLS" in response.json()["detail"][0]["msg"]
    assert not Run.objects.filter(thread=thread).exists()


# -- starting a thread -------------------------------------------------------------------------


def test_a_run_with_input_starts_a_new_thread_and_answers_the_run(
    starter: User, starter_key: str, settings: Any
) -> None:
    settings.SIGNOFF_WEBHOOK_ALLOWED_URLS = ["https://hooks.example.com/"]
    thread = new_thread(starter)

    response = start(starter_key, thread, metadata={"ticket": 7}, webhook="https://hooks.example.com/done")

    assert response.status_code == 200, response.content
    body = response.json()
    run = Run.objects.get(public_id=body["run_id"])
    assert set(body) == {
        "run_id",
        "thread_id",
        "assistant_id",
        "created_at",
        "updated_at",
        "status",
        "metadata",
        "multitask_strategy",
        "kwargs",
    }
    assert body["thread_id"] == thread.thread_id
    assert body["assistant_id"] == "expense_approval"
    assert body["status"] == "pending"
    assert body["metadata"] == {"ticket": 7}
    assert body["multitask_strategy"] == "reject"
    match = CONTENT_LOCATION.match(response["Content-Location"])
    assert match is not None
    assert "Location" not in response
    assert match["thread_id"] == thread.thread_id
    assert match["run_id"] == body["run_id"]
    assert (run.kind, run.status, run.stream_modes) == (Run.Kind.START, Run.Status.QUEUED, ["values"])
    assert run.webhook == "https://hooks.example.com/done"
    thread.refresh_from_db()
    assert thread.workflow == "expense_approval"
    assert thread.status == Thread.Status.QUEUED
    assert thread.metadata["graph_id"] == "expense_approval"
    assert thread.metadata["assistant_id"] == str(uuid.uuid5(uuid.NAMESPACE_URL, "expense_approval"))
    event = AuditEvent.objects.get(thread=thread, action=Action.THREAD_STARTED)
    assert event.actor == starter
    assert event.data["api_key"] == prefix_of(starter_key)


def test_the_stream_modes_asked_for_are_the_runs(starter: User, starter_key: str) -> None:
    thread = new_thread(starter)

    response = start(starter_key, thread, stream_mode=["updates", "values", "updates"])

    assert Run.objects.get(public_id=response.json()["run_id"]).stream_modes == ["updates", "values"]


def test_an_unknown_thread_is_made_when_the_run_asks_for_it(starter_key: str) -> None:
    thread_id = str(uuid.uuid4())

    refused = post(
        starter_key, f"/threads/{thread_id}/runs", {"assistant_id": "expense_approval", "input": EXPENSE}
    )
    made = post(
        starter_key,
        f"/threads/{thread_id}/runs",
        {"assistant_id": "expense_approval", "input": EXPENSE, "if_not_exists": "create"},
    )

    assert refused.status_code == 404
    assert thread_id in refused.json()["detail"]
    assert made.status_code == 200, made.content
    assert Thread.objects.get(public_id=thread_id).status == Thread.Status.QUEUED


def test_a_stateless_run_gets_a_thread_of_its_own(starter_key: str) -> None:
    response = post(starter_key, "/runs", {"assistant_id": "expense_approval", "input": EXPENSE})

    assert response.status_code == 200, response.content
    thread = Thread.objects.get(public_id=response.json()["thread_id"])
    assert thread.workflow == "expense_approval"
    assert CONTENT_LOCATION.match(response["Content-Location"])


def test_input_that_does_not_fit_the_schema_is_a_422_and_leaves_no_thread(starter_key: str) -> None:
    before = row_counts()

    response = post(starter_key, "/runs", {"assistant_id": "expense_approval", "input": {"amount": "lots"}})

    assert loc_names(response) == ["input"]
    assert "amount" in response.json()["detail"][0]["msg"]
    assert row_counts() == before


def test_starting_needs_the_start_permission(reviewer: User, rita_key: str) -> None:
    thread = new_thread(reviewer)

    response = start(rita_key, thread)

    assert response.status_code == 403
    assert "workflows.start_thread" in response.json()["detail"]


def test_an_assistant_the_key_does_not_review_is_a_404(starter: User, starter_key: str) -> None:
    thread = new_thread(starter)

    response = start(starter_key, thread, assistant_id="seed_demo")

    assert response.status_code == 404
    assert "seed_demo" in response.json()["detail"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"multitask_strategy": "interrupt"}, "multitask_strategy"),
        ({"multitask_strategy": "rollback"}, "multitask_strategy"),
        ({"command": {"goto": "pay"}}, "command.goto"),
        ({"command": {"graph": "__parent__"}}, "command.graph"),
        ({"command": {"update": {"amount": 1.0}}}, "command.update"),
        ({"durability": "exit"}, "durability"),
        ({"durability": "async"}, "durability"),
        ({"stream_subgraphs": True}, "stream_subgraphs"),
        ({"stream_mode": "debug"}, "stream_mode"),
        ({"context": {"model": "x"}}, "context"),
        ({"interrupt_before": ["no_such_node"]}, "interrupt_before"),
        ({"interrupt_after": ["pay", "no_such_node"]}, "interrupt_after"),
        ({"on_disconnect": "cancel"}, "on_disconnect"),
        ({"on_completion": "keep"}, "on_completion"),
        ({"after_seconds": 5}, "after_seconds"),
        ({"feedback_keys": ["score"]}, "feedback_keys"),
        ({"langsmith_tracer": {"project_name": "x"}}, "langsmith_tracer"),
        ({"checkpoint_during": True}, "checkpoint_during"),
        ({"strict_resume": False}, "strict_resume"),
        ({"checkpoint_id": "1f0"}, "checkpoint_id"),
        ({"config": {"tags": ["a"]}}, "config.tags"),
        ({"config": {"recursion_limit": 7}}, "config.recursion_limit"),
        ({"config": {"configurable": {"user_id": "u"}}}, "config.configurable.user_id"),
        ({"config": {"callbacks": []}}, "config.callbacks"),
        ({"webhook": "ftp://example.com/x"}, "webhook"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_what_signoff_does_not_do_is_a_422_naming_the_field(
    starter: User, starter_key: str, body: dict[str, Any], field: str
) -> None:
    thread = new_thread(starter)
    before = row_counts()

    response = start(starter_key, thread, **body)

    assert names_field(loc_names(response), field)
    assert all(item["msg"] for item in response.json()["detail"])
    assert row_counts() == before


def test_what_signoff_does_is_accepted_as_sent(starter: User, starter_key: str) -> None:
    thread = new_thread(starter)

    response = start(
        starter_key,
        thread,
        durability="sync",
        on_disconnect="continue",
        stream_resumable=True,
        strict_resume=True,
        after_seconds=0,
        multitask_strategy="reject",
        if_not_exists="reject",
        config={
            "recursion_limit": 100,
            "tags": [],
            "metadata": {"from": "config"},
            "configurable": {"thread_id": thread.thread_id},
        },
    )

    assert response.status_code == 200, response.content
    assert response.json()["metadata"] == {"from": "config"}


def test_a_thread_of_another_group_is_a_404(starter_key: str, staff: User) -> None:
    otto_key = key_for(grant(make_user("otto", groups=["operators"]), "start_thread"))
    thread = services.start_thread(workflow="expense_approval", input=EXPENSE, actor=staff)

    for response in (
        start(otto_key, thread),
        get(otto_key, f"/threads/{thread.thread_id}/runs"),
        get(otto_key, f"/threads/{thread.thread_id}/runs/{thread.runs.get().public_id}"),
    ):
        assert response.status_code == 404
        assert "not found" in response.json()["detail"]


def test_a_second_run_while_one_is_queued_is_a_409_naming_it(starter: User, starter_key: str) -> None:
    thread = new_thread(starter)
    first = start(starter_key, thread).json()

    second = start(starter_key, thread)

    assert second.status_code == 409
    assert first["run_id"] in second.json()["detail"]
    assert thread.runs.count() == 1


def test_enqueue_waits_behind_the_active_run(starter: User, starter_key: str) -> None:
    thread = new_thread(starter)
    start(starter_key, thread)

    response = start(starter_key, thread, multitask_strategy="enqueue")

    assert response.status_code == 200, response.content
    assert response.json()["status"] == "pending"
    assert Run.objects.get(public_id=response.json()["run_id"]).status == Run.Status.PENDING


def test_the_runs_of_a_thread_are_listed_and_read(starter: User, starter_key: str) -> None:
    thread = new_thread(starter)
    first = start(starter_key, thread).json()
    second = start(starter_key, thread, multitask_strategy="enqueue").json()

    listed = get(starter_key, f"/threads/{thread.thread_id}/runs")
    pending = get(starter_key, f"/threads/{thread.thread_id}/runs", status="pending", limit=1, offset=1)
    selected = get(starter_key, f"/threads/{thread.thread_id}/runs", select="run_id")
    one = get(starter_key, f"/threads/{thread.thread_id}/runs/{first['run_id']}")
    unknown = get(starter_key, f"/threads/{thread.thread_id}/runs", sort_by="created_at")

    assert [run["run_id"] for run in listed.json()] == [second["run_id"], first["run_id"]]
    assert [run["run_id"] for run in pending.json()] == [first["run_id"]]
    assert selected.json() == [{"run_id": second["run_id"]}, {"run_id": first["run_id"]}]
    assert one.json()["run_id"] == first["run_id"]
    assert unknown.status_code == 422
    assert get(starter_key, f"/threads/{thread.thread_id}/runs/{uuid.uuid4()}").status_code == 404
    not_an_id = get(starter_key, f"/threads/{thread.thread_id}/runs/not-a-run")
    assert (not_an_id.status_code, not_an_id.json()) == (404, {"detail": "Not Found"})


def test_the_openapi_document_describes_the_runs_and_every_field_of_their_body() -> None:
    document = Client().get("/api/openapi.json").json()

    assert {
        "/api/threads/{thread_id}/runs",
        "/api/threads/{thread_id}/runs/wait",
        "/api/threads/{thread_id}/runs/{run_id}",
        "/api/threads/{thread_id}/runs/{run_id}/join",
        "/api/threads/{thread_id}/runs/{run_id}/cancel",
        "/api/runs",
        "/api/runs/wait",
    } <= set(document["paths"])
    body = document["components"]["schemas"]["RunCreate"]
    assert {"assistant_id", "command", "multitask_strategy", "durability", "webhook"} <= set(
        body["properties"]
    )
    assert [name for name, field in body["properties"].items() if not field.get("description")] == []


# -- answering an interrupt: a decision on its review ------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_resume_decides_the_review_as_the_keys_user(
    reviewer: User, staff: User, doorbell: list[int]
) -> None:
    thread = expense_thread(staff)
    review = open_review(thread)
    key = key_for(reviewer)

    response = post(
        key,
        f"/threads/{thread.thread_id}/runs",
        {
            "assistant_id": "expense_approval",
            "command": {"resume": {"action": "approve", "comment": "fine"}, "update": {"amount": 99.5}},
            "metadata": {"via": "sdk"},
        },
    )

    assert response.status_code == 200, response.content
    decision = Decision.objects.get(review=review)
    assert (decision.actor, decision.action, decision.comment) == (reviewer, "approve", "fine")
    event = AuditEvent.objects.get(thread=thread, action=Action.REVIEW_DECIDED)
    assert event.actor == reviewer
    assert event.data["api_key"] == prefix_of(key)
    assert event.data["updates"] == {"amount": 99.5, "approved": True}
    run = Run.objects.get(public_id=response.json()["run_id"])
    assert (run.kind, run.status, run.metadata, run.stream_modes) == (
        Run.Kind.RESUME,
        Run.Status.QUEUED,
        {"via": "sdk"},
        ["values"],
    )
    run_queued(thread)
    assert thread.status == Thread.Status.COMPLETED


@pytest.mark.django_db(transaction=True)
def test_a_resume_pinned_to_another_checkpoint_is_a_409(
    reviewer: User, staff: User, doorbell: list[int]
) -> None:
    thread = expense_thread(staff)

    response = post(
        key_for(reviewer),
        f"/threads/{thread.thread_id}/runs",
        {
            "assistant_id": "expense_approval",
            "command": {"resume": "approve"},
            "checkpoint_id": "1f0-not-the-head",
        },
    )

    assert response.status_code == 409
    assert "moved on" in response.json()["detail"]
    assert not Decision.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_resume_of_a_review_someone_else_claimed_is_a_409_naming_them(
    reviewer: User, other_reviewer: User, staff: User, doorbell: list[int]
) -> None:
    from approvals import services as approvals

    thread = expense_thread(staff)
    approvals.claim_review(review=open_review(thread), actor=other_reviewer)

    response = post(
        key_for(reviewer),
        f"/threads/{thread.thread_id}/runs",
        {"assistant_id": "expense_approval", "command": {"resume": "approve"}},
    )

    assert response.status_code == 409
    assert "oscar" in response.json()["detail"]
    assert not Decision.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_resume_after_someone_else_decided_is_a_409(
    reviewer: User, other_reviewer: User, staff: User, doorbell: list[int]
) -> None:
    from tests.factories import decide

    thread = expense_thread(staff)
    decide(open_review(thread), other_reviewer, "approve")
    resume_run = thread.runs.get(kind=Run.Kind.RESUME)
    body = {"assistant_id": "expense_approval", "command": {"resume": "approve"}}

    rejected = post(key_for(reviewer), f"/threads/{thread.thread_id}/runs", body)
    enqueued = post(
        key_for(reviewer), f"/threads/{thread.thread_id}/runs", {**body, "multitask_strategy": "enqueue"}
    )

    assert rejected.status_code == 409
    assert str(resume_run.public_id) in rejected.json()["detail"]
    assert enqueued.status_code == 409
    assert "no interrupt" in enqueued.json()["detail"]
    assert Decision.objects.get().actor == other_reviewer


@pytest.mark.django_db(transaction=True)
def test_input_on_an_interrupted_thread_is_a_409_saying_to_resume(starter_key: str, staff: User) -> None:
    thread = expense_thread(staff)

    response = start(starter_key, thread)

    assert response.status_code == 409
    assert "command.resume" in response.json()["detail"]


@pytest.mark.django_db(transaction=True)
def test_an_answer_that_is_not_an_action_is_a_422(reviewer: User, staff: User) -> None:
    thread = expense_thread(staff)

    for resume in ("pay it", {"verdict": "yes"}):
        response = post(
            key_for(reviewer),
            f"/threads/{thread.thread_id}/runs",
            {"assistant_id": "expense_approval", "command": {"resume": resume}},
        )
        assert loc_names(response) == ["command.resume"], resume
    assert not Decision.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_an_edit_that_does_not_fit_the_schema_is_a_422_naming_the_field(reviewer: User, staff: User) -> None:
    thread = expense_thread(staff)

    response = post(
        key_for(reviewer),
        f"/threads/{thread.thread_id}/runs",
        {
            "assistant_id": "expense_approval",
            "command": {"resume": "approve", "update": {"category": "yachts"}},
        },
    )

    assert loc_names(response) == ["command.update.category"]
    assert not Decision.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_agent_inbox_human_responses_decide_its_review(
    reviewer: User, staff: User, doorbell: list[int]
) -> None:
    thread = services.start_thread(workflow="content_review", input={"topic": "tides"}, actor=staff)
    run_queued(thread)
    review = open_review(thread)

    response = post(
        key_for(reviewer),
        f"/threads/{thread.thread_id}/runs",
        {
            "assistant_id": "content_review",
            "command": {
                "resume": {
                    review.interrupt_id: [
                        {
                            "type": "edit",
                            "args": {"action": "publish_post", "args": {"title": "T", "body": "B"}},
                        }
                    ]
                }
            },
        },
    )

    assert response.status_code == 200, response.content
    decision = Decision.objects.get(review=review)
    assert decision.action == Decision.Action.EDIT
    assert decision.response == [
        {"type": "edit", "args": {"action": "publish_post", "args": {"title": "T", "body": "B"}}}
    ]
    run_queued(thread)
    assert thread.status == Thread.Status.COMPLETED
    assert thread.runs.order_by("-id").first() is not None


@pytest.mark.django_db(transaction=True)
def test_agent_inbox_sends_a_plain_list_for_the_one_pending_interrupt(
    reviewer: User, staff: User, doorbell: list[int]
) -> None:
    thread = services.start_thread(workflow="content_review", input={"topic": "tides"}, actor=staff)
    run_queued(thread)
    review = open_review(thread)
    path = f"/threads/{thread.thread_id}/runs"
    key = key_for(reviewer)

    bad = post(key, path, {"assistant_id": "content_review", "command": {"resume": [{"type": "approve"}]}})
    response = post(
        key,
        path,
        {"assistant_id": "content_review", "command": {"resume": [{"type": "response", "args": "Shorter"}]}},
    )

    assert loc_names(bad) == ["command.resume"]
    assert "HumanResponse" in bad.json()["detail"][0]["msg"]
    assert response.status_code == 200, response.content
    decision = Decision.objects.get(review=review)
    assert (decision.action, decision.response) == (
        Decision.Action.RESPOND,
        [{"type": "response", "args": "Shorter"}],
    )


# -- waiting, joining, cancelling --------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_wait_answers_the_values_with_the_interrupt_and_join_the_same(staff: User, reviewer: User) -> None:
    thread = expense_thread(staff)
    run = thread.runs.get()
    key = key_for(reviewer)

    joined = get(key, f"/threads/{thread.thread_id}/runs/{run.public_id}/join")

    assert joined.status_code == 200
    values = joined.json()
    assert values["employee"] == "Ada"
    [pause] = values["__interrupt__"]
    assert pause["id"] == open_review(thread).interrupt_id
    assert pause["value"] == {"next": ["pay"]}


def test_wait_answers_the_state_as_it_is_when_the_run_outlasts_the_wait(
    settings: Any, starter: User, starter_key: str
) -> None:
    settings.SIGNOFF_API_WAIT_SECONDS = 0.1
    thread = new_thread(starter)

    response = post(
        starter_key,
        f"/threads/{thread.thread_id}/runs/wait",
        {"assistant_id": "test_tally", "input": {"count": 1}},
    )

    assert response.status_code == 200, response.content
    assert response.json() == {}
    match = CONTENT_LOCATION.match(response["Content-Location"])
    assert match is not None
    assert response["Location"] == f"{response['Content-Location']}/join"
    assert Run.objects.get(public_id=match["run_id"]).status == Run.Status.QUEUED


@pytest.mark.django_db(transaction=True)
def test_a_failed_run_answers_its_error_as_the_sdk_raises_it(starter: User, starter_key: str) -> None:
    thread = new_thread(starter)
    response = post(
        starter_key,
        f"/threads/{thread.thread_id}/runs",
        {"assistant_id": "test_tally", "input": {"count": 1, "fail": True}},
    )
    thread.refresh_from_db()
    run_queued(thread)

    joined = get(starter_key, f"/threads/{thread.thread_id}/runs/{response.json()['run_id']}/join")

    assert joined.json()["__error__"] == {"error": "ValueError", "message": "asked to fail"}


@pytest.mark.django_db(transaction=True)
def test_new_input_continues_a_completed_thread_and_an_enqueued_run_takes_its_turn(
    starter: User, starter_key: str
) -> None:
    thread = new_thread(starter)
    body = {"assistant_id": "test_tally", "input": {"count": 1}}
    post(starter_key, f"/threads/{thread.thread_id}/runs", body)
    waiting = post(
        starter_key,
        f"/threads/{thread.thread_id}/runs",
        {**body, "input": {"count": 10}, "multitask_strategy": "enqueue"},
    ).json()
    thread.refresh_from_db()

    run_queued(thread)  # the first: count 2, then the enqueued run is queued
    assert Run.objects.get(public_id=waiting["run_id"]).status == Run.Status.QUEUED
    run_queued(thread)

    joined = get(starter_key, f"/threads/{thread.thread_id}/runs/{waiting['run_id']}/join").json()
    assert joined == {"count": 11}
    assert thread.status == Thread.Status.COMPLETED
    again = post(starter_key, f"/threads/{thread.thread_id}/runs", {**body, "input": {"count": 100}})
    assert again.status_code == 200
    assert Action.RUN_DEQUEUED in AuditEvent.objects.filter(thread=thread).values_list("action", flat=True)
    assert Action.THREAD_CONTINUED in AuditEvent.objects.filter(thread=thread).values_list(
        "action", flat=True
    )


@pytest.mark.django_db(transaction=True)
def test_a_runs_own_breakpoint_pauses_it_for_a_review(
    starter: User, starter_key: str, approver_key: str
) -> None:
    thread = new_thread(starter)
    created = post(
        starter_key,
        f"/threads/{thread.thread_id}/runs",
        {"assistant_id": "test_tally", "input": {"count": 1}, "interrupt_before": ["add"]},
    ).json()
    thread.refresh_from_db()
    run_queued(thread)

    paused = get(starter_key, f"/threads/{thread.thread_id}/runs/{created['run_id']}/join").json()

    assert thread.status == Thread.Status.INTERRUPTED
    review = open_review(thread)
    assert (review.kind, review.node) == (Review.Kind.BREAKPOINT, "add")
    assert paused == {"count": 1, "__interrupt__": [{"value": {"next": ["add"]}, "id": review.interrupt_id}]}
    resumed = post(
        approver_key,
        f"/threads/{thread.thread_id}/runs",
        {"assistant_id": "test_tally", "command": {"resume": "approve"}},
    ).json()
    thread.refresh_from_db()
    run_queued(thread)
    # The breakpoint was the first run's: the resume runs on to the end.
    assert thread.status == Thread.Status.COMPLETED
    assert get(starter_key, f"/threads/{thread.thread_id}/runs/{resumed['run_id']}/join").json() == {
        "count": 2
    }


def test_cancel_stops_the_thread_and_its_waiting_runs(starter: User, starter_key: str) -> None:
    thread = new_thread(starter)
    first = start(starter_key, thread).json()
    second = start(starter_key, thread, multitask_strategy="enqueue").json()

    response = post(
        starter_key, f"/threads/{thread.thread_id}/runs/{first['run_id']}/cancel", wait=1, action="interrupt"
    )

    assert response.status_code == 204
    thread.refresh_from_db()
    assert thread.status == Thread.Status.CANCELLED
    assert (
        get(starter_key, f"/threads/{thread.thread_id}/runs/{first['run_id']}").json()["status"]
        == "interrupted"
    )
    assert Run.objects.get(public_id=second["run_id"]).status == Run.Status.CANCELLED
    event = AuditEvent.objects.get(thread=thread, action=Action.THREAD_CANCELLED)
    assert event.data["api_key"] == prefix_of(starter_key)
    again = post(starter_key, f"/threads/{thread.thread_id}/runs/{first['run_id']}/cancel")
    assert again.status_code == 409


def test_cancelling_a_waiting_run_leaves_the_active_one(starter: User, starter_key: str) -> None:
    thread = new_thread(starter)
    first = start(starter_key, thread).json()
    second = start(starter_key, thread, multitask_strategy="enqueue").json()

    response = post(starter_key, f"/threads/{thread.thread_id}/runs/{second['run_id']}/cancel")

    assert response.status_code == 204
    assert Run.objects.get(public_id=second["run_id"]).status == Run.Status.CANCELLED
    assert Run.objects.get(public_id=first["run_id"]).status == Run.Status.QUEUED


def test_cancel_needs_its_permission_and_refuses_rollback(
    reviewer: User, starter: User, starter_key: str
) -> None:
    thread = new_thread(starter)
    run = start(starter_key, thread).json()
    path = f"/threads/{thread.thread_id}/runs/{run['run_id']}/cancel"
    no_cancel = key_for(grant(make_user("nina", groups=["finance"]), "start_thread"))
    other = services.start_thread(workflow="expense_approval", input=EXPENSE, actor=starter)

    rollback = post(starter_key, path, action="rollback")
    forbidden = post(no_cancel, f"/threads/{other.thread_id}/runs/{other.runs.get().public_id}/cancel")

    assert "action" in loc_names(rollback)
    assert "deletes no run" in rollback.json()["detail"][0]["msg"]
    assert forbidden.status_code == 403
    assert "workflows.cancel_thread" in forbidden.json()["detail"]
    assert Thread.objects.get(pk=other.pk).status == Thread.Status.QUEUED


# -- two creates at once (PostgreSQL: real transactions) ----------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_creates_at_once_start_one_run_and_the_other_gets_a_409(starter: User, starter_key: str) -> None:
    thread = new_thread(starter)
    barrier = threading.Barrier(2)
    statuses: list[int] = []

    def create() -> None:
        try:
            barrier.wait()
            statuses.append(start(starter_key, thread).status_code)
        finally:
            connection.close()

    racers = [threading.Thread(target=create) for _ in range(2)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join()

    assert sorted(statuses) == [200, 409]
    assert thread.runs.count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_resumes_at_once_decide_the_review_once(
    reviewer: User, other_reviewer: User, staff: User, doorbell: list[int]
) -> None:
    thread = expense_thread(staff)
    body = {"assistant_id": "expense_approval", "command": {"resume": "approve"}}
    racers_keys = [key_for(reviewer), key_for(other_reviewer)]
    barrier = threading.Barrier(2)
    answers: list[tuple[int, str]] = []

    def resume(key: str) -> None:
        try:
            barrier.wait()
            response = post(key, f"/threads/{thread.thread_id}/runs", body)
            answers.append((response.status_code, str(response.json().get("detail", ""))))
        finally:
            connection.close()

    racers = [threading.Thread(target=resume, args=(key,)) for key in racers_keys]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join()

    assert sorted(status for status, _ in answers) == [200, 409]
    decision = Decision.objects.get()
    [refusal] = [detail for status, detail in answers if status == 409]
    # Refused at the review (decided by the winner, named) or at the thread (its run, named).
    assert (
        decision.actor.username in refusal or str(thread.runs.get(kind=Run.Kind.RESUME).public_id) in refusal
    )


# -- the real langgraph_sdk against the live server and a worker ----------------------------------


def in_its_own_connection[T](function: Callable[..., T]) -> Callable[..., T]:
    """`function`, closing the connection it opened: sync_to_async runs it in a thread of its
    executor, whose connection PostgreSQL would otherwise keep, and then refuse to drop the
    test database."""

    def call(*args: Any) -> T:
        try:
            return function(*args)
        finally:
            connection.close()

    return call


@pytest.fixture
def worker(tmp_path: Any) -> Iterator[Worker]:
    from config.celery import app

    app.control.purge()
    running = Worker(tmp_path, "runs").start()
    yield running
    running.stop()


@pytest.mark.django_db(transaction=True)
def test_the_sync_sdk_runs_a_thread_to_its_interrupt_resumes_it_and_waits_until_done(
    live_server: Any, worker: Worker, starter: User, starter_key: str, other_reviewer: User, approver_key: str
) -> None:
    client = get_sync_client(url=f"{live_server.url}/api", api_key=starter_key)
    # The starter may not approve her own thread (segregation of duties): Oscar does.
    approver = get_sync_client(url=f"{live_server.url}/api", api_key=approver_key)
    thread = new_thread(starter)
    created: list[Any] = []

    paused = client.runs.wait(
        thread.thread_id, "expense_approval", input=EXPENSE, on_run_created=created.append
    )

    assert paused["employee"] == "Ada"
    [pause] = paused["__interrupt__"]
    assert created[0]["thread_id"] == thread.thread_id
    with pytest.raises(ConflictError):
        client.runs.create(thread.thread_id, "expense_approval", input=EXPENSE)
    with pytest.raises(httpx.HTTPStatusError, match="422"):
        client.runs.wait(thread.thread_id, "expense_approval", command={"resume": {pause["id"]: "approve"}})
    done = approver.runs.wait(
        thread.thread_id, "expense_approval", command={"resume": {pause["id"]: "approve"}}
    )

    assert done["outcome"] == "paid 120.00"
    assert "__interrupt__" not in done
    decision = Decision.objects.get(review__thread=thread)
    assert decision.actor == other_reviewer
    event = AuditEvent.objects.get(thread=thread, action=Action.REVIEW_DECIDED)
    assert event.data["api_key"] == prefix_of(approver_key)
    runs = client.runs.list(thread.thread_id)
    assert [run["status"] for run in runs] == ["success", "success"]
    # runs.wait raises httpx's own error (it reads the answer as a stream); runs.create the SDK's.
    with pytest.raises(httpx.HTTPStatusError) as refused:
        client.runs.wait(thread.thread_id, "expense_approval", input=EXPENSE, durability="exit")
    assert refused.value.response.status_code == 422
    with pytest.raises(UnprocessableEntityError):
        client.runs.create(thread.thread_id, "expense_approval", input=EXPENSE, durability="exit")
    with pytest.raises(NotFoundError):
        client.runs.get(thread.thread_id, str(uuid.uuid4()))
    stateless: list[Any] = []
    assert client.runs.wait(None, "test_tally", input={"count": 1}, on_run_created=stateless.append) == {
        "count": 2
    }
    assert Thread.objects.get(public_id=stateless[0]["thread_id"]).status == Thread.Status.COMPLETED


@pytest.mark.django_db(transaction=True)
async def test_the_async_sdk_enqueues_a_run_after_the_first_and_cancels(
    live_server: Any, worker: Worker, starter: User, starter_key: str
) -> None:
    from asgiref.sync import sync_to_async

    client = get_client(url=f"{live_server.url}/api", api_key=starter_key)
    thread = await sync_to_async(in_its_own_connection(new_thread))(starter)

    first = await client.runs.create(thread.thread_id, "test_tally", input={"count": 1, "pause": 1.0})
    with pytest.raises(ConflictError):
        await client.runs.create(thread.thread_id, "test_tally", input={"count": 5})
    second = await client.runs.create(
        thread.thread_id, "test_tally", input={"count": 10}, multitask_strategy="enqueue"
    )
    assert second["status"] == "pending"

    assert await client.runs.join(thread.thread_id, first["run_id"]) == {"count": 2, "pause": 1.0}
    # The new input is given to the saved state: pause keeps its value.
    assert await client.runs.join(thread.thread_id, second["run_id"]) == {"count": 11, "pause": 1.0}

    slow = await client.runs.create(thread.thread_id, "test_tally", input={"count": 0, "pause": 5.0})
    await client.runs.cancel(thread.thread_id, slow["run_id"], wait=True)
    cancelled = await client.runs.get(thread.thread_id, slow["run_id"])
    assert cancelled["status"] == "interrupted"

    def thread_status() -> str:
        return Thread.objects.get(pk=thread.pk).status

    assert await sync_to_async(in_its_own_connection(thread_status))() == Thread.Status.CANCELLED


def test_nothing_in_review_is_touched_by_an_unknown_thread(starter_key: str) -> None:
    response = post(
        starter_key,
        f"/threads/{uuid.uuid4()}/runs",
        {"assistant_id": "expense_approval", "command": {"resume": "approve"}},
    )

    assert response.status_code == 404
    assert not Review.objects.exists()


# -- the body declares every field langgraph_sdk may send ------------------------------------------


def test_the_run_body_declares_every_field_the_sdk_sends_so_none_is_refused_as_unknown() -> None:
    import inspect
    import json
    import warnings

    from langgraph_sdk._sync.client import SyncLangGraphClient

    from api.schemas import RunCreate

    sent: list[set[str]] = []

    def capture(request: httpx.Request) -> httpx.Response:
        sent.append(set(json.loads(request.content)))
        return httpx.Response(200, json={}, headers={"content-type": "text/event-stream"})

    client = SyncLangGraphClient(httpx.Client(base_url="http://sdk", transport=httpx.MockTransport(capture)))
    client_side = {"self", "thread_id", "assistant_id", "headers", "params", "on_run_created", "raise_error"}
    for method in (client.runs.create, client.runs.wait, client.runs.stream):
        kwargs: dict[str, Any] = {
            name: {"resume": 1} if name == "command" else "x"
            for name in inspect.signature(method).parameters
            if name not in client_side and name != "version"
        }
        with warnings.catch_warnings(), contextlib.suppress(Exception):
            warnings.simplefilter("ignore")
            result = method("t", "a", **kwargs)
            if method == client.runs.stream:
                list(result)

    assert len(sent) == 3
    declared = set(RunCreate.model_fields)
    assert set().union(*sent) - declared == set()
    assert {"feedback_keys", "on_disconnect", "checkpoint_during", "langsmith_tracer"} <= set().union(*sent)
