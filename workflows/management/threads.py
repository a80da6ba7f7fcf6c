"""What the management commands share: finding the thread a command names."""

from __future__ import annotations

import uuid

from django.core.management.base import CommandError

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
