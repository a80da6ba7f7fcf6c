"""`manage.py thread_status THREAD`: one thread as JSON, from our tables and LangGraph's state."""

from __future__ import annotations

import json
import uuid
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from workflows import engine
from workflows.models import Thread


def find_thread(value: str) -> Thread:
    """The thread with this public id, or a CommandError saying what is wrong with it."""
    try:
        public_id = uuid.UUID(value)
    except ValueError:
        raise CommandError(f"{value!r} is not a thread id (a UUID, as start_thread prints)") from None
    thread = Thread.objects.filter(public_id=public_id).first()
    if thread is None:
        raise CommandError(f"there is no thread {public_id}")
    return thread


class Command(BaseCommand):
    help = "Print a thread's status, LangGraph state, open reviews and runs as JSON."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("thread", help="the thread's public id (UUID)")

    def handle(self, *args: Any, **options: Any) -> None:
        thread = find_thread(options["thread"])
        try:
            snapshot = engine.head(thread.workflow, thread.thread_id)
        except LookupError as exc:
            raise CommandError(f"cannot read thread {thread.public_id}'s state: {exc}") from None
        # The reverse relation from approvals' Review: the engine names no approvals module.
        reviews = thread.reviews.filter(status="open").order_by("id")
        status = {
            "thread": thread.thread_id,
            "workflow": thread.workflow,
            "title": thread.title,
            "status": thread.status,
            "error": thread.error,
            "next": list(snapshot.next),
            "values": snapshot.values,
            "checkpoint_id": engine.checkpoint_id_of(snapshot),
            "open_reviews": [
                {
                    "id": review.pk,
                    "node": review.node,
                    "kind": review.kind,
                    "interrupt_id": review.interrupt_id,
                    "checkpoint_id": review.checkpoint_id,
                    "value": review.value,
                }
                for review in reviews
            ],
            "runs": [
                {
                    "id": run.pk,
                    "kind": run.kind,
                    "status": run.status,
                    "attempts": run.attempts,
                    "error": run.error,
                }
                for run in thread.runs.order_by("id")
            ],
        }
        self.stdout.write(json.dumps(status, indent=2, default=str))
