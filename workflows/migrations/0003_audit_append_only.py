"""On PostgreSQL, audit rows cannot be updated, deleted or truncated, whatever the client.

`manage.py flush` (which tests use between cases) may truncate them: it sets
`signoff.allow_audit_truncate` for its own session; see workflows/management/commands/flush.py.
"""

from django.db import migrations

GUARD = """
CREATE OR REPLACE FUNCTION signoff_audit_append_only() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' AND current_setting('signoff.allow_audit_truncate', true) = 'on' THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'audit events are append-only: % on workflows_auditevent is refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER workflows_auditevent_no_update_delete
    BEFORE UPDATE OR DELETE ON workflows_auditevent
    FOR EACH ROW EXECUTE FUNCTION signoff_audit_append_only();
CREATE TRIGGER workflows_auditevent_no_truncate
    BEFORE TRUNCATE ON workflows_auditevent
    FOR EACH STATEMENT EXECUTE FUNCTION signoff_audit_append_only();
"""

UNGUARD = """
DROP TRIGGER IF EXISTS workflows_auditevent_no_truncate ON workflows_auditevent;
DROP TRIGGER IF EXISTS workflows_auditevent_no_update_delete ON workflows_auditevent;
DROP FUNCTION IF EXISTS signoff_audit_append_only();
"""


def guard(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(GUARD, params=None)


def unguard(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(UNGUARD, params=None)


class Migration(migrations.Migration):
    dependencies = [("workflows", "0002_runtime")]

    operations = [migrations.RunPython(guard, unguard, elidable=False)]
