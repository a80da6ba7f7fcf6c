"""The audit chain becomes keyed (HMAC-SHA256 with SIGNOFF_AUDIT_KEY), and only the table's
owner can lift the append-only guard.

- `scheme` says how each event was hashed. Existing events keep their plain SHA-256 hashes
  ("sha256"): the trigger forbids rewriting them, and nothing needs to. Adding the column with a
  default is ALTER TABLE, not UPDATE, so the trigger lets it be.
- If there are events, one keyed event (`audit.keyed`) is appended now. Its HMAC covers the
  last plain hash, which seals every plain event before it: `verify_audit` accepts plain events
  only when a keyed one follows them, so a trail rehashed without the key cannot pass.
- The guard (0003) let any session that set `signoff.allow_audit_truncate` truncate the table,
  and any role can set a custom variable. Now the variable counts only for a role with the
  privileges of the table's owner: the role migrations run as, which tests use to flush between
  cases, and which could drop the trigger anyway.

Reversing restores the old guard and drops the column; the `audit.keyed` event stays (the
trigger forbids deleting it), and the old, unkeyed verifier will report it as changed.
"""

from django.conf import settings
from django.db import migrations, models
from django.utils import timezone

from workflows.audit import KEYED, event_hash

GUARD = """
CREATE OR REPLACE FUNCTION signoff_audit_append_only() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'TRUNCATE'
       AND current_setting('signoff.allow_audit_truncate', true) = 'on'
       AND pg_has_role(current_user, (SELECT relowner FROM pg_class WHERE oid = TG_RELID), 'USAGE') THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'audit events are append-only: % on workflows_auditevent is refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
"""

OLD_GUARD = """
CREATE OR REPLACE FUNCTION signoff_audit_append_only() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' AND current_setting('signoff.allow_audit_truncate', true) = 'on' THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'audit events are append-only: % on workflows_auditevent is refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
"""

AUDIT_LOCK = 0x5160FF


def guard(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(GUARD, params=None)


def unguard(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(OLD_GUARD, params=None)


def seal_plain_events(apps, schema_editor):
    AuditEvent = apps.get_model("workflows", "AuditEvent")
    db = schema_editor.connection.alias
    if schema_editor.connection.vendor == "postgresql":
        with schema_editor.connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [AUDIT_LOCK])
    last = AuditEvent.objects.using(db).order_by("-id").first()
    if last is None or last.scheme == KEYED:
        return
    data = {"legacy_events": AuditEvent.objects.using(db).count()}
    created_at = timezone.now()
    seal = AuditEvent(
        actor_label="system:migrate",
        action="audit.keyed",
        data=data,
        created_at=created_at,
        prev_hash=last.hash,
        scheme=KEYED,
    )
    seal.hash = event_hash(
        prev_hash=last.hash,
        actor_label=seal.actor_label,
        actor_id=None,
        action=seal.action,
        thread_id=None,
        run_id=None,
        data=data,
        created_at=created_at,
        key=settings.SIGNOFF_AUDIT_KEY,
    )
    seal.save(using=db, force_insert=True)


class Migration(migrations.Migration):
    dependencies = [("workflows", "0005_audit_indexes")]

    operations = [
        migrations.AddField(
            model_name="auditevent",
            name="scheme",
            field=models.CharField(default="sha256", editable=False, max_length=16),
            preserve_default=False,
        ),
        migrations.RunPython(seal_plain_events, migrations.RunPython.noop, elidable=False),
        migrations.RunPython(guard, unguard, elidable=False),
    ]
