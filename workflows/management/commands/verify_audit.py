"""`manage.py verify_audit`: check the audit trail from the first event to the last, and
against the head saved earlier."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from workflows import audit


class Command(BaseCommand):
    help = (
        "Walk the audit chain and compare it with a saved head; fail naming what is wrong (truncated, "
        "tampered, rewritten, broken chain, forged head) and the event."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--head",
            help="a head saved by `audit_head` (or a log line with one); default: SIGNOFF_AUDIT_HEAD_FILE",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        path = options["head"] or settings.SIGNOFF_AUDIT_HEAD_FILE
        head = None
        if options["head"] or path.exists():
            try:
                head = audit.read_head(path)
            except audit.HeadError as exc:
                raise CommandError(str(exc)) from exc
        checked, broken = audit.verify_audit_chain(head=head)
        if broken is not None:
            raise CommandError(
                f"audit trail: {broken.kind} at event {broken.event_id}: {broken.reason} "
                f"({checked} intact before it)"
            )
        self.stdout.write(f"OK: {checked} events, chain intact")
        if head is None:
            self.stderr.write(
                f"No saved head at {path}: events removed from the end would not show. "
                "Save one with `manage.py audit_head --save` (beat does it) and keep copies."
            )
        elif head.events:
            self.stdout.write(
                f"It matches the head of {head.events} events up to event {head.last_id} "
                f"saved {head.at} ({path})"
            )
