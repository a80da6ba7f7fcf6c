"""The API's JSON answers where django-ninja's own are not: a method a path does not serve (405,
plain text from ninja) and a body that is not JSON (a 400 from ninja, a 422 from LangGraph's server)."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from api import services

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(("method", "path"), [("delete", "/api/ok"), ("put", "/api/assistants/search")])
def test_a_method_a_path_does_not_serve_is_a_json_405_with_allow(method: str, path: str) -> None:
    response = getattr(Client(), method)(path)

    assert response.status_code == 405
    assert response["Content-Type"] == "application/json; charset=utf-8"
    assert response.json() == {"detail": "Method Not Allowed"}
    assert response["Allow"] in ("GET", "POST")


@pytest.mark.parametrize("path", ["/api/openapi.json", "/api/docs"])
def test_the_openapi_document_and_its_page_are_read_only(path: str) -> None:
    assert Client().get(path).status_code == 200
    assert Client().head(path).status_code == 200

    response = Client().post(path, {}, content_type="application/json")

    assert response.status_code == 405
    assert response.json() == {"detail": "Method Not Allowed"}
    assert response["Allow"] == "GET, HEAD"


@pytest.mark.parametrize("method", ["get", "post", "delete"])
def test_the_apis_root_is_a_json_404(method: str) -> None:
    response = getattr(Client(), method)("/api/")

    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}


def test_a_405_of_a_reviewer_page_is_left_as_django_makes_it() -> None:
    response = Client().put("/accounts/logout/")

    assert response.status_code == 405
    assert not response["Content-Type"].startswith("application/json")


@pytest.mark.parametrize("body", [b"{not json", b"\xff\xfe", b"{'a': 1}"])
def test_a_body_that_is_not_json_is_a_422(reviewer: User, body: bytes) -> None:
    key = services.create_api_key(user=reviewer, name="tests", actor=None).secret

    response = Client().post(
        "/api/assistants/search", body, content_type="application/json", headers={"x-api-key": key}
    )

    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["type"] == "json_invalid"
    assert error["loc"] == ["body"]
    assert error["msg"].startswith("JSON decode error: ")


@pytest.mark.parametrize(
    "content_type", ["multipart/form-data", "application/x-www-form-urlencoded", "text/plain"]
)
def test_a_body_that_is_not_typed_json_is_a_415_read_by_nothing(reviewer: User, content_type: str) -> None:
    # A multipart body without a boundary was read as a form by a middleware and then could not
    # be read again by the view: a 500 the fuzz found.
    key = services.create_api_key(user=reviewer, name="tests", actor=None).secret

    response = Client().post(
        "/api/threads", b'{"metadata": {}}', content_type=content_type, headers={"x-api-key": key}
    )

    assert response.status_code == 415
    assert content_type in response.json()["detail"]


def test_a_body_over_the_upload_limit_is_a_413_not_a_500(reviewer: User, settings: Any) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100
    key = services.create_api_key(user=reviewer, name="tests", actor=None).secret

    response = Client().post(
        "/api/assistants/search",
        {"name": "x" * 200},
        content_type="application/json",
        headers={"x-api-key": key},
    )

    assert response.status_code == 413
    assert response.json() == {
        "detail": "the request body is too large: at most 100 bytes (DATA_UPLOAD_MAX_MEMORY_SIZE)"
    }


def test_other_http_errors_keep_their_status_and_detail(reviewer: User) -> None:
    key = services.create_api_key(user=reviewer, name="tests", actor=None).secret

    response = Client().get("/api/assistants/no_such_workflow", headers={"x-api-key": key})

    assert response.status_code == 404
    assert response.json() == {"detail": "Assistant 'no_such_workflow' not found"}


def test_the_json_405_keeps_the_cors_headers(settings: Any) -> None:
    settings.CORS_ALLOWED_ORIGINS = ["https://inbox.example.com"]

    response = Client().delete("/api/ok", headers={"Origin": "https://inbox.example.com"})

    assert response.status_code == 405
    assert response["Access-Control-Allow-Origin"] == "https://inbox.example.com"
    assert response["Allow"] == "GET"
