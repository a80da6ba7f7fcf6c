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
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_safe
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, Throttled
from ninja.parser import Parser
from ninja.types import DictStrAny

from api import assistants, runs, threads
from api.auth import BearerKey, KeyHeader, KeyRefused
from api.params import refuse_unknown_query
from api.schemas import Host, Info, Ok
from api.services import MISSING
from api.throttle import PerKey
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


class BodyNotJson(ValueError):
    """A request body that is not JSON (or not UTF-8)."""


class JsonParser(Parser):
    def parse_body(self, request: HttpRequest) -> DictStrAny:
        # Ninja turns any parser failure into a 400; marked, it becomes the 422 below.
        try:
            return super().parse_body(request)
        except ValueError as exc:
            raise BodyNotJson(str(exc)) from exc


api = NinjaAPI(
    title="Signoff API",
    version=signoff_version(),
    description=(
        "The subset of LangGraph's Agent Server API that Signoff serves (see docs/api.md). "
        "Authenticate with an API key, as `x-api-key` or `Authorization: Bearer`."
    ),
    urls_namespace="api",
    auth=[KeyHeader(), BearerKey()],
    # Every operation of every router, after its key is checked (api/throttle.py).
    throttle=PerKey(),
    parser=JsonParser(),
    # The document and its page are read-only: any other method is a 405, like the operations'.
    docs_decorator=require_safe,
)
api.add_router("/assistants", assistants.router)
api.add_router("/threads", threads.router)
# Runs live under /threads/{id}/runs and /runs, so their router has the whole paths.
api.add_router("", runs.router)


@api.exception_handler(AuthenticationError)
def unauthorized(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    # Ninja raises a bare AuthenticationError when no scheme found a key at all.
    detail = str(exc) if isinstance(exc, KeyRefused) else MISSING
    response = api.create_response(request, {"detail": detail}, status=401)
    response["WWW-Authenticate"] = "Bearer"
    return response


@api.exception_handler(HttpError)
def http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    if isinstance(exc.__cause__, BodyNotJson):
        # As LangGraph's server does (a 422), in the shape of pydantic's other 422s.
        error = {"type": "json_invalid", "loc": ["body"], "msg": f"JSON decode error: {exc.__cause__}"}
        return api.create_response(request, {"detail": [error]}, status=422)
    return api.create_response(request, {"detail": str(exc)}, status=exc.status_code)


@api.exception_handler(runs.ApprovalPending)
def approval_pending(request: HttpRequest, exc: runs.ApprovalPending) -> HttpResponse:
    # 202: the answer was taken (an approval, audited) but nothing ran; the body says what is
    # still needed. Not a run object: no run exists until the last approver answers.
    return api.create_response(request, exc.body, status=202)


@api.exception_handler(Throttled)
def throttled(request: HttpRequest, exc: Throttled) -> HttpResponse:
    # Ninja adds Retry-After (whole seconds) to this response.
    detail = f"too many requests for this API key: at most {settings.SIGNOFF_API_RATE_LIMIT}"
    return api.create_response(request, {"detail": detail}, status=429)


@api.exception_handler(RequestDataTooBig)
def too_large(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
    # A JSON body is read by the API, past the middleware that answers an oversized form with a page.
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    detail = f"the request body is too large: at most {limit} bytes (DATA_UPLOAD_MAX_MEMORY_SIZE)"
    return api.create_response(request, {"detail": detail}, status=413)


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
        flags={"assistants": True, "threads": True, "runs": True, "crons": False, "langsmith": False},
        host=Host(kind="self-hosted", project_id=None, revision_id=None, tenant_id=None),
    )


def not_found(request: HttpRequest, rest: str = "") -> JsonResponse:
    """Any other path under /api/: JSON, like the API's own 404s, not the reviewer's HTML page."""
    return JsonResponse({"detail": "Not Found"}, status=404)
