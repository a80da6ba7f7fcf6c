"""`manage.py ensure_demo_users`: the demo login that `make run` prints, in DEBUG only."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

# (username, password): a superuser each. Only ever created with DEBUG on.
DEMO_USERS = [("admin", "admin")]


class Command(BaseCommand):
    help = "Create the demo superuser admin/admin (or restore it); refused unless DJANGO_DEBUG is on."

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEBUG:
            raise CommandError("refusing to create demo users with DJANGO_DEBUG off")
        user_model = get_user_model()
        for username, password in DEMO_USERS:
            user = user_model.objects.filter(username=username).first()
            if user is None:
                user_model.objects.create_superuser(username=username, email="", password=password)
                how = "created"
            elif user.is_superuser and user.is_active and user.check_password(password):
                how = "already there"
            else:
                user.is_superuser = user.is_staff = user.is_active = True
                user.set_password(password)
                user.save()
                how = "restored"
            self.stdout.write(f"demo login: {username} / {password} ({how})")
