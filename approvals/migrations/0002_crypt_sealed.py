"""A review's payload and a decision's edits, answer and comment become sealed text columns.

A type change only (jsonb to text on PostgreSQL): rows keep their content; new rows are
sealed when SIGNOFF_ENCRYPTION_KEY is set (workflows/sealed.py).
"""

from django.db import migrations

import workflows.sealed


class Migration(migrations.Migration):
    dependencies = [
        ("approvals", "0001_initial"),
    ]

    operations = [
        migrations.AlterField(
            model_name="decision",
            name="comment",
            field=workflows.sealed.SealedTextField(blank=True),
        ),
        migrations.AlterField(
            model_name="decision",
            name="response",
            field=workflows.sealed.SealedJSONField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name="decision",
            name="updates",
            field=workflows.sealed.SealedJSONField(blank=True, default=dict),
        ),
        migrations.AlterField(
            model_name="review",
            name="value",
            field=workflows.sealed.SealedJSONField(blank=True, default=dict),
        ),
    ]
