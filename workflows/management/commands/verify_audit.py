"""`manage.py verify_audit`: check the audit trail's hash chain from the first event to the last."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from workflows import services


class Command(BaseCommand):
    help = (
        "Walk the audit chain; fail naming the first event that does not fit (edited, deleted or inserted)."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        checked, broken = services.verify_audit_chain()
        if broken is not None:
            raise CommandError(
                f"audit chain broken at event {broken.event_id}: {broken.reason} ({checked} intact before it)"
            )
        self.stdout.write(f"OK: {checked} events, chain intact")
