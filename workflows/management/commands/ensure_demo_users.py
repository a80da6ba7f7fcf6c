"""`manage.py ensure_demo_users`: the demo logins that `make run` prints, in DEBUG only.

Each login's password is its username. Reviewers get the groups the example workflows
name as their reviewer group (read from the registry), so the demo shows a reviewer
who sees some workflows and not others.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group, Permission, User
from django.core.management.base import BaseCommand, CommandError

from workflows import registry


@dataclass(frozen=True)
class DemoUser:
    username: str
    role: str
    superuser: bool = False
    staff: bool = False
    # Workflows whose reviewer group the user joins.
    reviews: tuple[str, ...] = ()
    # "app_label.codename"
    permissions: tuple[str, ...] = ()

    @property
    def email(self) -> str:
        # An address, so `make run`'s worker prints the notifications each demo login gets.
        return f"{self.username}@example.com"


DEMO_USERS = [
    DemoUser("admin", "superuser: everything, including rollback", superuser=True, staff=True),
    # Both review purchase orders, which need two approvals: log in as each to try four-eyes.
    DemoUser("reviewer", "reviewer", reviews=("expense_approval", "content_review", "purchase_order")),
    DemoUser("other_reviewer", "reviewer", reviews=("parallel_approval", "seed_demo", "purchase_order")),
    DemoUser("staff", "staff: reads the audit trail", staff=True, permissions=("workflows.view_auditevent",)),
]


def reviewer_groups() -> dict[str, str]:
    """Workflow name -> the group that reviews it, for every registered workflow that names one."""
    return {
        workflow.name: workflow.reviewer_group
        for workflow in registry.all_workflows()
        if workflow.reviewer_group
    }


def _permission(name: str) -> Permission:
    app_label, codename = name.split(".", 1)
    return Permission.objects.get(content_type__app_label=app_label, codename=codename)


class Command(BaseCommand):
    help = (
        "Create the demo logins admin, reviewer, other_reviewer and staff (password = username), "
        "or restore them; refused unless DJANGO_DEBUG is on."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEBUG:
            raise CommandError("refusing to create demo users with DJANGO_DEBUG off")
        by_workflow = reviewer_groups()
        groups = {name: Group.objects.get_or_create(name=name)[0] for name in set(by_workflow.values())}
        for demo in DEMO_USERS:
            wanted_groups = sorted({by_workflow[name] for name in demo.reviews if name in by_workflow})
            user = User.objects.filter(username=demo.username).first()
            if user is None:
                user = User(username=demo.username)
                how = "created"
            elif self._matches(user, demo, wanted_groups):
                how = "already there"
            else:
                how = "restored"
            if how != "already there":
                user.is_superuser = demo.superuser
                user.is_staff = demo.staff
                user.is_active = True
                user.email = demo.email
                user.set_password(demo.username)
                user.save()
                user.groups.set([groups[name] for name in wanted_groups])
                user.user_permissions.set([_permission(name) for name in demo.permissions])
            role = demo.role
            if wanted_groups:
                role += f" in {', '.join(wanted_groups)}"
            self.stdout.write(f"demo login: {demo.username} / {demo.username} ({how}): {role}")

    @staticmethod
    def _matches(user: User, demo: DemoUser, wanted_groups: list[str]) -> bool:
        permissions = {
            f"{app_label}.{codename}"
            for app_label, codename in user.user_permissions.values_list(
                "content_type__app_label", "codename"
            )
        }
        return (
            user.is_superuser == demo.superuser
            and user.is_staff == demo.staff
            and user.is_active
            and user.email == demo.email
            and user.check_password(demo.username)
            and sorted(user.groups.values_list("name", flat=True)) == wanted_groups
            and permissions == set(demo.permissions)
        )
