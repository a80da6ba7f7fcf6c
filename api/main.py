"""The HTTP API under /api/, in the LangGraph server's paths and shapes, so that
`langgraph_sdk.get_client(url="https://host/api", api_key=...)` works against Signoff.

Built with django-ninja: the bodies are typed pydantic schemas (`api.schemas`), refused with
a 422 naming any field Signoff does not implement, and the OpenAPI document at
/api/openapi.json (shown at /api/docs, with the Swagger UI ninja ships, served from our own
static files) is generated from them. Errors are JSON `{"detail": ...}`, as LangGraph's server
answers.
"""

from __future__ import annotations

import tomllib
from functools import cache
from importlib.metadata import version

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError

from api import assistants
from api.auth import BearerKey, KeyHeader, KeyRefused
from api.params import refuse_unknown_query
from api.schemas import Host, Info, Ok
from api.services import MISSING


@cache
def signoff_version() -> str:
    with (settings.BASE_DIR / "pyproject.toml").open("rb") as file:
        return str(tomllib.load(file)["project"]["version"])


api = NinjaAPI(
    title="Signoff API",
    version=signoff_version(),
    description=(
        "The subset of LangGraph's Agent Server API that Signoff serves (see docs/api.md). "
        "Authenticate with an API key, as `x-api-key` or `Authorization: Bearer`."
    ),
    urls_namespace="api",
    auth=[KeyHeader(), BearerKey()],
)
api.add_router("/assistants", assistants.router)


@api.exception_handler(AuthenticationError)
def unauthorized(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    # Ninja raises a bare AuthenticationError when no scheme found a key at all.
    detail = str(exc) if isinstance(exc, KeyRefused) else MISSING
    response = api.create_response(request, {"detail": detail}, status=401)
    response["WWW-Authenticate"] = "Bearer"
    return response


@api.get("/ok", auth=None, response=Ok, tags=["system"])
def ok(request: HttpRequest) -> Ok:
    """Liveness: needs no key, touches no database."""
    refuse_unknown_query(request)
    return Ok(ok=True)


@api.get("/info", auth=None, response=Info, tags=["system"])
def info(request: HttpRequest) -> Info:
    """The server's version and what it serves, as LangGraph's server reports them. Agent Inbox
    asks without a key."""
    refuse_unknown_query(request)
    return Info(
        version=signoff_version(),
        langgraph_py_version=version("langgraph"),
        # What this server serves so far; threads and runs are planned (docs/api.md).
        flags={"assistants": True, "threads": False, "runs": False, "crons": False, "langsmith": False},
        host=Host(kind="self-hosted", project_id=None, revision_id=None, tenant_id=None),
    )


def not_found(request: HttpRequest, rest: str = "") -> JsonResponse:
    """Any other path under /api/: JSON, like the API's own 404s, not the reviewer's HTML page."""
    return JsonResponse({"detail": "Not Found"}, status=404)
