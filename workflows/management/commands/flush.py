"""Django's `flush`, able to empty the append-only audit table on PostgreSQL.

The audit trigger refuses TRUNCATE unless the session says otherwise; flushing the
whole database (tests do it between cases) is the one sanctioned way to remove audit
rows, so this command says so for its own session only. The trigger heeds the setting only
from a role with the table owner's privileges (migration 0006), which tests run as.
"""

from __future__ import annotations

from typing import Any

from django.core.management.commands.flush import Command as FlushCommand
from django.db import connections


class Command(FlushCommand):
    def handle(self, **options: Any) -> None:
        connection = connections[options["database"]]
        postgres = connection.vendor == "postgresql"
        if postgres:
            with connection.cursor() as cursor:
                cursor.execute("SET signoff.allow_audit_truncate = 'on'")
        try:
            super().handle(**options)
        finally:
            if postgres:
                with connection.cursor() as cursor:
                    cursor.execute("RESET signoff.allow_audit_truncate")
