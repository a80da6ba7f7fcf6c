"""Signoff's threads, runs and LangGraph's snapshots in the shapes langgraph_sdk reads
(`langgraph_sdk.schema`: Thread, ThreadState, ThreadTask, Checkpoint, Interrupt, Run).

Pure functions: they read nothing from the database themselves, so every endpoint decides
what it fetches (one head snapshot per thread at most).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from langchain_core.runnables import RunnableConfig
from langgraph.types import Interrupt, StateSnapshot

# `jsonable` is the engine's (workflows.jsonable): what the worker streams and what the API
# answers are written the same way. Routers import it from here.
from workflows.jsonable import jsonable as jsonable
from workflows.models import Run, Thread, error_summary

ThreadStatus = Literal["idle", "busy", "interrupted", "error"]
RunStatus = Literal["pending", "running", "error", "success", "timeout", "interrupted"]

THREAD_STATUS: dict[str, ThreadStatus] = {
    Thread.Status.NEW: "idle",
    Thread.Status.QUEUED: "busy",
    Thread.Status.RUNNING: "busy",
    Thread.Status.INTERRUPTED: "interrupted",
    Thread.Status.COMPLETED: "idle",
    Thread.Status.CANCELLED: "idle",
    Thread.Status.FAILED: "error",
}

# The Signoff statuses behind each of LangGraph's, for POST /threads/search.
THREAD_STATUSES_FOR: dict[ThreadStatus, list[str]] = {
    api: [ours for ours, theirs in THREAD_STATUS.items() if theirs == api]
    for api in ("idle", "busy", "interrupted", "error")
}

# A run that stopped at an interrupt did what was asked of it: LangGraph's server reports it as
# "success" (the thread is "interrupted"); "interrupted" is a run that was cancelled.
RUN_STATUS: dict[str, RunStatus] = {
    Run.Status.PENDING: "pending",
    Run.Status.QUEUED: "pending",
    Run.Status.RUNNING: "running",
    Run.Status.SUCCEEDED: "success",
    Run.Status.INTERRUPTED: "success",
    Run.Status.FAILED: "error",
    Run.Status.CANCELLED: "interrupted",
}


def thread_status(thread: Thread) -> ThreadStatus:
    return THREAD_STATUS[thread.status]


def run_status(run: Run) -> RunStatus:
    return RUN_STATUS[run.status]


def interrupt_json(interrupt: Interrupt) -> dict[str, Any]:
    return {"value": jsonable(interrupt.value), "id": interrupt.id}


def checkpoint_json(config: RunnableConfig | None) -> dict[str, Any] | None:
    if not config:
        return None
    configurable = config.get("configurable", {})
    return {
        "thread_id": str(configurable.get("thread_id", "")),
        "checkpoint_ns": str(configurable.get("checkpoint_ns", "")),
        "checkpoint_id": configurable.get("checkpoint_id"),
        "checkpoint_map": configurable.get("checkpoint_map"),
    }


def interrupts_by_task(snapshot: StateSnapshot | None) -> dict[str, list[dict[str, Any]]]:
    """`Thread.interrupts`: the head's pending interrupts, keyed by the task that raised them."""
    if snapshot is None:
        return {}
    return {
        task.id: [interrupt_json(interrupt) for interrupt in task.interrupts]
        for task in snapshot.tasks
        if task.interrupts
    }


def state_json(snapshot: StateSnapshot) -> dict[str, Any]:
    """A `ThreadState`: one checkpoint of a thread."""
    tasks = [
        {
            "id": task.id,
            "name": task.name,
            "error": task.error if task.error is None else repr(task.error),
            "interrupts": [interrupt_json(interrupt) for interrupt in task.interrupts],
            "checkpoint": None,
            "state": None,
            "result": jsonable(task.result) if task.result is not None else None,
        }
        for task in snapshot.tasks
    ]
    return {
        "values": jsonable(snapshot.values),
        "next": list(snapshot.next),
        "checkpoint": checkpoint_json(snapshot.config),
        "metadata": jsonable(snapshot.metadata or {}),
        "created_at": snapshot.created_at,
        "parent_checkpoint": checkpoint_json(snapshot.parent_config),
        "tasks": tasks,
        "interrupts": [interrupt_json(interrupt) for interrupt in snapshot.interrupts],
    }


def thread_json(thread: Thread, head: StateSnapshot | None) -> dict[str, Any]:
    """A `Thread`, with the head's values and pending interrupts (None for a NEW thread, whose
    values are empty)."""
    return {
        "thread_id": thread.thread_id,
        "created_at": thread.created_at,
        "updated_at": thread.updated_at,
        "metadata": thread.metadata,
        "status": thread_status(thread),
        "values": jsonable(head.values) if head is not None else {},
        "interrupts": interrupts_by_task(head),
    }


def run_json(run: Run, *, thread: Thread) -> dict[str, Any]:
    """A `Run`; `thread` is passed so a list of runs costs no query per row."""
    return {
        "run_id": str(run.public_id),
        "thread_id": thread.thread_id,
        "assistant_id": thread.workflow,
        "created_at": run.created_at,
        "updated_at": run.finished_at or run.started_at or run.created_at,
        "status": run_status(run),
        "metadata": run.metadata,
        "multitask_strategy": run.multitask_strategy,
        "kwargs": {},
    }


def only(fields: Iterable[str] | None, item: dict[str, Any]) -> dict[str, Any]:
    """The item with only the fields a `select` asked for (all of them without one)."""
    return item if fields is None else {name: item[name] for name in fields if name in item}


def error_json(error: str) -> dict[str, str]:
    """A failed run's error as LangGraph's server sends it (`__error__` of /wait, the `error`
    event of a stream): the exception's class name and its message, from the traceback's last line."""
    last = error_summary(error) or "the run failed"
    name, sep, message = last.partition(": ")
    if sep and name.replace(".", "").replace("_", "").isalnum():
        return {"error": name.rsplit(".", 1)[-1], "message": message}
    return {"error": "RunFailed", "message": last}
