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


def test_reviewers_join_the_groups_the_example_workflows_name(settings):
    settings.DEBUG = True

    output = ensure_demo_users()

    users = get_user_model().objects
    reviewer = users.get(username="reviewer")
    other = users.get(username="other_reviewer")
    # Both purchasing: a purchase order needs two approvers.
    assert sorted(reviewer.groups.values_list("name", flat=True)) == ["editors", "finance", "purchasing"]
    assert sorted(other.groups.values_list("name", flat=True)) == ["contracts", "operators", "purchasing"]
    for user in (reviewer, other):
        assert user.check_password(user.username)
        assert not user.is_staff
        assert not user.is_superuser
    assert "reviewer / reviewer (created): reviewer in editors, finance, purchasing" in output
    assert "other_reviewer / other_reviewer (created): reviewer in contracts, operators, purchasing" in output


def test_every_registered_reviewer_group_exists(settings):
    from django.contrib.auth.models import Group

    from workflows.registry import all_workflows

    settings.DEBUG = True

    ensure_demo_users()

    wanted = {workflow.reviewer_group for workflow in all_workflows() if workflow.reviewer_group}
    assert wanted >= {"finance", "editors", "contracts", "operators"}
    assert set(Group.objects.values_list("name", flat=True)) >= wanted


def test_demo_staff_reads_the_audit_trail_and_nothing_more(settings):
    settings.DEBUG = True

    output = ensure_demo_users()

    staff = get_user_model().objects.get(username="staff")
    assert staff.is_staff
    assert not staff.is_superuser
    assert staff.check_password("staff")
    assert staff.has_perm("workflows.view_auditevent")
    assert not staff.has_perm("workflows.rollback_thread")
    assert not staff.groups.exists()
    assert "staff / staff (created): staff: reads the audit trail" in output


def test_a_reviewer_taken_out_of_a_group_is_put_back(settings):
    settings.DEBUG = True
    ensure_demo_users()
    reviewer = get_user_model().objects.get(username="reviewer")
    reviewer.groups.clear()

    output = ensure_demo_users()

    assert sorted(reviewer.groups.values_list("name", flat=True)) == ["editors", "finance", "purchasing"]
    assert "reviewer / reviewer (restored)" in output
    assert "other_reviewer / other_reviewer (already there)" in output


def test_no_demo_user_is_created_without_debug(settings):
    settings.DEBUG = False

    with pytest.raises(CommandError):
        ensure_demo_users()

    assert not get_user_model().objects.exists()


def test_demo_logins_have_an_address_so_make_run_prints_their_notifications(settings):
    settings.DEBUG = True
    ensure_demo_users()
    reviewer = get_user_model().objects.get(username="reviewer")
    assert reviewer.email == "reviewer@example.com"
    reviewer.email = ""
    reviewer.save()

    output = ensure_demo_users()

    reviewer.refresh_from_db()
    assert reviewer.email == "reviewer@example.com"
    assert "reviewer / reviewer (restored)" in output
