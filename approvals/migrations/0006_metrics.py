"""Review.first_claimed_at, for the metrics' time to first claim, backfilled from the audit
trail's `review.claimed` events (the first one of each review)."""

from typing import Any

from django.db import migrations, models


def backfill(apps: Any, schema_editor: Any) -> None:
    Review = apps.get_model("approvals", "Review")
    AuditEvent = apps.get_model("workflows", "AuditEvent")
    # The event's data may be sealed, so the review id is read in Python, not filtered on;
    # only claim events are read, oldest first, so the first one seen per review wins.
    first: dict[int, Any] = {}
    events = AuditEvent.objects.filter(action="review.claimed").order_by("id")
    for created_at, data in events.values_list("created_at", "data").iterator(chunk_size=2000):
        review = data.get("review") if isinstance(data, dict) else None
        if isinstance(review, int) and review not in first:
            first[review] = created_at
    for pk, when in first.items():
        Review.objects.filter(pk=pk, first_claimed_at__isnull=True).update(first_claimed_at=when)


class Migration(migrations.Migration):
    dependencies = [
        ("approvals", "0005_links"),
        ("workflows", "0008_api_fields"),
    ]

    operations = [
        migrations.AddField(
            model_name="review",
            name="first_claimed_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
