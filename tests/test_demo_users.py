from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

pytestmark = pytest.mark.django_db


def ensure_demo_users() -> str:
    out = StringIO()
    call_command("ensure_demo_users", stdout=out)
    return out.getvalue()


def test_demo_admin_is_created_as_a_superuser_in_debug(settings):
    settings.DEBUG = True

    output = ensure_demo_users()

    admin = get_user_model().objects.get(username="admin")
    assert admin.is_superuser
    assert admin.is_staff
    assert admin.is_active
    assert admin.check_password("admin")
    assert "admin / admin (created)" in output


def test_demo_users_are_ensured_idempotently(settings):
    settings.DEBUG = True
    ensure_demo_users()

    output = ensure_demo_users()

    assert get_user_model().objects.filter(username="admin").count() == 1
    assert "admin / admin (already there)" in output


def test_a_demo_admin_whose_password_changed_is_restored(settings):
    settings.DEBUG = True
    ensure_demo_users()
    admin = get_user_model().objects.get(username="admin")
    admin.set_password("something else")
    admin.is_superuser = False
    admin.save()

    output = ensure_demo_users()

    admin.refresh_from_db()
    assert admin.is_superuser
    assert admin.check_password("admin")
    assert "admin / admin (restored)" in output


def test_demo_users_are_refused_without_debug(settings):
    settings.DEBUG = False

    with pytest.raises(CommandError, match="refusing to create demo users with DJANGO_DEBUG off"):
        ensure_demo_users()

    assert not get_user_model().objects.filter(username="admin").exists()
