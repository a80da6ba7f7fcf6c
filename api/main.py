"""The HTTP API under /api/, in the LangGraph server's paths and shapes, so that
`langgraph_sdk.get_client(url="https://host/api", api_key=...)` works against Signoff.

Built with django-ninja: the bodies are typed pydantic schemas (`api.schemas`), refused with
a 422 naming any field Signoff does not implement, and the OpenAPI document at
/api/openapi.json (shown at /api/docs, with the Swagger UI ninja ships, served from our own
static files) is generated from them. Errors are JSON `{"detail": ...}`, as LangGraph's server
answers.
"""

from __future__ import annotations

import logging
import tomllib
from functools import cache
from importlib.metadata import version

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError

from api import assistants, runs
from api.auth import BearerKey, KeyHeader, KeyRefused
from api.params import refuse_unknown_query
from api.schemas import Host, Info, Ok
from api.services import MISSING
from approvals.middleware import RETRY_AFTER_SECONDS
from workflows.execution import TRANSIENT_DATABASE_ERRORS

logger = logging.getLogger(__name__)


@cache
def signoff_version() -> str:
    # pyproject.toml is the one place the version is written; a deployment without it still serves.
    try:
        with (settings.BASE_DIR / "pyproject.toml").open("rb") as file:
            return str(tomllib.load(file)["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "unknown"


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
# Runs live under /threads/{id}/runs and /runs, so their router has the whole paths.
api.add_router("", runs.router)


@api.exception_handler(AuthenticationError)
def unauthorized(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    # Ninja raises a bare AuthenticationError when no scheme found a key at all.
    detail = str(exc) if isinstance(exc, KeyRefused) else MISSING
    response = api.create_response(request, {"detail": detail}, status=401)
    response["WWW-Authenticate"] = "Bearer"
    return response


@api.exception_handler(Exception)
def failed(request: HttpRequest, exc: Exception) -> HttpResponse:
    """JSON for a client, where Django would answer with the reviewer's HTML error pages: a
    database that cannot be reached is a 503 to try again, anything else a 500 (logged)."""
    if isinstance(exc, TRANSIENT_DATABASE_ERRORS):
        logger.warning("database unavailable for %s %s: %s", request.method, request.path, exc)
        response = api.create_response(
            request, {"detail": "the database is unavailable; try again shortly"}, status=503
        )
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
    logger.exception("%s %s failed", request.method, request.path, exc_info=exc)
    return api.create_response(request, {"detail": "Internal Server Error"}, status=500)


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
        # What this server serves so far; threads are planned (docs/api.md).
        flags={"assistants": True, "threads": False, "runs": True, "crons": False, "langsmith": False},
        host=Host(kind="self-hosted", project_id=None, revision_id=None, tenant_id=None),
    )


def not_found(request: HttpRequest, rest: str = "") -> JsonResponse:
    """Any other path under /api/: JSON, like the API's own 404s, not the reviewer's HTML page."""
    return JsonResponse({"detail": "Not Found"}, status=404)
