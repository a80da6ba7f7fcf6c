"""`manage.py audit_head`: print the audit trail's head (signed) for staff to keep; `--save`
also writes it where `verify_audit` looks, as beat does every SIGNOFF_AUDIT_HEAD_SECONDS."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from workflows import audit


class Command(BaseCommand):
    help = (
        "Print the audit trail's head: how many events, the last id and its hash, signed with "
        "SIGNOFF_AUDIT_KEY. Keep it; `verify_audit --head FILE` shows if events were removed since."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--save",
            action="store_true",
            help="also write it to --file (refused if the head already there no longer matches)",
        )
        parser.add_argument("--file", help="where --save writes (default: SIGNOFF_AUDIT_HEAD_FILE)")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["save"]:
            try:
                head = audit.save_head(options["file"])
            except audit.HeadError as exc:
                raise CommandError(str(exc)) from exc
        else:
            head = audit.current_head()
        self.stdout.write(head.line())
