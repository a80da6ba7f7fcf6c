"""Which checkpoints a thread may be rolled back to: one rule
(workflows.services.rollback_refusal) that the service, the admin's preview and its
timeline's links ask. Not the head (a rollback would only copy it), not the input checkpoint
(its state is still empty)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from approvals import queries
from tests.factories import head, row_counts
from workflows import engine, services
from workflows.models import Thread
from workflows.services import InvalidState

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("doorbell")]


def test_the_head_and_the_input_are_refused_and_every_other_checkpoint_is_not():
    input_metadata = {"source": "input", "step": -1}

    assert "the thread's input" in (
        services.rollback_refusal(checkpoint_id="a", metadata=input_metadata, head_id="b") or ""
    )
    assert "the thread's head" in (
        services.rollback_refusal(checkpoint_id="b", metadata={"source": "loop"}, head_id="b") or ""
    )
    assert services.rollback_refusal(checkpoint_id="a", metadata={"source": "loop"}, head_id="b") is None


def test_a_rollback_to_the_head_is_refused_and_writes_nothing(expense: Thread, admin: User):
    head_id = engine.checkpoint_id_of(head(expense))
    before = row_counts()

    with pytest.raises(InvalidState, match="the thread's head; a rollback to it would only copy it"):
        services.rollback_thread(thread=expense, actor=admin, checkpoint_id=head_id, reason="again")

    assert row_counts() == before


def test_the_preview_and_the_timeline_offer_exactly_the_checkpoints_the_service_takes(expense: Thread):
    timeline = queries.timeline(expense)
    head_id = timeline[0].entry.checkpoint_id

    for item in timeline:
        refusal = services.rollback_refusal(
            checkpoint_id=item.entry.checkpoint_id, metadata=item.entry.metadata, head_id=head_id
        )
        assert item.can_roll_back is (refusal is None)
        assert (queries.rollback_preview(expense, item.entry.checkpoint_id) is not None) is item.can_roll_back
    assert [item.can_roll_back for item in timeline].count(False) == 2
