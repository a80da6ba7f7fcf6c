"""`manage.py thread_status THREAD`: one thread as JSON, from our tables and LangGraph's state.

In approvals, not workflows: it shows the thread's open reviews, and the engine names nothing
of the app above it.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from approvals.models import Review
from workflows import engine
from workflows.management.threads import find_thread


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
        reviews = Review.objects.filter(thread=thread, status=Review.Status.OPEN).order_by("id")
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
