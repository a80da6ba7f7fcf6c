"""The assistants endpoints, /ok, /info and the OpenAPI document, with the Django test client
and with the real `langgraph_sdk` client against the live server. A registered workflow is
an assistant; a key sees only the workflows its user reviews."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.contrib.staticfiles import finders
from django.db import OperationalError
from django.test import Client
from langgraph_sdk import get_client, get_sync_client
from langgraph_sdk.errors import NotFoundError

from api import services
from tests.factories import make_user
from workflows import registry

pytestmark = pytest.mark.django_db

# What rita reviews among the example workflows (finance, editors, contracts).
RITAS = ["content_review", "expense_approval", "parallel_approval"]


def key_for(user: User) -> str:
    return services.create_api_key(user=user, name="tests", actor=None).secret


@pytest.fixture
def rita_key(reviewer: User) -> str:
    return key_for(reviewer)


@pytest.fixture
def operator_key() -> str:
    """A reviewer of another group (operators: seed_demo only)."""
    return key_for(make_user("otto", groups=["operators"]))


def post(key: str, path: str, body: Any, **extra: Any) -> Any:
    return Client().post(
        f"/api{path}", body, content_type="application/json", headers={"x-api-key": key}, **extra
    )


def get(key: str, path: str, **params: Any) -> Any:
    return Client().get(f"/api{path}", params, headers={"x-api-key": key})


def names(response: Any) -> list[str]:
    assert response.status_code == 200, response.content
    return [item["assistant_id"] for item in response.json()]


# -- system ------------------------------------------------------------------------------------


def test_ok_needs_no_key() -> None:
    response = Client().get("/api/ok")

    assert response.status_code == 200
    assert response.json() == {"ok": True}


def test_info_says_what_is_served_as_langgraphs_server_does() -> None:
    body = Client().get("/api/info").json()

    assert body["version"] == "0.1.0"
    assert body["langgraph_py_version"].count(".") == 2
    assert body["flags"] == {
        "assistants": True,
        "threads": True,
        "runs": True,
        "crons": False,
        "langsmith": False,
    }
    assert body["host"] == {"kind": "self-hosted", "project_id": None, "revision_id": None, "tenant_id": None}


def test_another_path_under_api_is_a_json_404(rita_key: str) -> None:
    response = get(rita_key, "/crons/search")

    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}


def test_a_database_that_cannot_be_reached_is_a_json_503(
    rita_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreachable() -> Any:
        raise OperationalError("connection refused")

    monkeypatch.setattr(registry, "all_workflows", unreachable)
    response = post(rita_key, "/assistants/search", {})

    assert response.status_code == 503
    assert response.json() == {"detail": "the database is unavailable; try again shortly"}
    assert response["Retry-After"] == "10"


def test_a_bug_is_a_json_500(rita_key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(registry, "all_workflows", broken)
    response = post(rita_key, "/assistants/search", {})

    assert response.status_code == 500
    assert response.json() == {"detail": "Internal Server Error"}


# -- assistants: what a key sees ---------------------------------------------------------------


def test_an_assistant_is_a_registered_workflow_by_name(rita_key: str) -> None:
    response = get(rita_key, "/assistants/expense_approval")

    assert response.status_code == 200
    body = response.json()
    spec = registry.get("expense_approval")
    assert body == {
        "assistant_id": "expense_approval",
        "graph_id": "expense_approval",
        "name": "expense_approval",
        "description": spec.description,
        "config": {},
        "context": {},
        "metadata": {"created_by": "system", "title": spec.title},
        "version": 1,
        "created_at": body["created_at"],
        "updated_at": body["created_at"],
    }


def test_the_default_assistant_uuid_names_it_too(rita_key: str) -> None:
    assistant_id = str(uuid.uuid5(uuid.NAMESPACE_URL, "expense_approval"))

    response = get(rita_key, f"/assistants/{assistant_id}")

    assert response.status_code == 200
    assert response.json()["assistant_id"] == "expense_approval"


def test_search_finds_the_workflows_the_user_reviews(rita_key: str) -> None:
    assert names(post(rita_key, "/assistants/search", {})) == RITAS


def test_a_reviewer_of_another_group_sees_none_of_these(rita_key: str, operator_key: str) -> None:
    assert names(post(operator_key, "/assistants/search", {})) == ["seed_demo"]
    for assistant_id in RITAS:
        for suffix in ("", "/graph", "/schemas"):
            response = get(operator_key, f"/assistants/{assistant_id}{suffix}")
            assert response.status_code == 404
            assert response.json() == {"detail": f"Assistant '{assistant_id}' not found"}
    assert names(post(operator_key, "/assistants/search", {"graph_id": "expense_approval"})) == []
    assert get(rita_key, "/assistants/seed_demo").status_code == 404


def test_a_superusers_key_sees_every_workflow(admin: User) -> None:
    every = [spec.name for spec in registry.all_workflows()]

    assert names(post(key_for(admin), "/assistants/search", {"limit": 1000})) == every


def test_a_user_in_no_group_sees_nothing() -> None:
    key = key_for(make_user("nobody"))

    assert names(post(key, "/assistants/search", {})) == []
    assert get(key, "/assistants/expense_approval").status_code == 404


def test_search_filters_pages_sorts_and_selects(rita_key: str) -> None:
    assert names(post(rita_key, "/assistants/search", {"graph_id": "expense_approval"})) == [
        "expense_approval"
    ]
    assert names(post(rita_key, "/assistants/search", {"name": "APPROVAL"})) == RITAS[1:]
    assert names(post(rita_key, "/assistants/search", {"metadata": {"title": "Expense approval"}})) == [
        "expense_approval"
    ]
    assert (
        names(post(rita_key, "/assistants/search", {"sort_by": "name", "sort_order": "desc"})) == RITAS[::-1]
    )

    first = post(rita_key, "/assistants/search", {"limit": 2})
    assert names(first) == RITAS[:2]
    assert first["X-Pagination-Next"] == "2"
    last = post(rita_key, "/assistants/search", {"limit": 2, "offset": 2})
    assert names(last) == RITAS[2:]
    assert "X-Pagination-Next" not in last

    selected = post(rita_key, "/assistants/search", {"select": ["assistant_id", "description"], "limit": 1})
    assert selected.json() == [
        {"assistant_id": "content_review", "description": registry.get("content_review").description}
    ]


def test_the_graph_is_drawn_as_langgraph_draws_it(rita_key: str) -> None:
    response = get(rita_key, "/assistants/expense_approval/graph", xray="false")

    assert response.status_code == 200
    body = response.json()
    ids = {node["id"] for node in body["nodes"]}
    assert {"__start__", "__end__"} <= ids
    assert set(registry.get("expense_approval").graph.nodes) <= ids
    assert all({"source", "target"} <= set(edge) for edge in body["edges"])
    assert get(rita_key, "/assistants/expense_approval/graph", xray="1").status_code == 200


def test_the_schemas_describe_input_output_and_state(rita_key: str) -> None:
    response = get(rita_key, "/assistants/expense_approval/schemas")

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {
        "graph_id",
        "input_schema",
        "output_schema",
        "state_schema",
        "config_schema",
        "context_schema",
    }
    assert body["graph_id"] == "expense_approval"
    assert {"amount", "category"} <= set(body["input_schema"]["properties"])
    assert {"amount", "approved"} <= set(body["state_schema"]["properties"])
    assert body["config_schema"] is None


# -- refused, with the field named -------------------------------------------------------------


def test_a_body_field_not_implemented_is_a_422_naming_it(rita_key: str) -> None:
    response = post(rita_key, "/assistants/search", {"limit": 5, "extract": {"x": "values.x"}})

    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["type"] == "extra_forbidden"
    assert error["loc"][0] == "body"
    assert error["loc"][-1] == "extract"


def test_a_bad_value_is_a_422_naming_the_field(rita_key: str) -> None:
    response = post(rita_key, "/assistants/search", {"sort_by": "popularity", "limit": 0})

    assert response.status_code == 422
    assert {error["loc"][-1] for error in response.json()["detail"]} == {"sort_by", "limit"}


@pytest.mark.parametrize(
    "path",
    [
        "/assistants/expense_approval",
        "/assistants/expense_approval/schemas",
        "/assistants/expense_approval/graph",
    ],
)
def test_a_query_parameter_not_implemented_is_a_422_naming_it(rita_key: str, path: str) -> None:
    response = get(rita_key, path, recurse="true")

    assert response.status_code == 422
    assert response.json()["detail"] == [
        {
            "type": "extra_forbidden",
            "loc": ["query", "recurse"],
            "msg": "Extra inputs are not permitted: Signoff does not implement this parameter",
            "input": "true",
        }
    ]


def test_a_search_with_a_query_parameter_is_a_422(rita_key: str) -> None:
    response = post(rita_key, "/assistants/search?delete_threads=1", {})

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "delete_threads"]


def test_a_body_that_is_not_an_object_is_refused(rita_key: str) -> None:
    assert post(rita_key, "/assistants/search", [1, 2]).status_code in (400, 422)


def test_the_key_is_checked_before_the_body(operator_key: str) -> None:
    response = Client().post("/api/assistants/search", {"bogus": 1}, content_type="application/json")

    assert response.status_code == 401


# -- OpenAPI and its page ----------------------------------------------------------------------


def test_the_openapi_document_is_generated_from_the_schemas() -> None:
    response = Client().get("/api/openapi.json")

    assert response.status_code == 200
    document = response.json()
    assert {
        "/api/ok",
        "/api/info",
        "/api/assistants/search",
        "/api/assistants/{assistant_id}",
        "/api/assistants/{assistant_id}/graph",
        "/api/assistants/{assistant_id}/schemas",
    } <= set(document["paths"])
    search = document["components"]["schemas"]["AssistantSearch"]
    assert search["additionalProperties"] is False
    assert {"KeyHeader", "BearerKey"} <= set(document["components"]["securitySchemes"])


def test_the_docs_page_loads_its_scripts_from_our_origin_under_the_csp() -> None:
    response = Client().get("/api/docs")

    assert response.status_code == 200
    page = response.content.decode()
    csp = response["Content-Security-Policy"]
    assert "script-src 'self'" in csp
    assert "/static/ninja/swagger-ui-bundle.js" in page
    assert "/static/ninja/swagger-ui-init.js" in page
    assert "cdn" not in page.lower()
    assert "http://" not in page
    assert "https://" not in page
    # The only inline script is JSON (settings for the init script), which a browser never runs.
    assert page.count("<script") == page.count('<script src="/static/') + page.count(
        'type="application/json"'
    )
    # Served with the app's other static files (collectstatic gathers them for WhiteNoise).
    for asset in ("swagger-ui-bundle.js", "swagger-ui-init.js", "swagger-ui.css"):
        assert finders.find(f"ninja/{asset}")


# -- the real LangGraph client -----------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_langgraph_sdk_sync_client_reads_the_assistants(live_server: Any, reviewer: User) -> None:
    client = get_sync_client(url=f"{live_server.url}/api", api_key=key_for(reviewer))

    found = client.assistants.search()
    assert [item["assistant_id"] for item in found] == RITAS
    paged = client.assistants.search(limit=2, response_format="object")
    assert [item["assistant_id"] for item in paged["assistants"]] == RITAS[:2]
    assert paged["next"] == "2"
    assistant = client.assistants.get("expense_approval")
    assert assistant["graph_id"] == "expense_approval"
    drawn = client.assistants.get_graph("expense_approval")
    assert {"pay", "__start__"} <= {node["id"] for node in drawn["nodes"]}
    assert client.assistants.get_graph("expense_approval", xray=True)["nodes"]
    schemas = client.assistants.get_schemas("expense_approval")
    assert schemas["graph_id"] == "expense_approval"
    assert "amount" in schemas["state_schema"]["properties"]
    with pytest.raises(NotFoundError):
        client.assistants.get("seed_demo")


@pytest.mark.django_db(transaction=True)
async def test_the_langgraph_sdk_async_client_reads_an_assistant(live_server: Any, rita_key: str) -> None:
    client = get_client(url=f"{live_server.url}/api", api_key=rita_key)

    assistant = await client.assistants.get("parallel_approval")
    found = await client.assistants.search(graph_id="parallel_approval")

    assert assistant["assistant_id"] == "parallel_approval"
    assert [item["assistant_id"] for item in found] == ["parallel_approval"]


@pytest.mark.django_db(transaction=True)
def test_the_langgraph_sdk_client_without_a_key_gets_a_401(live_server: Any) -> None:
    from langgraph_sdk.errors import AuthenticationError

    client = get_sync_client(url=f"{live_server.url}/api", api_key=None)

    with pytest.raises(AuthenticationError):
        client.assistants.search()
