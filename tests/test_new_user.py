"""What a new user tripped over (issue 9, item 10): the Back button after deciding, the
preview, a long comment, the README's commands beside `make run`, who may read the audit
trail, and who is credited when several answers resume a thread at once."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.test import Client
from django.urls import reverse

from approvals import queries
from approvals.models import Review
from approvals.services import can_read_audit
from tests.factories import decide, open_review, run_queued
from tests.pages import HX, client_for, expense_thread, review_form
from workflows import engine, services
from workflows.models import AuditEvent, Run, Thread

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("doorbell")]

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def review(staff: User) -> Review:
    return open_review(expense_thread(staff, title=""))


# -- the Back button -------------------------------------------------------------------------


def test_review_pages_are_never_stored_by_the_browser(rita: Client, review: Review):
    response = rita.get(reverse("approvals:review", args=[review.pk]))

    assert "no-store" in response["Cache-Control"]


def test_the_claim_of_a_page_shown_before_the_decision_says_already_decided(
    rita: Client, reviewer: User, review: Review
):
    decide(review, reviewer, "approve")

    response = rita.post(reverse("approvals:claim", args=[review.pk]), **HX)

    assert response.status_code == 200
    assert "Already decided" in response.text
    assert "approve" in response.text
    assert "rita" in response.text
    assert "not applied" not in response.text


# -- the preview -----------------------------------------------------------------------------


def test_the_preview_shows_what_approving_sets(rita: Client, review: Review):
    data = review_form(rita, review, action="approve", state__amount="99.5")

    html = rita.post(reverse("approvals:preview", args=[review.pk]), data, **HX).text

    assert "<td>approved</td><td><del>false</del></td><td><ins>true</ins></td>" in html


def test_the_preview_shows_errors_and_drops_them_once_fixed(rita: Client, review: Review):
    url = reverse("approvals:preview", args=[review.pk])

    bad = rita.post(url, review_form(rita, review, state__amount="lots"), **HX)
    good = rita.post(url, review_form(rita, review, state__amount="99.5"), **HX)

    assert bad.status_code == 422
    assert "Enter a number." in bad.text
    assert good.status_code == 200
    assert "Enter a number." not in good.text
    assert 'id="decision-form"' in good.text
    assert "<td>amount</td>" in good.text


def test_a_comment_over_5000_characters_says_so(rita: Client, review: Review):
    data = review_form(rita, review, comment="x" * 5001)

    response = rita.post(reverse("approvals:decide", args=[review.pk]), data, **HX)

    assert response.status_code == 422
    assert "Ensure this value has at most 5000 characters" in response.text


# -- the README's commands beside `make run` -------------------------------------------------


def _bare_env(var_dir: Path, **extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DJANGO_SECRET_KEY", "DJANGO_DEBUG", "DATABASE_URL") and not key.startswith("PYTEST")
    }
    return {**env, "SIGNOFF_VAR_DIR": str(var_dir), **extra}


def _check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_manage_py_works_without_environment_once_make_run_wrote_the_dev_file(tmp_path: Path):
    var_dir = tmp_path / "var"
    assert _check(_bare_env(var_dir)).returncode != 0

    subprocess.run([str(ROOT / "bin/dev-env")], env=_bare_env(var_dir), check=True, capture_output=True)

    dev_env = var_dir / "dev.env"
    assert stat.S_IMODE(dev_env.stat().st_mode) == 0o600
    assert re.search(r"^DJANGO_SECRET_KEY=dev-\S{40,}$", dev_env.read_text(), re.MULTILINE)
    checked = _check(_bare_env(var_dir))
    assert checked.returncode == 0, checked.stderr
    # A second run keeps the secret, so logins survive a restart.
    before = dev_env.read_text()
    subprocess.run([str(ROOT / "bin/dev-env")], env=_bare_env(var_dir), check=True, capture_output=True)
    assert dev_env.read_text() == before


def test_production_settings_still_refuse_without_a_key(tmp_path: Path):
    var_dir = tmp_path / "var"

    absent = _check(_bare_env(var_dir))

    assert absent.returncode != 0
    assert "DJANGO_SECRET_KEY must be set" in absent.stderr
    # With the file there, an environment that says DEBUG off is production: still refused.
    subprocess.run([str(ROOT / "bin/dev-env")], env=_bare_env(var_dir), check=True, capture_output=True)
    explicit = _check(_bare_env(var_dir, DJANGO_DEBUG="0"))
    assert explicit.returncode != 0
    assert "DJANGO_SECRET_KEY must be set" in explicit.stderr


def test_a_dev_file_others_can_write_is_refused(tmp_path: Path):
    var_dir = tmp_path / "var"
    subprocess.run([str(ROOT / "bin/dev-env")], env=_bare_env(var_dir), check=True, capture_output=True)
    (var_dir / "dev.env").chmod(0o666)

    checked = _check(_bare_env(var_dir))

    assert checked.returncode != 0
    assert "writable by nobody else" in checked.stderr


def test_with_a_key_in_the_environment_the_dev_file_is_not_read(tmp_path: Path):
    var_dir = tmp_path / "var"
    subprocess.run([str(ROOT / "bin/dev-env")], env=_bare_env(var_dir), check=True, capture_output=True)
    code = "from django.conf import settings; print(settings.DEBUG, settings.SECRET_KEY)"

    shown = subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {code}"],
        cwd=ROOT,
        env=_bare_env(var_dir, DJANGO_SECRET_KEY="production-key", DJANGO_SETTINGS_MODULE="config.settings"),
        capture_output=True,
        text=True,
        check=True,
    )

    assert shown.stdout.split() == ["False", "production-key"]


# -- who may read the audit trail ------------------------------------------------------------


@pytest.fixture
def auditor_by_group() -> User:
    """Holds the audit permission through a group, but is not staff."""
    group = Group.objects.create(name="auditors")
    group.permissions.add(
        Permission.objects.get(content_type__app_label="workflows", codename="view_auditevent")
    )
    user = User.objects.create_user("nora", password="password")
    user.groups.add(group)
    return user


@pytest.mark.parametrize(
    "url", ["approvals:audit_log", "approvals:audit_export_csv", "approvals:audit_export_jsonl"]
)
def test_the_audit_permission_without_staff_reads_nothing(auditor_by_group: User, url: str):
    assert client_for(auditor_by_group).get(reverse(url)).status_code == 403


def test_one_rule_decides_the_audit_pages_and_their_links(auditor_by_group: User, admin: User, staff: User):
    staff.user_permissions.add(Permission.objects.get(codename="view_auditevent"))
    staff = User.objects.get(pk=staff.pk)
    link = f'href="{reverse("approvals:audit_log")}"'

    for user in (auditor_by_group, admin, staff):
        allowed = can_read_audit(user)
        client = client_for(user)

        assert (client.get(reverse("approvals:audit_log")).status_code == 200) == allowed
        assert (link in client.get(reverse("approvals:queue")).text) == allowed
    assert [can_read_audit(user) for user in (auditor_by_group, admin, staff)] == [False, True, True]
    docs = (ROOT / "docs/architecture.md").read_text()
    assert "can_read_audit" in docs


# -- several answers in one resume ---------------------------------------------------------


def test_answers_applied_together_credit_each_reviewer(staff: User, reviewer: User, other_reviewer: User):
    contract = services.start_thread(
        workflow="parallel_approval", input={"counterparty": "Acme", "value": 5000.0}, actor=staff
    )
    run_queued(contract)
    legal, finance = open_review(contract, "legal"), open_review(contract, "finance")
    # A run that cannot take more answers (a released attempt) holds the thread, so both
    # answers wait for its pause and are applied there together.
    head_id = engine.checkpoint_id_of(engine.head(contract.workflow, contract.thread_id))
    Run.objects.create(
        thread=contract, kind=Run.Kind.RESUME, command={}, from_checkpoint_id=head_id, attempts=1
    )
    decide(legal, reviewer, "approve", updates={"value": 4500.0})
    decide(finance, other_reviewer, "approve")

    run_queued(contract)

    resumed = AuditEvent.objects.filter(thread=contract, action="thread.resumed").order_by("-id").first()
    assert resumed is not None
    assert resumed.data["decided_by"] == ["rita", "oscar"]
    assert resumed.data["edited_by"] == ["rita"]
    assert resumed.actor_label != "oscar"
    run_queued(contract)
    assert contract.status == Thread.Status.COMPLETED
    authors = [entry.actor for entry in queries.history(contract)]
    assert "worker, with edits by rita" in authors
