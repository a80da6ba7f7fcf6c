"""Indexes for the audit trail page's date range and actor filters.

Adding an index is neither UPDATE, DELETE nor TRUNCATE: the append-only trigger (0003) lets it be.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("workflows", "0004_thread_operation_permissions"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="auditevent",
            index=models.Index(fields=["created_at"], name="audit_created"),
        ),
        migrations.AddIndex(
            model_name="auditevent",
            index=models.Index(fields=["actor_label", "id"], name="audit_actor"),
        ),
    ]
