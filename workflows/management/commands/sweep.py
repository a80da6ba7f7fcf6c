"""`manage.py sweep`: what beat runs every SIGNOFF_SWEEP_SECONDS, once, by hand."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from workflows import services


class Command(BaseCommand):
    help = (
        "Republish queued runs whose message went missing, requeue runs whose lease expired, "
        "and fail those out of attempts; prints the counts."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        result = services.sweep()
        for label, ids in (
            ("republished", result.republished),
            ("reclaimed", result.reclaimed),
            ("failed", result.failed),
        ):
            runs = f" (runs {', '.join(map(str, ids))})" if ids else ""
            self.stdout.write(f"{label}: {len(ids)}{runs}")
