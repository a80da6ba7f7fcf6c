"""Threads: create, read, search, state (read and update), history and copy, in LangGraph's
paths and shapes (`langgraph_sdk`'s `client.threads`).

A thread is a `workflows.models.Thread`, its `public_id` the thread_id. One made here is NEW:
no workflow and no checkpoint until its first run names the workflow. A key sees the threads
`api.access.visible_threads` gives it; any other is a 404 naming the id. Every write goes
through `workflows.services` (durable, audited with the key's prefix).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, get_args

from django.db.models import QuerySet
from django.db.models.fields.json import KeyTransform
from django.http import HttpRequest, HttpResponse
from langgraph.types import StateSnapshot
from ninja import Router
from ninja.errors import HttpError, ValidationError

from api import access, convert, schemas
from api.auth import key_data
from api.params import refuse, refuse_unknown_query
from approvals.http import request_user
from approvals.services import unregistered_message
from workflows import engine, registry, services
from workflows.models import Thread

router = Router(tags=["threads"])

ERRORS: dict[int, type[schemas.Error]] = {
    401: schemas.Error,
    403: schemas.Error,
    404: schemas.Error,
    409: schemas.Error,
    422: schemas.Error,
    503: schemas.Error,
}
# A search by `values` reads each candidate's head checkpoint in Python: at most this many.
VALUES_SCAN_LIMIT = 1000
SORT_FIELDS = {
    "thread_id": "public_id",
    "status": "status",
    "created_at": "created_at",
    "updated_at": "updated_at",
}
UNREADABLE = (
    "this thread's checkpoint cannot be read (changed behind Signoff's back or sealed with another "
    "key); an administrator must repair or roll back the thread; this has been recorded in the audit trail"
)


@contextmanager
def reading(request: HttpRequest, thread: Thread) -> Iterator[None]:
    """Reading a thread's checkpoints: a workflow no longer registered, or a checkpoint that
    cannot be decoded, is a 409 that says so (audited once per head, as the pages do)."""
    try:
        registry.get(thread.workflow)
    except LookupError:
        raise HttpError(409, unregistered_message(thread.workflow)) from None
    try:
        yield
    except engine.UNREADABLE as exc:
        services.report_unreadable_checkpoint(thread=thread, actor=request_user(request), error=exc)
        raise HttpError(409, UNREADABLE) from None


def head_of(request: HttpRequest, thread: Thread) -> StateSnapshot | None:
    """The thread's head snapshot; None for a NEW thread, which has no workflow to read it with."""
    if not thread.workflow:
        return None
    with reading(request, thread):
        return engine.head(thread.workflow, thread.thread_id)


def head_or_none(request: HttpRequest, thread: Thread) -> StateSnapshot | None:
    """For a search: a thread whose head cannot be read shows no values rather than fail the
    whole page (get and state say why)."""
    try:
        return head_of(request, thread)
    except HttpError:
        return None


def empty_state(thread: Thread) -> StateSnapshot:
    """The state of a thread that has no checkpoint, as LangGraph reads one."""
    config = {"configurable": {"thread_id": thread.thread_id, "checkpoint_ns": ""}}
    return StateSnapshot({}, (), config, None, None, None, (), ())  # type: ignore[arg-type]


def refuse_subgraphs(request: HttpRequest, thread: Thread, subgraphs: bool, loc: list[str | int]) -> None:
    """subgraphs=true changes nothing for a graph without subgraphs (every workflow Signoff
    ships); for one with subgraphs it would ask for their states, which are not served."""
    if not subgraphs or not thread.workflow:
        return
    with reading(request, thread):
        has_subgraphs = any(True for _ in engine.graph_for(thread.workflow).get_subgraphs())
    if has_subgraphs:
        raise refuse(loc, "the states of subgraphs are not served", True)


def checked_checkpoint_id(
    thread: Thread, checkpoint: schemas.CheckpointIn | None, loc: list[str | int]
) -> str | None:
    """The checkpoint_id a client's Checkpoint names (None: the head), after checking it names
    this thread's root namespace."""
    if checkpoint is None:
        return None
    if checkpoint.thread_id not in (None, "", thread.thread_id):
        raise refuse([*loc, "thread_id"], "names another thread than the path", checkpoint.thread_id)
    if checkpoint.checkpoint_map:
        raise refuse(
            [*loc, "checkpoint_map"], "subgraph checkpoints are not served", checkpoint.checkpoint_map
        )
    return checkpoint.checkpoint_id or None


def state_at(request: HttpRequest, thread: Thread, checkpoint_id: str | None) -> dict[str, Any]:
    """The thread's state at a checkpoint (the head without one), or a 404 naming it."""
    if not thread.workflow:
        if checkpoint_id:
            raise HttpError(404, f"Checkpoint '{checkpoint_id}' not found")
        return convert.state_json(empty_state(thread))
    with reading(request, thread):
        graph = engine.graph_for(thread.workflow)
        snapshot = graph.get_state(engine.config_for(thread.thread_id, checkpoint_id=checkpoint_id or ""))
    if checkpoint_id and (engine.checkpoint_id_of(snapshot) != checkpoint_id or snapshot.created_at is None):
        raise HttpError(404, f"Checkpoint '{checkpoint_id}' not found")
    return convert.state_json(snapshot)


# -- create, search, get ------------------------------------------------------------------------


@router.post("", response={200: schemas.Thread, **ERRORS})
def create(request: HttpRequest, payload: schemas.ThreadCreate) -> dict[str, Any]:
    """A NEW thread: no workflow until its first run names one (the SDK's graph_id stays in
    its metadata). A thread_id that exists is a 409, or with if_exists="do_nothing" that
    thread, if the key sees it."""
    refuse_unknown_query(request)
    thread: Thread | None = None
    if payload.thread_id is None or not Thread.objects.filter(public_id=payload.thread_id).exists():
        try:
            thread = services.create_thread(
                thread_id=payload.thread_id,
                metadata=payload.metadata or {},
                actor=request_user(request),
                data=key_data(request),
            )
        except services.BadStateUpdate as exc:
            raise refuse(["body", "payload", "metadata"], str(exc), payload.metadata) from None
        except services.ThreadExists:
            thread = None
    if thread is None:
        # Only a thread_id the client chose can be taken.
        assert payload.thread_id is not None
        existing = access.visible_threads(request).filter(public_id=payload.thread_id).first()
        if payload.if_exists != "do_nothing" or existing is None:
            raise HttpError(409, f"Thread '{payload.thread_id}' already exists")
        thread = existing
    return convert.thread_json(thread, head_of(request, thread))


def searched(request: HttpRequest, payload: schemas.ThreadSearch) -> QuerySet[Thread]:
    threads = access.visible_threads(request)
    if payload.ids is not None:
        threads = threads.filter(public_id__in=payload.ids)
    if payload.status is not None:
        threads = threads.filter(status__in=convert.THREAD_STATUSES_FOR[payload.status])
    # One JSON key lookup per key, not metadata__contains (which SQLite lacks); the key goes
    # in as a parameter, so a key like "a__in" is a key, not a lookup.
    for position, (key, value) in enumerate((payload.metadata or {}).items()):
        alias = f"metadata_{position}"
        threads = threads.alias(**{alias: KeyTransform(key, "metadata")}).filter(**{alias: value})
    field = SORT_FIELDS[payload.sort_by or "created_at"]
    descending = (payload.sort_order or "desc") == "desc"
    return threads.order_by(f"-{field}" if descending else field, "-id" if descending else "id")


@router.post("/search", response={200: list[schemas.ThreadFields], **ERRORS}, exclude_unset=True)
def search(
    request: HttpRequest, response: HttpResponse, payload: schemas.ThreadSearch
) -> list[dict[str, Any]]:
    """The threads the key sees, filtered, sorted (newest first by default) and paged."""
    refuse_unknown_query(request)
    threads = searched(request, payload)
    heads: dict[int, StateSnapshot | None] = {}
    end = payload.offset + payload.limit
    if payload.values:
        candidates = list(threads[: VALUES_SCAN_LIMIT + 1])
        if len(candidates) > VALUES_SCAN_LIMIT:
            raise refuse(
                ["body", "payload", "values"],
                f"a search by values reads at most {VALUES_SCAN_LIMIT} threads; narrow it with "
                "metadata, status or ids",
                payload.values,
            )
        wanted = convert.jsonable(payload.values)
        found = []
        for thread in candidates:
            heads[thread.pk] = head_or_none(request, thread)
            values = convert.thread_json(thread, heads[thread.pk])["values"]
            if isinstance(values, dict) and all(
                key in values and values[key] == value for key, value in wanted.items()
            ):
                found.append(thread)
        page, more = found[payload.offset : end], len(found) > end
    else:
        rows = list(threads[payload.offset : end + 1])
        page, more = rows[: payload.limit], len(rows) > payload.limit
    if more:
        response["X-Pagination-Next"] = str(end)
    fields = payload.select or list(get_args(schemas.ThreadField))
    needs_head = "values" in fields or "interrupts" in fields
    result = []
    for thread in page:
        head = (
            heads[thread.pk] if thread.pk in heads else head_or_none(request, thread) if needs_head else None
        )
        result.append(convert.only(fields, convert.thread_json(thread, head)))
    return result


@router.get("/{thread_id}", response={200: schemas.Thread, **ERRORS})
def get(request: HttpRequest, thread_id: str) -> dict[str, Any]:
    """The thread, with its head's values and pending interrupts by task id."""
    refuse_unknown_query(request)
    thread = access.thread_or_404(request, thread_id)
    return convert.thread_json(thread, head_of(request, thread))


# -- state ---------------------------------------------------------------------------------------


@router.get("/{thread_id}/state", response={200: schemas.ThreadState, **ERRORS})
def state(request: HttpRequest, thread_id: str, subgraphs: bool = False) -> dict[str, Any]:
    """The head's state."""
    refuse_unknown_query(request, "subgraphs")
    thread = access.thread_or_404(request, thread_id)
    refuse_subgraphs(request, thread, subgraphs, ["query", "subgraphs"])
    return state_at(request, thread, None)


@router.post("/{thread_id}/state/checkpoint", response={200: schemas.ThreadState, **ERRORS})
def state_at_checkpoint(
    request: HttpRequest, thread_id: str, payload: schemas.StateAtCheckpoint
) -> dict[str, Any]:
    """The state at the checkpoint the body names (what the SDK sends for get_state(checkpoint=))."""
    refuse_unknown_query(request)
    thread = access.thread_or_404(request, thread_id)
    refuse_subgraphs(request, thread, payload.subgraphs, ["body", "payload", "subgraphs"])
    checkpoint_id = checked_checkpoint_id(thread, payload.checkpoint, ["body", "payload", "checkpoint"])
    return state_at(request, thread, checkpoint_id)


@router.get("/{thread_id}/state/{checkpoint_id}", response={200: schemas.ThreadState, **ERRORS})
def state_at_checkpoint_id(
    request: HttpRequest, thread_id: str, checkpoint_id: str, subgraphs: bool = False
) -> dict[str, Any]:
    refuse_unknown_query(request, "subgraphs")
    thread = access.thread_or_404(request, thread_id)
    refuse_subgraphs(request, thread, subgraphs, ["query", "subgraphs"])
    return state_at(request, thread, checkpoint_id)


@router.post("/{thread_id}/state", response={200: schemas.StateUpdated, **ERRORS})
def update_state(request: HttpRequest, thread_id: str, payload: schemas.StateUpdate) -> dict[str, Any]:
    """LangGraph's update_state: the workflow's editable fields (typed, as a reviewer's edits),
    as if `as_node` had just run; from an earlier checkpoint it forks the thread, which needs
    the rollback permission. Agent Inbox's "mark as resolved" (values null, as_node
    "__end__") ends the thread and closes its reviews."""
    refuse_unknown_query(request)
    thread = access.thread_or_404(request, thread_id)
    named = checked_checkpoint_id(thread, payload.checkpoint, ["body", "payload", "checkpoint"])
    if named and payload.checkpoint_id and named != payload.checkpoint_id:
        raise refuse(
            ["body", "payload", "checkpoint_id"],
            "names another checkpoint than `checkpoint`",
            payload.checkpoint_id,
        )
    user = request_user(request)
    try:
        config = services.update_thread_state(
            thread=thread,
            actor=user,
            values=payload.values,
            as_node=payload.as_node,
            checkpoint_id=named or payload.checkpoint_id or "",
            may_fork=user.has_perm(access.PERMISSIONS["rollback"]),
            data=key_data(request),
        )
    except services.BadStateUpdate as exc:
        raise ValidationError(
            [
                {
                    "type": "value_error",
                    "loc": ["body", "payload", "as_node"]
                    if name == "as_node"
                    else ["body", "payload", "values", name],
                    "msg": message,
                }
                for name, message in exc.errors.items()
            ]
        ) from None
    except services.ForkNotAllowed:
        access.require(request, "rollback")
        raise
    except services.UnknownCheckpoint as exc:
        raise HttpError(404, str(exc)) from None
    except services.ServiceError as exc:
        raise HttpError(409, str(exc)) from None
    except engine.UNREADABLE as exc:
        services.report_unreadable_checkpoint(thread=thread, actor=user, error=exc)
        raise HttpError(409, UNREADABLE) from None
    checkpoint = convert.checkpoint_json(config)  # type: ignore[arg-type]
    return {"checkpoint": checkpoint}


# -- history and copy ------------------------------------------------------------------------------


@router.post("/{thread_id}/history", response={200: list[schemas.ThreadState], **ERRORS})
def history(request: HttpRequest, thread_id: str, payload: schemas.HistoryQuery) -> list[dict[str, Any]]:
    """The thread's checkpoints, newest first: at most `limit`, older than `before`, whose
    metadata has every key of `metadata`; `checkpoint` narrows them to that one."""
    refuse_unknown_query(request)
    thread = access.thread_or_404(request, thread_id)
    at = checked_checkpoint_id(thread, payload.checkpoint, ["body", "payload", "checkpoint"])
    if isinstance(payload.before, schemas.CheckpointIn):
        before_id = checked_checkpoint_id(thread, payload.before, ["body", "payload", "before"])
        if before_id is None:
            raise refuse(["body", "payload", "before", "checkpoint_id"], "is needed", None)
    else:
        before_id = payload.before or None
    if not thread.workflow:
        return []
    with reading(request, thread):
        graph = engine.graph_for(thread.workflow)
        snapshots = graph.get_state_history(
            engine.config_for(thread.thread_id, checkpoint_id=at or ""),
            filter=payload.metadata or None,
            before=engine.config_for(thread.thread_id, checkpoint_id=before_id) if before_id else None,
            limit=payload.limit,
        )
        return [convert.state_json(snapshot) for snapshot in snapshots]


@router.post("/{thread_id}/copy", response={200: schemas.Thread, **ERRORS})
def copy(request: HttpRequest, thread_id: str) -> dict[str, Any]:
    """A new thread with this one's workflow, metadata, status and checkpoints."""
    refuse_unknown_query(request)
    if request.body.strip() not in (b"", b"null", b"{}"):
        raise refuse(["body"], "a copy takes no body", request.body.decode(errors="replace")[:200])
    thread = access.thread_or_404(request, thread_id)
    try:
        copied = services.copy_thread(thread=thread, actor=request_user(request), data=key_data(request))
    except services.ServiceError as exc:
        raise HttpError(409, str(exc)) from None
    return convert.thread_json(copied, head_of(request, copied))
