"""What the engine announces, so the apps above it (`approvals`, `api`) can react.

All are sent inside the transaction that makes the change, so whatever a receiver
writes (reviews, their audit events) commits or rolls back with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from django.dispatch import Signal


@dataclass(frozen=True)
class PendingInterrupt:
    """One pause waiting for a person: a dynamic `interrupt(value)` or a static breakpoint."""

    id: str
    node: str
    checkpoint_id: str
    value: Any
    # "interrupt" for interrupt(value), "breakpoint" for interrupt_before/after.
    kind: Literal["interrupt", "breakpoint"] = "interrupt"

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "node": self.node,
            "checkpoint_id": self.checkpoint_id,
            "value": self.value,
            "kind": self.kind,
        }


# sender=Thread, thread=Thread, run=Run or None, interrupts=list[PendingInterrupt]: the thread
# waits at these pauses. run is None when no run paused it: a state update or a copy through
# the HTTP API put the thread at a pause (workflows.services.update_thread_state, copy_thread).
thread_interrupted = Signal()
# sender=Thread, thread=Thread, actor=user or None, reason=str: the pending interrupts no
# longer apply (the thread was cancelled, rolled back or completed), so their reviews must close.
interrupts_withdrawn = Signal()
# sender=Run, run=Run (its `thread` loaded and locked): the run is over (succeeded,
# interrupted, failed or cancelled) and its thread's status is already set; the API's webhooks
# queue their deliveries here, to be published once the change commits.
run_ended = Signal()
