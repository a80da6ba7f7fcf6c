"""What the approvals app announces, so the app above it (`api`) can react.

Sent inside the transaction that makes the change: a receiver's writes commit or roll back
with it, and anything it sends must wait for the commit (`transaction.on_commit`).
"""

from __future__ import annotations

from django.dispatch import Signal

# sender=Review, review=Review (its thread and run loaded): a review was opened for a pause.
review_opened = Signal()
