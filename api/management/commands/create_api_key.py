"""`manage.py create_api_key USER [--expires DAYS] [--name NAME]`: make a key for USER and
print it, once (for scripts and deployments). Only its hash is stored."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from api import services
from workflows.services import ServiceError


class Command(BaseCommand):
    help = "Make an API key acting as USER and print it once; only its hash is kept."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("user", help="the username the key acts as")
        parser.add_argument(
            "--expires", type=int, metavar="DAYS", help="days until it expires (default: never)"
        )
        parser.add_argument(
            "--name", default="", help="what the key is for (default: made by create_api_key)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        username: str = options["user"]
        days: int | None = options["expires"]
        if days is not None and days < 1:
            raise CommandError("--expires must be a number of days, at least 1")
        user = User.objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user named {username!r}")
        try:
            new = services.create_api_key(
                user=user,
                name=options["name"] or f"made by create_api_key on {timezone.now():%Y-%m-%d}",
                expires_at=timezone.now() + timedelta(days=days) if days else None,
                actor=None,
                actor_label="system:create_api_key",
            )
        except ServiceError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(new.secret)
