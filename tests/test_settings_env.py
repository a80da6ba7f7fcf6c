"""Switches and secrets from the environment (issue 10, item 5): a switch accepts one set of
spellings and refuses anything else at start-up; each secret may come from a file instead."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from config.settings import FALSE_WORDS, TRUE_WORDS, database_from_url, envbool, envsecret, parse_bool

SECRETS = ("DJANGO_SECRET_KEY", "SIGNOFF_ENCRYPTION_KEY", "DATABASE_URL", "SIGNOFF_AUDIT_KEY")
AUDIT_KEY = base64.urlsafe_b64encode(bytes(range(40, 72))).decode()


def _start(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Django set up in a fresh process with these variables over the test environment's."""
    full = {**os.environ, **env, "DJANGO_SETTINGS_MODULE": "config.settings"}
    for name in SECRETS:
        if f"{name}_FILE" in env:
            full.pop(name, None)
    return subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {code}"],
        env=full,
        capture_output=True,
        text=True,
    )


# -- switches --------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["1", "true", "True", "YES", "on"])
def test_every_true_spelling_is_true(value: str):
    assert parse_bool("X", value) is True


@pytest.mark.parametrize("value", ["0", "false", "FALSE", "no", "Off"])
def test_every_false_spelling_is_false(value: str):
    assert parse_bool("X", value) is False


@pytest.mark.parametrize("value", ["ture", "flase", "2", "y", "enabled", " 1", "1 "])
def test_anything_else_is_refused_naming_the_variable_and_the_value(value: str):
    with pytest.raises(ImproperlyConfigured) as refused:
        parse_bool("SESSION_COOKIE_SECURE", value)

    assert str(refused.value) == f"SESSION_COOKIE_SECURE must be true or false, got {value!r}"


def test_the_two_spelling_sets_are_disjoint():
    assert not TRUE_WORDS & FALSE_WORDS


@pytest.mark.parametrize("value", [None, ""])
def test_an_unset_or_empty_switch_is_its_default(monkeypatch: pytest.MonkeyPatch, value: str | None):
    if value is None:
        monkeypatch.delenv("SIGNOFF_TEST_SWITCH", raising=False)
    else:
        monkeypatch.setenv("SIGNOFF_TEST_SWITCH", value)

    assert envbool("SIGNOFF_TEST_SWITCH", True) is True
    assert envbool("SIGNOFF_TEST_SWITCH", False) is False


@pytest.mark.parametrize("name", ["SESSION_COOKIE_SECURE", "DJANGO_DEBUG", "SECURE_HSTS_PRELOAD"])
def test_a_misspelt_switch_stops_start_up(name: str):
    started = _start("", **{name: "ture"})

    assert started.returncode != 0
    assert f"ImproperlyConfigured: {name} must be true or false, got 'ture'" in started.stderr


def test_a_misspelt_debug_in_the_dev_file_stops_start_up(tmp_path: Path):
    dev_env = tmp_path / "dev.env"
    dev_env.write_text("DJANGO_DEBUG=ture\n")
    dev_env.chmod(0o600)
    env = {
        key: value for key, value in os.environ.items() if key not in ("DJANGO_DEBUG", "DJANGO_SECRET_KEY")
    }
    env.update(SIGNOFF_VAR_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="config.settings")

    started = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"], env=env, capture_output=True, text=True
    )

    assert started.returncode != 0
    assert f"DJANGO_DEBUG in {dev_env} must be true or false, got 'ture'" in started.stderr


# -- secrets from files ----------------------------------------------------------------------


def test_a_secret_is_read_from_its_file_without_the_trailing_newline(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    secret = tmp_path / "secret"
    secret.write_text("s3cret value\n")
    monkeypatch.delenv("SIGNOFF_TEST_SECRET", raising=False)
    monkeypatch.setenv("SIGNOFF_TEST_SECRET_FILE", str(secret))

    assert envsecret("SIGNOFF_TEST_SECRET") == "s3cret value"


def test_a_secret_without_a_file_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SIGNOFF_TEST_SECRET", "plain")
    monkeypatch.delenv("SIGNOFF_TEST_SECRET_FILE", raising=False)

    assert envsecret("SIGNOFF_TEST_SECRET") == "plain"


def test_a_secret_set_both_ways_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    secret = tmp_path / "secret"
    secret.write_text("from the file")
    monkeypatch.setenv("SIGNOFF_TEST_SECRET", "from the environment")
    monkeypatch.setenv("SIGNOFF_TEST_SECRET_FILE", str(secret))

    with pytest.raises(ImproperlyConfigured) as refused:
        envsecret("SIGNOFF_TEST_SECRET")

    assert str(refused.value) == (
        "SIGNOFF_TEST_SECRET and SIGNOFF_TEST_SECRET_FILE are both set: set one of them"
    )


def test_a_missing_secret_file_is_refused_naming_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    missing = tmp_path / "nope"
    monkeypatch.delenv("SIGNOFF_TEST_SECRET", raising=False)
    monkeypatch.setenv("SIGNOFF_TEST_SECRET_FILE", str(missing))

    with pytest.raises(ImproperlyConfigured) as refused:
        envsecret("SIGNOFF_TEST_SECRET")

    assert str(refused.value) == f"SIGNOFF_TEST_SECRET_FILE: cannot read {missing}: No such file or directory"


def test_a_secret_file_that_cannot_be_read_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    # A directory, where a mounted secret went wrong: unreadable even for root.
    monkeypatch.delenv("SIGNOFF_TEST_SECRET", raising=False)
    monkeypatch.setenv("SIGNOFF_TEST_SECRET_FILE", str(tmp_path))

    with pytest.raises(ImproperlyConfigured) as refused:
        envsecret("SIGNOFF_TEST_SECRET")

    assert str(refused.value) == f"SIGNOFF_TEST_SECRET_FILE: cannot read {tmp_path}: Is a directory"


def test_an_empty_secret_file_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    secret = tmp_path / "secret"
    secret.write_text("\n")
    monkeypatch.delenv("SIGNOFF_TEST_SECRET", raising=False)
    monkeypatch.setenv("SIGNOFF_TEST_SECRET_FILE", str(secret))

    with pytest.raises(ImproperlyConfigured, match="is empty"):
        envsecret("SIGNOFF_TEST_SECRET")


def test_every_secret_of_the_settings_may_come_from_a_file(tmp_path: Path):
    encryption = base64.urlsafe_b64encode(bytes(range(32))).decode()
    files = {
        "DJANGO_SECRET_KEY": "k3!x" * 16,
        "SIGNOFF_ENCRYPTION_KEY": encryption,
        "SIGNOFF_AUDIT_KEY": AUDIT_KEY,
        "DATABASE_URL": "postgres://signoff:p%40ss@db.example.com:6543/from_file",
    }
    env: dict[str, str] = {}
    for name, value in files.items():
        (tmp_path / name).write_text(value + "\n")
        env[f"{name}_FILE"] = str(tmp_path / name)
    code = (
        "from django.conf import settings as s; import base64; d = s.DATABASES['default'];"
        "print(s.SECRET_KEY); print(base64.urlsafe_b64encode(s.SIGNOFF_ENCRYPTION_KEY).decode());"
        "print(base64.urlsafe_b64encode(s.SIGNOFF_AUDIT_KEY).decode()); print(d['NAME'], d['PASSWORD'])"
    )

    started = _start(code, **env)

    assert started.returncode == 0, started.stderr
    assert started.stdout.splitlines() == [
        files["DJANGO_SECRET_KEY"],
        encryption,
        AUDIT_KEY,
        "from_file p@ss",
    ]


@pytest.mark.parametrize("name", SECRETS)
def test_each_secret_set_both_ways_stops_start_up(name: str, tmp_path: Path):
    (tmp_path / "secret").write_text("whatever")
    env = {**os.environ, name: "x", f"{name}_FILE": str(tmp_path / "secret")}
    env["DJANGO_SETTINGS_MODULE"] = "config.settings"

    started = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"], env=env, capture_output=True, text=True
    )

    assert started.returncode != 0
    assert f"{name} and {name}_FILE are both set" in started.stderr


def test_a_secret_key_from_a_file_keeps_the_dev_file_unread(tmp_path: Path):
    # As with the key in the environment: the file means production, so DEBUG stays off.
    var_dir = tmp_path / "var"
    var_dir.mkdir()
    (var_dir / "dev.env").write_text("DJANGO_DEBUG=1\nDJANGO_SECRET_KEY=dev-key\n")
    (var_dir / "dev.env").chmod(0o600)
    (tmp_path / "key").write_text("from-the-file\n")
    env = {
        key: value for key, value in os.environ.items() if key not in ("DJANGO_DEBUG", "DJANGO_SECRET_KEY")
    }
    env.update(
        SIGNOFF_VAR_DIR=str(var_dir),
        DJANGO_SECRET_KEY_FILE=str(tmp_path / "key"),
        DJANGO_SETTINGS_MODULE="config.settings",
    )
    code = (
        "import django; django.setup(); from django.conf import settings as s; print(s.DEBUG, s.SECRET_KEY)"
    )

    started = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)

    assert started.returncode == 0, started.stderr
    assert started.stdout.strip() == "False from-the-file"


# -- what dj-database-url reads ----------------------------------------------------------------


def test_a_socket_directory_may_be_the_host_percent_encoded():
    db = database_from_url("postgres://signoff@%2Fvar%2Frun%2Fpostgresql/signoff")

    assert db["HOST"] == "/var/run/postgresql"
    assert db["NAME"] == "signoff"


def test_url_options_reach_libpq_as_text():
    db = database_from_url("postgres://signoff@db/signoff?application_name=42&sslmode=verify-full")

    assert db["OPTIONS"]["application_name"] == "42"
    assert db["OPTIONS"]["sslmode"] == "verify-full"


def test_a_database_url_that_cannot_be_parsed_is_refused_without_repeating_it():
    with pytest.raises(ImproperlyConfigured) as refused:
        database_from_url("postgres://signoff:hunter2@db:port/signoff")

    assert str(refused.value).startswith("DATABASE_URL cannot be read: ")
    assert "hunter2" not in str(refused.value)
