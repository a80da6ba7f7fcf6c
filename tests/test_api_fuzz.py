"""A schema-driven fuzz of every operation in the served OpenAPI document (/api/openapi.json),
with schemathesis: requests generated from the schemas, both ones that match them and ones that
do not, sent in process (WSGI) with a superuser's API key (the key that reaches every operation
and every workflow). The server never answers 500, and never 2xx to input that does not match
the schema (the house rule: nothing unimplemented is accepted and ignored).

Bounded and deterministic: a fixed number of examples per operation, derandomized (the same
cases every run, so it cannot flake) and without deadlines (the machine is shared).
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from django.test.client import ClientHandler
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import negative_data_rejection

from tests.clients import key_for
from tests.factories import make_user

EXAMPLES = 25

handler = ClientHandler(enforce_csrf_checks=True)


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """The Django app as WSGI, through Django's test handler: the same middleware and views,
    without closing the database connection after each request (the test's transaction must
    survive it); CSRF is checked as in production."""
    response = handler(environ)
    start_response(f"{response.status_code} {response.reason_phrase}", list(response.items()))
    if response.streaming:
        return [b"".join(response.streaming_content)]
    return [response.content]


# Collected once, at import: the document the app serves, and its operations.
schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app)


@pytest.fixture
def superuser_key(db: None) -> str:
    return key_for(make_user("fuzz", superuser=True))


def test_every_operation_of_the_document_loads_for_the_fuzz() -> None:
    # `ok()` raises for an operation whose schema schemathesis cannot read (it would be fuzzed
    # with nothing).
    paths = {result.ok().path for result in schema.get_all_operations()}

    assert {"/api/assistants/search", "/api/assistants/{assistant_id}", "/api/info", "/api/ok"} <= paths


@pytest.mark.django_db
@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    # The key fixture is made once per operation and reused by its examples, on purpose.
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)
def test_no_operation_fails_or_accepts_what_its_schema_refuses(case: Any, superuser_key: str) -> None:
    case.call_and_validate(
        headers={"x-api-key": superuser_key},
        checks=[not_a_server_error, negative_data_rejection],
    )
