"""Leases and the fence that checks them: a run's checkpoint writes commit only while it
still holds its lease.

The saver knows nothing of the table that records leases. A `Fence` gives it one SQL
statement that renews the lease if (and only if) the writer still holds it; the saver runs
that statement first, in the same transaction as the write, and refuses the write unless
it matched one row. The row lock it takes orders the write before any takeover. Signoff's
fence over its `Run` table is `workflows.leases.RunLeaseFence`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from django.db.backends.base.base import BaseDatabaseWrapper
from langchain_core.runnables import RunnableConfig

# The key in `config["configurable"]` that carries a run's lease into every write.
# LangGraph passes `__`-prefixed keys to the saver but keeps them out of metadata.
LEASE_KEY = "__signoff_lease"


class LeaseLost(RuntimeError):
    """The run writing this checkpoint no longer holds its lease: the write is refused."""


@dataclass(frozen=True)
class Lease:
    run_id: int
    token: str
    seconds: float

    def as_configurable(self) -> dict[str, Any]:
        return {LEASE_KEY: {"run_id": self.run_id, "token": self.token, "seconds": self.seconds}}


def lease_of(config: RunnableConfig) -> Lease | None:
    value = config["configurable"].get(LEASE_KEY)
    if value is None:
        return None
    return Lease(int(value["run_id"]), str(value["token"]), float(value["seconds"]))


class NoFence(RuntimeError):
    """A leased write reached a saver built without a fence: refused, since a write whose
    lease nobody checks could land after another worker took the run over (invariant 3)."""


class Fence(Protocol):
    def statement(self, conn: BaseDatabaseWrapper, lease: Lease) -> tuple[str, list[Any]]:
        """SQL (DB-API placeholders of `conn`'s driver: `%s` on PostgreSQL, `?` on SQLite)
        that renews `lease` and matches exactly one row while it is still held."""
        ...
