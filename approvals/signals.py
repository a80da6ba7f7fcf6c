"""What the approvals app announces, so the app above it (`api`) can react.

Sent inside the transaction that makes the change: a receiver's writes commit or roll back
with it, and anything it sends must wait for the commit (`transaction.on_commit`).
"""

from __future__ import annotations

from django.dispatch import Signal

# sender=Review, review=Review (its thread and run loaded): a review was opened for a pause.
review_opened = Signal()

# The review policies (issue 12). Each is sent inside the transaction that makes the change;
# notifications (emails, webhooks) are queued from their receivers with on_commit.

# sender=Review, review=Review, from_group=str, to_group=str, previous_holder=User | None: the
# deadline passed and the review moved to another group (the old claim ended).
review_escalated = Signal()
# sender=Review, review=Review: the review is past its due time and still open (sent once per
# review by the deadline sweep, and again with each `remind` of the workflow's policy).
review_overdue = Signal()
# sender=Review, review=Review: the review is due within SIGNOFF_DUE_SOON_HOURS and claimed;
# the claimant is told once.
review_due_soon = Signal()
# sender=Review, review=Review, user=User: a follow-up date the claimant set has come.
review_follow_up = Signal()
# sender=Review, review=Review, previous_holder=User | None, new_holder=User | None, actor=User:
# a lead, an admin or the holder took over, reassigned or handed on a claimed review.
review_reassigned = Signal()
