"""The permission matrix for API keys (api/access.py): which threads a key of each persona sees
(the rest are 404s naming the id), which operations its user's permissions allow (403 naming the
permission), and that a missing, unknown, revoked or expired key is a 401 on every endpoint that
needs one, the endpoints of every router included, found from the API's own OpenAPI document."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.http import HttpRequest
from django.test import Client, RequestFactory
from django.utils import timezone
from ninja.errors import HttpError

from api import services
from api.access import PERMISSIONS, require, thread_or_404, visible_threads
from api.auth import KeyHeader
from api.main import api
from api.models import ApiKey
from tests.factories import EXPENSE, make_thread, make_user
from tests.pages import grant
from workflows.models import Thread

pytestmark = pytest.mark.django_db

PERSONAS = ("rita", "oscar", "sam", "ada", "olga", "nina")
THREADS = ("expense", "demo", "ritas_new", "oscars_new")

# Who sees which thread. The example workflows' groups: expense_approval is finance's (rita and
# oscar are in it), seed_demo is operators' (nobody here but the superuser); a NEW thread (no
# workflow yet) is its creator's, and the superuser's, who sees everything.
SEES = {
    "rita": {"expense", "ritas_new"},
    "oscar": {"expense", "oscars_new"},
    "sam": set(),
    "ada": set(THREADS),
    "olga": set(),
    "nina": set(),
}
# What each may do beyond reading and deciding.
MAY = {
    "rita": set(),
    "oscar": set(),
    "sam": set(),
    "ada": {"start", "cancel", "rollback", "retry"},
    "olga": {"start", "cancel", "rollback"},
    "nina": set(),
}


@pytest.fixture(autouse=True)
def _fast_passwords(settings: Any) -> None:
    # Six users a test: PBKDF2 would spend seconds hashing passwords nobody types here.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def people(reviewer: User, other_reviewer: User, staff: User, admin: User) -> dict[str, User]:
    olga = grant(make_user("olga"), "start_thread", "cancel_thread", "rollback_thread")
    return {
        "rita": reviewer,
        "oscar": other_reviewer,
        "sam": staff,
        "ada": admin,
        "olga": olga,
        "nina": make_user("nina"),
    }


@pytest.fixture
def threads(people: dict[str, User], doorbell: list[int]) -> dict[str, Thread]:
    return {
        "expense": make_thread("expense_approval", EXPENSE, actor=people["sam"]),
        "demo": make_thread("seed_demo", {"count": 0}, actor=people["ada"]),
        # Made through the API before their first run (what POST /threads makes).
        "ritas_new": Thread.objects.create(workflow="", status=Thread.Status.NEW, created_by=people["rita"]),
        "oscars_new": Thread.objects.create(
            workflow="", status=Thread.Status.NEW, created_by=people["oscar"]
        ),
    }


def key_request(user: User) -> HttpRequest:
    """A request let in by a new key of `user`, as ninja's authentication lets one in."""
    secret = services.create_api_key(user=user, name="tests", actor=None).secret
    request = RequestFactory().get("/api/threads", headers={"x-api-key": secret})
    request.auth = KeyHeader().authenticate(request, secret)  # type: ignore[attr-defined]
    return request


@pytest.mark.parametrize("persona", PERSONAS)
def test_a_key_sees_the_threads_of_its_users_workflows_and_its_new_ones(
    persona: str, people: dict[str, User], threads: dict[str, Thread]
) -> None:
    request = key_request(people[persona])

    seen = {
        name for name, thread in threads.items() if visible_threads(request).filter(pk=thread.pk).exists()
    }

    assert seen == SEES[persona]


@pytest.mark.parametrize("persona", PERSONAS)
def test_thread_or_404_finds_a_visible_thread_and_404s_any_other_naming_it(
    persona: str, people: dict[str, User], threads: dict[str, Thread]
) -> None:
    request = key_request(people[persona])

    for name, thread in threads.items():
        if name in SEES[persona]:
            assert thread_or_404(request, thread.public_id) == thread
            assert thread_or_404(request, str(thread.public_id)) == thread
        else:
            with pytest.raises(HttpError) as refused:
                thread_or_404(request, str(thread.public_id))
            assert (refused.value.status_code, str(refused.value)) == (
                404,
                f"Thread '{thread.public_id}' not found",
            )


@pytest.mark.parametrize("thread_id", ["not-a-uuid", "", str(uuid.uuid4())])
def test_an_id_that_is_no_thread_is_a_404_naming_it(thread_id: str, admin: User) -> None:
    with pytest.raises(HttpError) as refused:
        thread_or_404(key_request(admin), thread_id)

    assert (refused.value.status_code, str(refused.value)) == (404, f"Thread '{thread_id}' not found")


def test_a_new_thread_stops_being_its_creators_alone_once_it_has_a_workflow(
    people: dict[str, User], threads: dict[str, Thread]
) -> None:
    # Its first run names the workflow: then the workflow's reviewers see it, and only they.
    Thread.objects.filter(pk=threads["ritas_new"].pk).update(
        workflow="seed_demo", status=Thread.Status.QUEUED
    )

    with pytest.raises(HttpError):
        thread_or_404(key_request(people["rita"]), threads["ritas_new"].public_id)
    assert thread_or_404(key_request(people["ada"]), threads["ritas_new"].public_id) == threads["ritas_new"]


@pytest.mark.parametrize("persona", PERSONAS)
def test_each_operation_needs_its_permission(persona: str, people: dict[str, User]) -> None:
    request = key_request(people[persona])

    for operation, permission in PERMISSIONS.items():
        if operation in MAY[persona]:
            require(request, operation)
            continue
        with pytest.raises(HttpError) as refused:
            require(request, operation)
        assert refused.value.status_code == 403
        assert (
            str(refused.value)
            == f"this key's user lacks the permission to {operation} threads ({permission})"
        )


def test_a_permission_comes_from_a_group_too(reviewer: User) -> None:
    from django.contrib.auth.models import Group, Permission

    operators = Group.objects.create(name="api operators")
    operators.permissions.add(Permission.objects.get(codename="cancel_thread"))
    reviewer.groups.add(operators)
    request = key_request(User.objects.get(pk=reviewer.pk))

    require(request, "cancel")
    with pytest.raises(HttpError):
        require(request, "rollback")


@pytest.mark.parametrize(("persona", "expected"), [("rita", 3), ("sam", 0), ("nina", 0), ("olga", 0)])
def test_a_key_sees_the_assistants_of_its_users_groups(
    persona: str, expected: int, people: dict[str, User]
) -> None:
    secret = services.create_api_key(user=people[persona], name="tests", actor=None).secret

    response = Client().post(
        "/api/assistants/search",
        {"limit": 100},
        content_type="application/json",
        headers={"x-api-key": secret},
    )

    assert response.status_code == 200
    assert len([a for a in response.json() if not a["graph_id"].startswith("test_")]) == expected


# -- 401 on every endpoint that needs a key --------------------------------------------------------

# Every path the API serves, as ninja registers it: the routers other parts add are covered as
# soon as they are added, whether or not their operations are in the OpenAPI document.
ROUTES = [str(pattern.pattern) for pattern in api.urls[0]]
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
# What is served without a key; anything else must need one.
PUBLIC = {("GET", "ok"), ("GET", "info"), ("GET", "openapi.json"), ("GET", "docs")}


def call(method: str, route: str, **headers: str) -> Any:
    """The operation at `route`, each of its parameters (<thread_id>...) a random UUID (a 1 for
    an int), with an empty JSON object as its body."""

    def fill(match: re.Match[str]) -> str:
        return "1" if match.group(1) == "int" else str(uuid.uuid4())

    path = "/api/" + re.sub(r"<(?:(\w+):)?\w+>", fill, route)
    return Client().generic(method, path, b"{}", content_type="application/json", headers=headers)


def test_what_is_served_without_a_key_is_ok_info_and_the_openapi_document() -> None:
    documented = {
        (method.upper(), path, bool(operation.get("security")))
        for path, methods in api.get_openapi_schema()["paths"].items()
        for method, operation in methods.items()
    }

    assert {(method, path) for method, path, secured in documented if not secured} == {
        ("GET", "/api/ok"),
        ("GET", "/api/info"),
    }
    assert {"ok", "info", "openapi.json", "docs", "assistants/search"} <= set(ROUTES)


@pytest.fixture
def refused_keys(reviewer: User) -> dict[str, str]:
    revoked = services.create_api_key(user=reviewer, name="revoked", actor=None)
    services.revoke_api_key(key=revoked.key, actor=None)
    expired = services.create_api_key(
        user=reviewer, name="expired", expires_at=timezone.now() + timedelta(hours=1), actor=None
    )
    ApiKey.objects.filter(pk=expired.key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    inactive = services.create_api_key(user=make_user("gone"), name="inactive", actor=None)
    User.objects.filter(username="gone").update(is_active=False)
    return {
        "revoked": revoked.secret,
        "expired": expired.secret,
        "inactive": inactive.secret,
        "unknown": "signoff_" + "x" * 12 + "_" + "y" * 43,
        "garbage": "hunter2",
    }


@pytest.mark.parametrize("route", ROUTES)
def test_every_endpoint_that_needs_a_key_is_a_401_without_a_good_one(
    route: str, refused_keys: dict[str, str]
) -> None:
    # Not served: a 405 (another method), or a 404 (the API's root: no operation of its own).
    served = [method for method in METHODS if call(method, route).status_code not in (404, 405)]
    assert served or route == "", f"{route} serves no method"

    for method in served:
        if (method, route) in PUBLIC:
            assert call(method, route).status_code == 200
            continue
        answers = {"none": call(method, route)}
        for name, secret in refused_keys.items():
            answers[f"{name} x-api-key"] = call(method, route, **{"x-api-key": secret})
            answers[f"{name} bearer"] = call(method, route, Authorization=f"Bearer {secret}")

        statuses = {name: response.status_code for name, response in answers.items()}
        assert statuses == dict.fromkeys(answers, 401), f"{method} {route}"
        assert all(response["WWW-Authenticate"] == "Bearer" for response in answers.values())
        details = {name: response.json()["detail"] for name, response in answers.items()}
        assert details["none"].startswith("an API key is needed")
        assert (
            details["revoked x-api-key"]
            == details["unknown bearer"]
            == "invalid API key (unknown or revoked)"
        )
        assert details["expired bearer"].startswith("this API key expired at ")
        assert details["inactive x-api-key"] == "this API key's user is not active"
