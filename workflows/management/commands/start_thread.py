"""`manage.py start_thread WORKFLOW --input JSON`: start a thread and print its id."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from workflows import registry, services

JSON_KINDS: dict[type, str] = {
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "true/false",
    type(None): "null",
}


class Command(BaseCommand):
    help = "Start a thread of a registered workflow with a JSON object as input; prints the thread's id."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("workflow", help="a registered workflow's name, e.g. expense_approval")
        parser.add_argument(
            "--input", default="{}", help='the input state as a JSON object, e.g. {"count": 0}'
        )
        parser.add_argument("--title", default="", help="a title for the thread (default: the workflow's)")

    def handle(self, *args: Any, **options: Any) -> None:
        workflow: str = options["workflow"]
        try:
            registry.get(workflow)
        except LookupError as exc:
            raise CommandError(str(exc)) from None
        try:
            data = json.loads(options["input"])
        except json.JSONDecodeError as exc:
            raise CommandError(f"--input is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            kind = JSON_KINDS.get(type(data), type(data).__name__)
            raise CommandError(f"--input must be a JSON object of state fields, not {kind}")
        try:
            thread = services.start_thread(workflow=workflow, input=data, actor=None, title=options["title"])
        except services.ServiceError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(thread.thread_id)
