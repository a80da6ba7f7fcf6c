"""API keys: made by the service, the admin or `create_api_key`, shown once, stored as a hash,
revocable, expiring, audited; sent as x-api-key or Authorization: Bearer."""

from __future__ import annotations

import ast
import io
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.db import transaction
from django.test import Client, RequestFactory
from django.utils import timezone

from api import services
from api.auth import BearerKey, KeyHeader
from api.models import ApiKey
from tests.factories import make_user
from tests.pages import client_for
from workflows.audit import Action
from workflows.models import AuditEvent
from workflows.services import InvalidState

pytestmark = pytest.mark.django_db

SEARCH = "/api/assistants/search"


def new_key(user: User, **kwargs: object) -> services.NewKey:
    return services.create_api_key(user=user, name="script", actor=None, **kwargs)  # type: ignore[arg-type]


def search(client: Client, **headers: str) -> tuple[int, dict[str, object] | list[object]]:
    response = client.post(SEARCH, {}, content_type="application/json", headers=headers)
    return response.status_code, response.json()


# -- made once, stored as a hash ---------------------------------------------------------------


def test_a_new_key_is_random_and_only_its_hash_is_stored(reviewer: User, admin: User) -> None:
    first = services.create_api_key(user=reviewer, name="nightly import", actor=admin)
    second = new_key(reviewer)

    assert first.secret.startswith(f"signoff_{first.key.prefix}_")
    assert len(first.secret) > 50
    assert first.secret != second.secret
    row = ApiKey.objects.get(pk=first.key.pk)
    assert row.hash == services.digest(first.secret)
    stored = [str(value) for value in ApiKey.objects.values_list().get(pk=row.pk)]
    assert not any(first.secret in value or first.secret.split("_")[-1] in value for value in stored)


def test_making_and_revoking_are_audited_without_the_secret(reviewer: User, admin: User) -> None:
    new = services.create_api_key(user=reviewer, name="nightly import", actor=admin)
    services.revoke_api_key(key=new.key, actor=admin)

    events = list(AuditEvent.objects.filter(action__startswith="apikey.").order_by("id"))
    assert [event.action for event in events] == [Action.API_KEY_CREATED, Action.API_KEY_REVOKED]
    assert events[0].actor == admin
    assert events[0].data == {
        "key_id": new.key.pk,
        "prefix": new.key.prefix,
        "name": "nightly import",
        "user": "rita",
        "expires_at": None,
    }
    assert events[1].data["prefix"] == new.key.prefix
    assert all(new.secret.split("_")[-1] not in str(event.data) for event in events)


def test_the_api_records_only_actions_of_the_enumeration() -> None:
    # As tests/test_audit_trail.py checks workflows and approvals: no string slips past mypy.
    root = Path(__file__).resolve().parent.parent
    calls = [
        node
        for source in root.glob("api/**/*.py")
        if "migrations" not in source.parts
        for node in ast.walk(ast.parse(source.read_text()))
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "record_event"
    ]

    # Two for keys (api/services.py), two for webhook endpoints (api/webhooks.py).
    assert len(calls) == 4
    assert all(
        isinstance(kw.value, ast.Attribute) and kw.value.attr in Action.names
        for node in calls
        for kw in node.keywords
        if kw.arg == "action"
    )


def test_the_audit_trail_offers_the_key_actions_as_filters(auditor: User) -> None:
    page = client_for(auditor).get("/audit/").content.decode()

    assert '<option value="apikey.created"' in page
    assert '<option value="apikey.revoked"' in page


def test_a_key_that_cannot_work_is_not_made(reviewer: User) -> None:
    with pytest.raises(InvalidState, match="name"):
        services.create_api_key(user=reviewer, name="  ", actor=None)
    with pytest.raises(InvalidState, match="future"):
        new_key(reviewer, expires_at=timezone.now() - timedelta(seconds=1))
    reviewer.is_active = False
    reviewer.save()
    with pytest.raises(InvalidState, match="not active"):
        new_key(reviewer)
    assert not ApiKey.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_the_key_services_refuse_to_run_inside_another_transaction(reviewer: User) -> None:
    key = new_key(reviewer).key
    with transaction.atomic(), pytest.raises(RuntimeError, match="durable"):
        services.revoke_api_key(key=key, actor=None)
    with transaction.atomic(), pytest.raises(RuntimeError, match="durable"):
        new_key(reviewer)


def test_revoking_twice_says_when_it_was_revoked(reviewer: User) -> None:
    key = new_key(reviewer).key
    services.revoke_api_key(key=key, actor=None)

    with pytest.raises(InvalidState, match="already revoked at"):
        services.revoke_api_key(key=key, actor=None)
    assert AuditEvent.objects.filter(action=Action.API_KEY_REVOKED).count() == 1


# -- on a request ------------------------------------------------------------------------------


def test_the_key_is_taken_as_x_api_key_or_as_a_bearer_token(reviewer: User) -> None:
    secret = new_key(reviewer).secret

    assert search(Client(), x_api_key=secret)[0] == 200
    assert search(Client(), authorization=f"Bearer {secret}")[0] == 200


def test_no_key_is_a_401_that_says_how_to_send_one() -> None:
    response = Client().post(SEARCH, {}, content_type="application/json")

    assert response.status_code == 401
    assert response.json() == {"detail": services.MISSING}
    assert response["WWW-Authenticate"] == "Bearer"
    assert search(Client(), authorization="Basic cml0YTpyaXRh") == (401, {"detail": services.MISSING})


def test_the_request_acts_as_the_keys_user(reviewer: User) -> None:
    secret = new_key(reviewer).secret
    request = RequestFactory().get("/api/assistants/x", headers={"x-api-key": secret})

    key = KeyHeader()(request)

    assert isinstance(key, ApiKey)
    assert key.user == reviewer
    assert request.user == reviewer
    assert BearerKey()(RequestFactory().get("/", headers={"authorization": f"Bearer {secret}"})) == key


def test_a_session_is_no_key(reviewer: User) -> None:
    assert search(client_for(reviewer))[0] == 401


@pytest.mark.parametrize(
    "presented", ["nonsense", "signoff_", "signoff_abcdef012345_guess", "signoff_{prefix}_wrong-secret"]
)
def test_an_unknown_key_is_a_401(reviewer: User, presented: str) -> None:
    key = new_key(reviewer).key

    assert search(Client(), x_api_key=presented.format(prefix=key.prefix)) == (
        401,
        {"detail": services.UNKNOWN},
    )


def test_a_revoked_key_is_a_401_like_an_unknown_one(reviewer: User) -> None:
    new = new_key(reviewer)
    services.revoke_api_key(key=new.key, actor=None)

    assert search(Client(), x_api_key=new.secret) == (401, {"detail": services.UNKNOWN})
    assert search(Client(), authorization=f"Bearer {new.secret}") == (401, {"detail": services.UNKNOWN})


def test_an_expired_key_is_a_401_that_says_when_it_expired(reviewer: User) -> None:
    new = new_key(reviewer, expires_at=timezone.now() + timedelta(hours=1))
    ApiKey.objects.filter(pk=new.key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    status, body = search(Client(), x_api_key=new.secret)

    assert status == 401
    assert isinstance(body, dict)
    assert str(body["detail"]).startswith("this API key expired at ")


def test_a_key_of_a_user_no_longer_active_is_a_401(reviewer: User) -> None:
    secret = new_key(reviewer).secret
    User.objects.filter(pk=reviewer.pk).update(is_active=False)

    assert search(Client(), x_api_key=secret) == (401, {"detail": "this API key's user is not active"})


def test_last_used_is_written_at_most_once_a_minute(reviewer: User) -> None:
    new = new_key(reviewer)
    assert new.key.last_used_at is None

    assert search(Client(), x_api_key=new.secret)[0] == 200
    first = ApiKey.objects.get(pk=new.key.pk).last_used_at
    assert first is not None
    assert timezone.now() - first < timedelta(seconds=10)

    services.authenticate(presented=new.secret, now=first + timedelta(seconds=30))
    assert ApiKey.objects.get(pk=new.key.pk).last_used_at == first
    later = first + timedelta(seconds=61)
    services.authenticate(presented=new.secret, now=later)
    assert ApiKey.objects.get(pk=new.key.pk).last_used_at == later


# -- the admin ---------------------------------------------------------------------------------


def test_an_admin_makes_a_key_and_sees_it_once(admin: User, reviewer: User) -> None:
    client = client_for(admin)
    assert client.get("/admin/api/apikey/add/").status_code == 200

    response = client.post(
        "/admin/api/apikey/add/", {"user": reviewer.pk, "name": "inbox", "expires_in_days": "30"}
    )

    assert response.status_code == 200
    key = ApiKey.objects.get()
    secret = response.context["secret"]
    assert secret.startswith(f"signoff_{key.prefix}_")
    assert secret in response.content.decode()
    assert "no-store" in response["Cache-Control"]
    assert key.user == reviewer
    assert key.hash == services.digest(secret)
    assert key.expires_at is not None
    assert abs(key.expires_at - (timezone.now() + timedelta(days=30))) < timedelta(minutes=1)
    assert AuditEvent.objects.get(action=Action.API_KEY_CREATED).actor == admin
    # Nowhere again: not in the session (where messages are kept), not in the list, not on
    # the key's page.
    assert secret.split("_")[-1] not in str(dict(client.session))
    for url in ("/admin/api/apikey/", f"/admin/api/apikey/{key.pk}/change/"):
        page = client.get(url)
        assert page.status_code == 200
        assert secret.split("_")[-1] not in page.content.decode()
        assert key.prefix in page.content.decode()
    assert services.authenticate(presented=secret) == key


def test_the_admin_add_page_names_what_is_wrong(admin: User) -> None:
    response = client_for(admin).post("/admin/api/apikey/add/", {"name": "", "expires_in_days": "0"})

    assert response.status_code == 200
    assert set(response.context["form"].errors) == {"user", "name", "expires_in_days"}
    assert not ApiKey.objects.exists()


def test_an_admin_revokes_keys_from_the_list(admin: User, reviewer: User) -> None:
    keys = [new_key(reviewer).key, new_key(reviewer).key]
    client = client_for(admin)

    response = client.post(
        "/admin/api/apikey/",
        {"action": "revoke", "_selected_action": [key.pk for key in keys]},
        follow=True,
    )

    assert response.status_code == 200
    assert all(key.revoked_at is not None for key in ApiKey.objects.all())
    assert AuditEvent.objects.filter(action=Action.API_KEY_REVOKED, actor=admin).count() == 2
    page = client.get("/admin/api/apikey/").content.decode()
    assert page.count("revoked") >= 2


def test_staff_without_the_permissions_cannot_make_or_revoke_keys(staff: User, reviewer: User) -> None:
    new_key(reviewer)
    client = client_for(staff)

    assert client.get("/admin/api/apikey/add/").status_code == 403
    assert client.get("/admin/api/apikey/").status_code == 403


# -- the command -------------------------------------------------------------------------------


def test_the_command_prints_a_new_key_once(reviewer: User) -> None:
    out = io.StringIO()
    call_command("create_api_key", "rita", "--expires", "7", "--name", "deploy", stdout=out)

    secret = out.getvalue().strip()
    key = services.authenticate(presented=secret)
    assert key.user == reviewer
    assert key.name == "deploy"
    assert key.expires_at is not None
    assert abs(key.expires_at - (timezone.now() + timedelta(days=7))) < timedelta(minutes=1)
    event = AuditEvent.objects.get(action=Action.API_KEY_CREATED)
    assert event.actor is None
    assert event.actor_label == "system:create_api_key"


def test_the_command_without_expiry_makes_a_key_that_never_expires() -> None:
    make_user("otto")
    out = io.StringIO()
    call_command("create_api_key", "otto", stdout=out)

    assert services.authenticate(presented=out.getvalue().strip()).expires_at is None


def test_the_command_names_what_is_wrong(reviewer: User) -> None:
    with pytest.raises(CommandError, match="no user named 'nobody'"):
        call_command("create_api_key", "nobody")
    with pytest.raises(CommandError, match="at least 1"):
        call_command("create_api_key", "rita", "--expires", "0")
    assert not ApiKey.objects.exists()
