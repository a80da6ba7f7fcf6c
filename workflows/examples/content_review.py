"""A post drafted by a (fake, deterministic) model and reviewed through an Agent Inbox interrupt.

The graph is written exactly as for LangChain's Agent Inbox: it calls
`interrupt([HumanInterrupt])` and reads back `[HumanResponse]`. Accept publishes the
draft, edit publishes the reviewer's arguments, respond sends the draft back for a
rewrite with the feedback, ignore drops it.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt

from workflows.registry import SummaryField, register

MAX_REVISIONS = 3


class ContentState(TypedDict):
    topic: str
    audience: NotRequired[str]
    draft: NotRequired[str]
    feedback: NotRequired[list[str]]
    revision: NotRequired[int]
    published: NotRequired[str]
    status: NotRequired[str]


def fake_model(topic: str, audience: str, feedback: list[str]) -> str:
    """Stands in for an LLM: the same input always gives the same text."""
    text = f"{topic.strip().capitalize()}: what {audience or 'everyone'} should know."
    for note in feedback:
        text += f" (Revised: {note.strip()})"
    return text


def write(state: ContentState) -> dict[str, Any]:
    return {
        "draft": fake_model(state["topic"], state.get("audience", ""), state.get("feedback", [])),
        "revision": state.get("revision", 0) + 1,
    }


def review(state: ContentState) -> Command[Any]:
    request = {
        "action_request": {
            "action": "publish_post",
            "args": {"title": state["topic"], "body": state["draft"]},
        },
        "config": {
            "allow_accept": True,
            "allow_edit": True,
            "allow_respond": state.get("revision", 1) < MAX_REVISIONS,
            "allow_ignore": True,
        },
        "description": (
            f"**Draft {state.get('revision', 1)}** of a post on *{state['topic']}*. "
            "Accept to publish it, edit the title or body, send feedback for a rewrite, or ignore it."
        ),
    }
    response = interrupt([request])[0]
    kind = response.get("type")
    if kind == "accept":
        return Command(goto="publish", update={"published": state["draft"]})
    if kind == "edit":
        args = (response.get("args") or {}).get("args", {})
        return Command(goto="publish", update={"published": str(args.get("body", state["draft"]))})
    if kind == "response":
        return Command(
            goto="write", update={"feedback": [*state.get("feedback", []), str(response.get("args"))]}
        )
    return Command(goto=END, update={"status": "ignored"})


def publish(state: ContentState) -> dict[str, Any]:
    return {"status": "published"}


@register(
    "content_review",
    title="Content review",
    description="A drafted post waits for an editor: accept, edit, ask for a rewrite, or ignore.",
    reviewer_group="editors",
    editable=["audience"],
    summary_fields=[
        SummaryField("topic", "Topic"),
        SummaryField("audience", "Audience"),
        SummaryField("revision", "Revision", "number"),
    ],
)
def build() -> StateGraph[ContentState]:
    builder = StateGraph(ContentState)
    builder.add_node("write", write)
    builder.add_node("review", review, destinations=("publish", "write", END))
    builder.add_node("publish", publish)
    builder.add_edge(START, "write")
    builder.add_edge("write", "review")
    builder.add_edge("publish", END)
    return builder
