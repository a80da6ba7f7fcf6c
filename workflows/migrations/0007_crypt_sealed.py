"""Thread input and error, run command and error, and audit data become sealed text columns.

On PostgreSQL the jsonb columns become text (`ALTER COLUMN ... TYPE text USING ...::text`);
the audit table's append-only trigger guards rows against UPDATE, DELETE and TRUNCATE, and an
ALTER TABLE fires no row trigger, so the audit rows keep their content (and their hashes,
which are computed over the parsed JSON). Nothing is encrypted here: rows stay as they were
written, and new rows are sealed when SIGNOFF_ENCRYPTION_KEY is set (workflows/sealed.py).
"""

from django.db import migrations

import workflows.sealed


class Migration(migrations.Migration):
    dependencies = [
        ("workflows", "0006_audit_keyed_chain"),
    ]

    operations = [
        migrations.AlterField(
            model_name="auditevent",
            name="data",
            field=workflows.sealed.SealedJSONField(blank=True, default=dict, plaintext_ok=True),
        ),
        migrations.AlterField(
            model_name="run",
            name="command",
            field=workflows.sealed.SealedJSONField(blank=True, default=dict),
        ),
        migrations.AlterField(
            model_name="run",
            name="error",
            field=workflows.sealed.SealedTextField(blank=True),
        ),
        migrations.AlterField(
            model_name="thread",
            name="error",
            field=workflows.sealed.SealedTextField(blank=True),
        ),
        migrations.AlterField(
            model_name="thread",
            name="input",
            field=workflows.sealed.SealedJSONField(blank=True, default=dict),
        ),
    ]
