"""`manage.py retry_thread THREAD`: run a failed thread again from its last checkpoint."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from workflows import services
from workflows.management.threads import find_thread


class Command(BaseCommand):
    help = "Queue a retry of a failed thread (only the node that failed runs again); prints the run's id."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("thread", help="the thread's public id (UUID)")

    def handle(self, *args: Any, **options: Any) -> None:
        thread = find_thread(options["thread"])
        try:
            run = services.retry_thread(thread=thread, actor=None)
        except services.ServiceError as exc:
            raise CommandError(f"cannot retry thread {thread.public_id}: {exc}") from None
        self.stdout.write(str(run.pk))
