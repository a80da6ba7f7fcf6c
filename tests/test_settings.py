import base64
import os
import shlex
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from config.settings import BASE_DIR, audit_key, database_from_url, encryption_key


@pytest.fixture(autouse=True)
def default_pool_settings(monkeypatch):
    monkeypatch.delenv("DATABASE_POOL_SIZE", raising=False)
    monkeypatch.delenv("DATABASE_CONN_MAX_AGE", raising=False)
    monkeypatch.delenv("DATABASE_POOL_TIMEOUT", raising=False)
    monkeypatch.delenv("DATABASE_CONNECT_TIMEOUT", raising=False)


def test_a_relative_sqlite_path_is_relative_to_the_project():
    db = database_from_url("sqlite:///var/demo.sqlite3")

    assert db["ENGINE"] == "django.db.backends.sqlite3"
    assert db["NAME"] == str(BASE_DIR / "var" / "demo.sqlite3")


def test_an_absolute_sqlite_path_is_kept():
    db = database_from_url("sqlite:////srv/signoff/db.sqlite3")

    assert db["NAME"] == "/srv/signoff/db.sqlite3"


def test_the_sqlite_test_database_is_a_file_beside_the_real_one():
    db = database_from_url("sqlite:////srv/signoff/db.sqlite3")

    assert db["TEST"]["NAME"] == "/srv/signoff/test-db.sqlite3"


def test_sqlite_runs_in_wal_mode_with_immediate_transactions():
    options = database_from_url("sqlite:///var/demo.sqlite3")["OPTIONS"]

    assert options["transaction_mode"] == "IMMEDIATE"
    assert "PRAGMA journal_mode=WAL;" in options["init_command"]
    assert "PRAGMA busy_timeout=20000;" in options["init_command"]
    assert "PRAGMA foreign_keys=ON;" in options["init_command"]


def test_a_sqlite_url_without_a_path_is_refused():
    with pytest.raises(ImproperlyConfigured, match="needs a file path"):
        database_from_url("sqlite:///")


def test_a_postgres_url_is_parsed_into_a_pooled_connection():
    db = database_from_url("postgres://signoff:s%40cret@db.example.com:6543/signoff_prod?sslmode=require")

    assert db["ENGINE"] == "django.db.backends.postgresql"
    assert db["NAME"] == "signoff_prod"
    assert db["USER"] == "signoff"
    assert db["PASSWORD"] == "s@cret"
    assert db["HOST"] == "db.example.com"
    assert db["PORT"] == "6543"
    assert db["CONN_MAX_AGE"] == 0
    assert db["OPTIONS"]["pool"] == {"min_size": 2, "max_size": 10, "timeout": 5}
    assert db["OPTIONS"]["sslmode"] == "require"


# Explicit ids: a bare "postgres" id would read as the `postgres` marker and skip on SQLite.
@pytest.mark.parametrize("scheme", ["postgres", "postgresql", "pgsql"], ids=lambda s: f"scheme-{s}")
def test_every_postgres_scheme_spelling_is_accepted(scheme):
    db = database_from_url(f"{scheme}://postgres@127.0.0.1/signoff")

    assert db["ENGINE"] == "django.db.backends.postgresql"
    assert db["USER"] == "postgres"
    assert db["PORT"] == ""


def test_the_pool_size_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("DATABASE_POOL_SIZE", "25")

    db = database_from_url("postgres://postgres@127.0.0.1:5432/signoff")

    assert db["OPTIONS"]["pool"]["max_size"] == 25


def test_a_pool_size_of_zero_uses_persistent_connections_instead(monkeypatch):
    monkeypatch.setenv("DATABASE_POOL_SIZE", "0")
    monkeypatch.setenv("DATABASE_CONN_MAX_AGE", "60")

    db = database_from_url("postgres://postgres@127.0.0.1:5432/signoff")

    assert "pool" not in db["OPTIONS"]
    assert db["CONN_MAX_AGE"] == 60


def test_a_pool_size_that_is_not_a_number_is_refused(monkeypatch):
    monkeypatch.setenv("DATABASE_POOL_SIZE", "lots")

    with pytest.raises(ImproperlyConfigured, match="DATABASE_POOL_SIZE must be a whole number, got 'lots'"):
        database_from_url("postgres://postgres@127.0.0.1:5432/signoff")


@pytest.mark.parametrize("size", ["1", "3"])
def test_a_pool_too_small_for_the_savers_write_connections_is_refused(monkeypatch, size):
    monkeypatch.setenv("DATABASE_POOL_SIZE", size)

    with pytest.raises(ImproperlyConfigured, match="at least 4"):
        database_from_url("postgres://postgres@127.0.0.1:5432/signoff")


def test_an_unsupported_database_scheme_is_refused_with_the_supported_ones():
    with pytest.raises(ImproperlyConfigured) as refused:
        database_from_url("mysql://root@127.0.0.1/signoff")

    assert str(refused.value) == (
        "DATABASE_URL scheme 'mysql' is not supported: use sqlite:/// or postgres://"
    )


def test_no_encryption_key_means_no_encryption():
    assert encryption_key("") is None


@pytest.mark.parametrize("size", [16, 24, 32])
def test_a_url_safe_base64_key_of_a_valid_aes_size_is_accepted(size):
    raw = bytes(range(200, 200 + size))

    assert encryption_key(base64.urlsafe_b64encode(raw).decode()) == raw


def test_a_standard_base64_key_is_accepted_too():
    raw = b"\xfb\xff" * 16

    assert encryption_key(base64.b64encode(raw).decode()) == raw


def test_a_key_without_its_padding_is_accepted():
    raw = bytes(16)

    assert encryption_key(base64.urlsafe_b64encode(raw).decode().rstrip("=")) == raw


@pytest.mark.parametrize(
    "value",
    [
        "not base64 at all!",
        base64.urlsafe_b64encode(b"too short").decode(),
        base64.urlsafe_b64encode(bytes(31)).decode(),
        base64.urlsafe_b64encode(bytes(64)).decode(),
        "a-passphrase-is-not-a-key",
    ],
)
def test_a_bad_encryption_key_is_refused_with_how_to_make_one(value):
    with pytest.raises(ImproperlyConfigured) as refused:
        encryption_key(value)

    message = str(refused.value)
    assert message.startswith("SIGNOFF_ENCRYPTION_KEY must be base64 of 16, 24 or 32 random bytes")
    assert "base64.urlsafe_b64encode(secrets.token_bytes(32))" in message


def test_the_key_recipe_in_the_error_message_makes_an_accepted_key():
    with pytest.raises(ImproperlyConfigured) as refused:
        encryption_key("nope")
    recipe = shlex.split(str(refused.value).split("make one with: ", 1)[1])
    assert recipe[:2] == ["python", "-c"]

    made = subprocess.run([sys.executable, *recipe[1:]], capture_output=True, text=True, check=True)

    assert len(encryption_key(made.stdout.strip()) or b"") == 32


def test_production_refuses_to_start_without_an_audit_key_and_says_how_to_make_one():
    with pytest.raises(ImproperlyConfigured) as refused:
        audit_key("", debug=False, secret_key="s")

    message = str(refused.value)
    assert message.startswith("SIGNOFF_AUDIT_KEY must be set when DJANGO_DEBUG is off")
    recipe = shlex.split(message.split("make one with: ", 1)[1])
    made = subprocess.run([sys.executable, *recipe[1:]], capture_output=True, text=True, check=True)
    assert len(audit_key(made.stdout.strip(), debug=False, secret_key="s")) == 32


def test_debug_derives_a_stable_development_audit_key_from_the_secret_key():
    key = audit_key("", debug=True, secret_key="dev")

    assert key == audit_key("", debug=True, secret_key="dev")
    assert key != audit_key("", debug=True, secret_key="other")
    assert len(key) == 32


@pytest.mark.parametrize("value", ["not base64 at all!", base64.urlsafe_b64encode(bytes(31)).decode()])
def test_an_audit_key_shorter_than_32_bytes_is_refused(value):
    with pytest.raises(ImproperlyConfigured, match="at least 32 random bytes"):
        audit_key(value, debug=True, secret_key="s")


def test_the_audit_key_may_not_be_the_encryption_key():
    key = base64.urlsafe_b64encode(bytes(range(32))).decode()
    env = {**os.environ, "SIGNOFF_AUDIT_KEY": key, "SIGNOFF_ENCRYPTION_KEY": key}
    env["DJANGO_SETTINGS_MODULE"] = "config.settings"

    shown = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"], env=env, capture_output=True, text=True
    )

    assert shown.returncode != 0
    assert "SIGNOFF_AUDIT_KEY must not be the same key as SIGNOFF_ENCRYPTION_KEY" in shown.stderr


def test_celery_acknowledges_late_takes_one_message_at_a_time_and_speaks_only_json():
    from config.celery import app

    conf = app.conf
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.accept_content == ["json"]
    assert conf.task_serializer == "json"
    assert conf.task_time_limit > conf.task_soft_time_limit
    from workflows.tasks import run_thread

    assert run_thread.app is app


def test_a_redis_broker_waits_longer_than_a_task_may_run_before_redelivering():
    env = {**os.environ, "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0"}
    code = (
        "import django; django.setup(); from config.celery import app; c = app.conf;"
        "print(c.broker_transport_options['visibility_timeout'] > c.task_time_limit)"
    )
    shown = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "DJANGO_SETTINGS_MODULE": "config.settings"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert shown.stdout.strip() == "True"


@pytest.mark.parametrize("name", ["SIGNOFF_LEASE_SECONDS", "SIGNOFF_SWEEP_SECONDS"])
@pytest.mark.parametrize("value", ["soon", "0", "-5"])
def test_a_bad_runtime_timing_is_refused_naming_the_variable(name, value):
    env = {**os.environ, name: value, "DJANGO_SETTINGS_MODULE": "config.settings"}
    shown = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"], env=env, capture_output=True, text=True
    )
    assert shown.returncode != 0
    assert name in shown.stderr


def test_a_web_request_waits_for_the_pool_and_the_server_only_briefly_by_default(monkeypatch):
    db = database_from_url("postgres://signoff@db.example.com/signoff")

    assert db["OPTIONS"]["pool"]["timeout"] == 5
    assert db["OPTIONS"]["connect_timeout"] == 5


def test_the_pool_and_connect_timeouts_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("DATABASE_POOL_TIMEOUT", "2.5")
    monkeypatch.setenv("DATABASE_CONNECT_TIMEOUT", "3")
    db = database_from_url("postgres://signoff@db.example.com/signoff")

    assert db["OPTIONS"]["pool"]["timeout"] == 2.5
    assert db["OPTIONS"]["connect_timeout"] == 3
