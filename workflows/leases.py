"""The checkpoint fence over Signoff's `Run` table (see workflows.checkpointer.fence).

A fenced write renews its run's lease with `UPDATE run ... WHERE lease_token = <ours>`;
a run that was cancelled, released or taken over by another worker matches no row.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any, cast

from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.utils import timezone

from workflows.checkpointer.fence import Lease
from workflows.models import Run


class RunLeaseFence:
    def statement(self, conn: BaseDatabaseWrapper, lease: Lease) -> tuple[str, list[Any]]:
        expires_field = cast(models.Field[Any, Any], Run._meta.get_field("lease_expires_at"))
        token_field = cast(models.Field[Any, Any], Run._meta.get_field("lease_token"))
        mark = "%s" if conn.vendor == "postgresql" else "?"
        expires = timezone.now() + timedelta(seconds=lease.seconds)
        sql = (
            f"UPDATE {Run._meta.db_table} SET lease_expires_at = {mark} "
            f"WHERE id = {mark} AND lease_token = {mark} AND status = 'running'"
        )
        return sql, [
            expires_field.get_db_prep_value(expires, conn),
            lease.run_id,
            token_field.get_db_prep_value(uuid.UUID(lease.token), conn),
        ]
