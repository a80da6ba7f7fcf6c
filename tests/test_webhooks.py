"""Webhooks: signed the Standard Webhooks way, sent to allowed URLs only, when a run ends or a
review opens, retried with backoff by a real worker, each delivery recorded, nothing sent for
a change that rolled back."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.utils import timezone
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from api import webhooks
from api.models import WebhookDelivery, WebhookEndpoint
from approvals.models import Review
from config import settings as config_settings
from tests.factories import EXPENSE, decide, run_queued
from tests.pages import client_for
from tests.workers import Worker, wait_for
from workflows import services
from workflows.audit import Action
from workflows.models import AuditEvent, Run, Thread

# The test vector the Standard Webhooks spec publishes (and its libraries test against).
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = '{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
DEPLOYMENT_SECRET = "whsec_" + base64.b64encode(b"tests-only webhook secret, 32 b").decode()


def spec_signature(secret: str, message_id: str, timestamp: str, body: bytes) -> str:
    """The spec's signature, written out here independently of api.webhooks and the package."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


# -- a receiver: a real HTTP server on 127.0.0.1 ------------------------------------------------


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    url: str
    requests: list[Received] = field(default_factory=list)
    # The status of each answer in turn; once used up, 200.
    answers: list[int] = field(default_factory=list)
    location: str = ""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            state.requests.append(Received({k.lower(): v for k, v in self.headers.items()}, body))
            status = state.answers.pop(0) if state.answers else 200
            self.send_response(status)
            if state.location:
                self.send_header("location", state.location)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/signoff"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def allowed(settings: Any, receiver: Receiver) -> Receiver:
    """The receiver's host on the allow-list of this process, with the deployment secret."""
    settings.SIGNOFF_WEBHOOK_ALLOWED_URLS = [receiver.url.rsplit("/", 2)[0] + "/hooks/"]
    settings.SIGNOFF_WEBHOOK_SECRET = DEPLOYMENT_SECRET
    settings.SIGNOFF_WEBHOOK_RETRY_SECONDS = [0.1]
    settings.SIGNOFF_WEBHOOK_MAX_ATTEMPTS = 3
    return receiver


def worker_env(receiver: Receiver, **env: str) -> dict[str, str]:
    return {
        "SIGNOFF_WEBHOOK_ALLOWED_URLS": receiver.url.rsplit("/", 2)[0] + "/hooks/",
        "SIGNOFF_WEBHOOK_SECRET": DEPLOYMENT_SECRET,
        "SIGNOFF_WEBHOOK_RETRY_SECONDS": "0.2",
        **env,
    }


def verified(received: Received, secret: str) -> dict[str, Any]:
    """The payload, once the package's verifier and the spec written out here both accept it."""
    ours = spec_signature(
        secret, received.headers["webhook-id"], received.headers["webhook-timestamp"], received.body
    )
    assert received.headers["webhook-signature"] == ours
    payload: dict[str, Any] = Webhook(secret).verify(received.body, received.headers)
    return payload


# -- signing -----------------------------------------------------------------------------------


def test_the_signature_is_the_one_the_standard_webhooks_test_vector_gives() -> None:
    headers = webhooks.signed_headers(
        message_id=SPEC_ID,
        body=SPEC_BODY,
        secret=SPEC_SECRET,
        now=datetime.fromtimestamp(SPEC_TIMESTAMP, UTC),
    )

    assert headers == {
        "webhook-id": SPEC_ID,
        "webhook-timestamp": str(SPEC_TIMESTAMP),
        "webhook-signature": SPEC_SIGNATURE,
    }
    assert spec_signature(SPEC_SECRET, SPEC_ID, str(SPEC_TIMESTAMP), SPEC_BODY.encode()) == SPEC_SIGNATURE


def test_a_tampered_body_does_not_verify() -> None:
    headers = webhooks.signed_headers(message_id="msg_1", body='{"a":1}', secret=SPEC_SECRET)

    with pytest.raises(WebhookVerificationError):
        Webhook(SPEC_SECRET).verify('{"a":2}', headers)
    assert Webhook(SPEC_SECRET).verify('{"a":1}', headers) == {"a": 1}


def test_a_new_endpoint_secret_is_a_standard_webhooks_secret() -> None:
    secret = webhooks.new_secret()

    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    assert secret != webhooks.new_secret()


# -- the allow-list ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "refusal"),
    [
        ("https://hooks.example.com/signoff/runs", None),
        ("https://hooks.example.com/signoff", None),
        ("https://hooks.example.com/signoffice", "is not allowed"),
        ("http://hooks.example.com/signoff/runs", "is not allowed"),
        ("https://hooks.example.com:8443/signoff/runs", "is not allowed"),
        ("https://a.ci.example.org/x", None),
        ("https://ci.example.org.evil.com/x", "is not allowed"),
        ("http://127.0.0.1:9000/anything", None),
        ("http://127.0.0.1:9001/anything", "is not allowed"),
        ("https://evil.example.net/", "is not allowed"),
        ("https://user:pw@hooks.example.com/signoff/", "user name or password"),
        ("ftp://hooks.example.com/signoff/", "must be http:// or https://"),
        ("/signoff/", "must be http:// or https://"),
        ("https://hooks.example.com/signoff/../admin", ". or .. segments"),
        ("https://hooks.example.com/signoff/%2e%2e/admin", ". or .. segments"),
        ("https://hooks.example.com:99999/signoff/", "cannot be read"),
        ("https://hooks.example.com/sign off", "spaces or control characters"),
        ("", "empty"),
    ],
)
def test_a_url_outside_the_allow_list_is_refused_with_a_message(
    settings: Any, url: str, refusal: str | None
) -> None:
    settings.SIGNOFF_WEBHOOK_ALLOWED_URLS = [
        "https://hooks.example.com/signoff",
        "*.ci.example.org",
        "127.0.0.1:9000",
    ]

    found = webhooks.url_refusal(url)

    assert found is None if refusal is None else refusal in (found or "")
    assert "pw" not in (found or "")


def test_with_no_allow_list_webhooks_are_off(settings: Any) -> None:
    settings.SIGNOFF_WEBHOOK_ALLOWED_URLS = []

    assert "webhooks are off" in (webhooks.url_refusal("https://hooks.example.com/") or "")


@pytest.mark.parametrize(
    "entry",
    ["htp://hooks.example.com/", "https://u@hooks.example.com/", "hooks example.com", "https://x/?a=1"],
)
def test_a_bad_allow_list_entry_stops_start_up(monkeypatch: pytest.MonkeyPatch, entry: str) -> None:
    monkeypatch.setenv("SIGNOFF_WEBHOOK_ALLOWED_URLS", f"hooks.example.com,{entry}")

    with pytest.raises(ImproperlyConfigured, match="SIGNOFF_WEBHOOK_ALLOWED_URLS"):
        config_settings.webhook_allow_list("SIGNOFF_WEBHOOK_ALLOWED_URLS")


def test_the_deployment_secret_is_checked_and_needed_once_webhooks_are_on() -> None:
    def secret(value: str, *, needed: bool = True, debug: bool = False) -> str:
        return config_settings.webhook_secret(value, needed=needed, debug=debug, secret_key="k")

    assert secret(SPEC_SECRET) == SPEC_SECRET
    assert secret("", needed=False) == ""
    assert secret("", debug=True).startswith("whsec_")
    for bad in ("", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_c2hvcnQ=", "whsec_not base64!"):
        with pytest.raises(ImproperlyConfigured, match="SIGNOFF_WEBHOOK_SECRET"):
            secret(bad)


# -- endpoints in the admin --------------------------------------------------------------------

ADD = "/admin/api/webhookendpoint/add/"


@pytest.mark.django_db
def test_the_admin_creates_an_endpoint_and_sees_its_secret_once(admin: User, allowed: Receiver) -> None:
    client = client_for(admin)
    form = client.get(ADD).content.decode()
    assert '<option value="expense_approval">' in form
    assert "shown once, on the next page" in form

    response = client.post(
        ADD, {"workflow": "expense_approval", "url": allowed.url, "run_ended": "on", "review_opened": "on"}
    )

    assert response.status_code == 200
    endpoint = WebhookEndpoint.objects.get()
    page = response.content.decode()
    assert endpoint.secret.startswith("whsec_")
    assert endpoint.secret in page
    assert "shown only this once" in page
    assert "no-store" in response["Cache-Control"]
    assert (endpoint.workflow, endpoint.url, endpoint.events(), endpoint.active) == (
        "expense_approval",
        allowed.url,
        ["run.ended", "review.opened"],
        True,
    )
    for later in ("/admin/api/webhookendpoint/", f"/admin/api/webhookendpoint/{endpoint.pk}/change/"):
        again = client.get(later)
        assert again.status_code == 200
        assert endpoint.secret not in again.content.decode()
    event = AuditEvent.objects.get(action=Action.WEBHOOK_CREATED)
    assert event.actor == admin
    assert event.data == {
        "endpoint_id": endpoint.pk,
        "workflow": "expense_approval",
        "url": allowed.url,
        "events": ["run.ended", "review.opened"],
        "active": True,
    }
    assert endpoint.secret not in json.dumps(event.data)


@pytest.mark.django_db
def test_the_admin_refuses_a_url_outside_the_allow_list(admin: User, allowed: Receiver) -> None:
    response = client_for(admin).post(
        ADD, {"workflow": "expense_approval", "url": "https://evil.example.net/x", "run_ended": "on"}
    )

    assert response.status_code == 200
    assert "https://evil.example.net/x is not allowed" in response.content.decode()
    assert not WebhookEndpoint.objects.exists()
    assert not AuditEvent.objects.filter(action=Action.WEBHOOK_CREATED).exists()


@pytest.mark.django_db
def test_the_admin_changes_an_endpoint_and_turning_it_off_is_audited(admin: User, allowed: Receiver) -> None:
    endpoint = webhooks.create_endpoint(workflow="expense_approval", url=allowed.url, actor=admin).endpoint
    client = client_for(admin)

    response = client.post(
        f"/admin/api/webhookendpoint/{endpoint.pk}/change/", {"url": allowed.url, "run_ended": "on"}
    )

    assert response.status_code == 302
    endpoint.refresh_from_db()
    assert (endpoint.events(), endpoint.active) == (["run.ended"], False)
    event = AuditEvent.objects.get(action=Action.WEBHOOK_CHANGED)
    assert event.data["before"]["active"] is True
    assert event.data["after"] == {
        "url": allowed.url,
        "events": ["run.ended"],
        "active": False,
    }
    assert client.post(f"/admin/api/webhookendpoint/{endpoint.pk}/delete/").status_code == 403


@pytest.mark.django_db
def test_the_services_refuse_an_unknown_workflow_and_no_events(admin: User, allowed: Receiver) -> None:
    with pytest.raises(services.InvalidState, match="nope"):
        webhooks.create_endpoint(workflow="nope", url=allowed.url, actor=admin)
    with pytest.raises(services.InvalidState, match="at least one event"):
        webhooks.create_endpoint(
            workflow="expense_approval", url=allowed.url, run_ended=False, review_opened=False, actor=admin
        )
    with pytest.raises(RuntimeError), transaction.atomic():
        webhooks.create_endpoint(workflow="expense_approval", url=allowed.url, actor=admin)


@pytest.mark.django_db
def test_deliveries_are_read_only_in_the_admin(admin: User) -> None:
    client = client_for(admin)

    assert client.get("/admin/api/webhookdelivery/").status_code == 200
    assert client.get("/admin/api/webhookdelivery/add/").status_code == 403


# -- queueing: with the change, never without it --------------------------------------------------


def published(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    sent: list[int] = []
    monkeypatch.setattr(webhooks, "_publish", lambda delivery_id, countdown: sent.append(delivery_id))
    return sent


@pytest.mark.django_db(transaction=True)
def test_nothing_is_queued_or_sent_when_the_change_rolls_back(
    admin: User, allowed: Receiver, doorbell: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    webhooks.create_endpoint(workflow="expense_approval", url=allowed.url, actor=admin)
    sent = published(monkeypatch)
    thread = services.start_thread(workflow="expense_approval", input=EXPENSE, actor=admin)
    queued_inside: list[int] = []

    def cancel_then_fail() -> None:
        with transaction.atomic():
            services.cancel_in_transaction(thread=thread, actor=admin)
            queued_inside.append(WebhookDelivery.objects.count())
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        cancel_then_fail()

    assert queued_inside == [1]
    assert WebhookDelivery.objects.count() == 0
    assert sent == []

    services.cancel_thread(thread=thread, actor=admin)

    delivery = WebhookDelivery.objects.get()
    assert sent == [delivery.pk]
    body = json.loads(delivery.body)
    assert body["type"] == "run.ended"
    assert body["data"]["status"] == "interrupted"
    assert body["data"]["thread_status"] == "idle"
    assert body["data"]["thread_id"] == thread.thread_id
    assert allowed.requests == []


@pytest.mark.django_db(transaction=True)
def test_a_url_taken_off_the_list_since_is_recorded_failed_and_never_sent(
    admin: User, allowed: Receiver, doorbell: list[int], monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    thread = services.start_thread(workflow="expense_approval", input=EXPENSE, actor=admin)
    Run.objects.filter(thread=thread).update(webhook=allowed.url)
    sent = published(monkeypatch)
    settings.SIGNOFF_WEBHOOK_ALLOWED_URLS = ["https://hooks.example.com/"]

    services.cancel_thread(thread=thread, actor=admin)

    delivery = WebhookDelivery.objects.get()
    assert delivery.status == WebhookDelivery.Status.FAILED
    assert "is not allowed" in delivery.last_error
    assert (sent, allowed.requests) == ([], [])


# -- sending, in this process ---------------------------------------------------------------------


def cancelled_with_webhook(admin: User, url: str) -> WebhookDelivery:
    thread = services.start_thread(workflow="expense_approval", input=EXPENSE, actor=admin)
    Run.objects.filter(thread=thread).update(webhook=url)
    services.cancel_thread(thread=thread, actor=admin)
    return WebhookDelivery.objects.get(thread=thread)


@pytest.mark.django_db
def test_a_receiver_that_keeps_failing_is_tried_max_attempts_times_then_the_delivery_fails(
    admin: User, allowed: Receiver, doorbell: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    published(monkeypatch)
    delivery = cancelled_with_webhook(admin, allowed.url)
    allowed.answers = [500, 503, 502]

    outcomes = [webhooks.attempt_delivery(delivery_id=delivery.pk) for _ in range(2)]
    delivery.refresh_from_db()
    assert [outcome.retry_in for outcome in outcomes] == [0.1, 0.1]
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("pending", 2, 503)
    assert delivery.next_attempt_at is not None
    assert delivery.next_attempt_at > timezone.now() - timedelta(seconds=1)
    webhooks.WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())

    last = webhooks.attempt_delivery(delivery_id=delivery.pk)

    delivery.refresh_from_db()
    assert (last.status, last.retry_in) == ("failed", None)
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("failed", 3, 502)
    assert delivery.last_error == "HTTP 502 Bad Gateway"
    assert delivery.finished_at is not None
    assert len(allowed.requests) == 3
    assert len({received.headers["webhook-id"] for received in allowed.requests}) == 1
    assert webhooks.attempt_delivery(delivery_id=delivery.pk).status == "failed"
    assert len(allowed.requests) == 3


@pytest.mark.django_db
def test_a_redirect_is_not_followed(
    admin: User, allowed: Receiver, doorbell: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    published(monkeypatch)
    delivery = cancelled_with_webhook(admin, allowed.url)
    allowed.answers, allowed.location = [302], "http://169.254.169.254/latest/meta-data/"

    webhooks.attempt_delivery(delivery_id=delivery.pk)

    delivery.refresh_from_db()
    assert delivery.last_status_code == 302
    assert "redirects are not followed" in delivery.last_error
    assert len(allowed.requests) == 1


@pytest.mark.django_db
def test_the_sweeper_publishes_again_a_delivery_whose_message_was_lost(
    admin: User, allowed: Receiver, doorbell: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = published(monkeypatch)
    delivery = cancelled_with_webhook(admin, allowed.url)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        next_attempt_at=timezone.now() - timedelta(minutes=5)
    )

    assert webhooks.sweep_deliveries(grace=60) == [delivery.pk]
    assert sent == [delivery.pk]
    assert webhooks.sweep_deliveries(grace=600) == []


# -- sending, by real workers -------------------------------------------------------------------


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Any]:
    from config.celery import app

    # Messages left by other tests' services would reach these workers first.
    app.control.purge()
    started: list[Worker] = []

    def start(name: str, **env: str) -> Worker:
        worker = Worker(tmp_path, name, **env).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def finished(delivery_count: int) -> list[WebhookDelivery]:
    deliveries = list(WebhookDelivery.objects.exclude(status=WebhookDelivery.Status.PENDING).order_by("id"))
    return deliveries if len(deliveries) >= delivery_count else []


@pytest.mark.workers
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_failing_receiver_is_retried_by_the_worker_until_it_succeeds(
    admin: User, allowed: Receiver, workers: Any
) -> None:
    allowed.answers = [500, 500]
    thread = services.start_thread(workflow="expense_approval", input=EXPENSE, actor=admin)
    # What the API's `webhook` field sets (api/runs.py), set before any worker takes the run.
    Run.objects.filter(thread=thread).update(webhook=allowed.url)

    workers("hooks", **worker_env(allowed, SIGNOFF_WEBHOOK_MAX_ATTEMPTS="4"))
    [delivery] = wait_for(lambda: finished(1), timeout=60, what="the webhook to be delivered")

    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("succeeded", 3, 200)
    assert delivery.event == "run.ended"
    assert delivery.endpoint is None
    assert delivery.last_error == ""
    assert len(allowed.requests) == 3
    assert len({received.headers["webhook-id"] for received in allowed.requests}) == 1
    payload = verified(allowed.requests[-1], DEPLOYMENT_SECRET)
    run = Run.objects.get(thread=thread)
    assert payload["type"] == "run.ended"
    assert payload["data"]["run_id"] == str(run.public_id)
    assert payload["data"]["status"] == "success"
    assert payload["data"]["thread_status"] == "interrupted"
    assert "values" not in payload["data"]
    assert allowed.requests[-1].headers["content-type"] == "application/json"


@pytest.mark.workers
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_an_endpoint_gets_review_opened_and_run_ended_signed_with_its_secret(
    admin: User, allowed: Receiver, workers: Any, settings: Any
) -> None:
    settings.SIGNOFF_BASE_URL = "https://signoff.example.com"
    new = webhooks.create_endpoint(workflow="expense_approval", url=allowed.url, actor=admin)
    webhooks.create_endpoint(workflow="content_review", url=allowed.url, actor=admin)
    thread = services.start_thread(workflow="expense_approval", input=EXPENSE, actor=admin)

    workers("hooks", **worker_env(allowed, SIGNOFF_BASE_URL="https://signoff.example.com"))
    deliveries = wait_for(lambda: finished(2), timeout=60, what="both webhooks to be delivered")

    assert sorted((d.event, d.status, d.attempts, d.endpoint_id) for d in deliveries) == [
        ("review.opened", "succeeded", 1, new.endpoint.pk),
        ("run.ended", "succeeded", 1, new.endpoint.pk),
    ]
    payloads = {payload["type"]: payload for payload in (verified(r, new.secret) for r in allowed.requests)}
    review = Review.objects.get(thread=thread)
    opened = payloads["review.opened"]["data"]
    assert opened == {
        "review_id": review.pk,
        "thread_id": thread.thread_id,
        "run_id": str(review.run.public_id) if review.run else None,
        "assistant_id": "expense_approval",
        "workflow": "expense_approval",
        "node": "pay",
        "interrupt_id": review.interrupt_id,
        "kind": "breakpoint",
        "created_at": opened["created_at"],
        "due_at": opened["due_at"],
        "url": f"https://signoff.example.com/reviews/{review.pk}/",
    }
    assert datetime.fromisoformat(opened["due_at"]) == review.due_at
    assert payloads["run.ended"]["data"]["thread_status"] == "interrupted"
    assert WebhookDelivery.objects.get(event="review.opened").review == review
    with pytest.raises(WebhookVerificationError):
        Webhook(DEPLOYMENT_SECRET).verify(allowed.requests[0].body, allowed.requests[0].headers)


@pytest.mark.django_db(transaction=True)
def test_a_run_ends_at_its_pause_and_at_its_end_and_each_queues_run_ended(
    admin: User, reviewer: User, allowed: Receiver, doorbell: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    webhooks.create_endpoint(workflow="expense_approval", url=allowed.url, review_opened=False, actor=admin)
    sent = published(monkeypatch)
    thread = services.start_thread(workflow="expense_approval", input=EXPENSE, actor=admin)
    run_queued(thread)
    decide(Review.objects.get(thread=thread), reviewer, "approve")
    run_queued(thread)

    assert thread.status == Thread.Status.COMPLETED
    deliveries = list(WebhookDelivery.objects.order_by("id"))
    ended = [json.loads(delivery.body)["data"] for delivery in deliveries]
    assert [(data["status"], data["thread_status"]) for data in ended] == [
        ("success", "interrupted"),
        ("success", "idle"),
    ]
    assert len({data["run_id"] for data in ended}) == 2
    assert sent == [delivery.pk for delivery in deliveries]


@pytest.mark.django_db
def test_celery_finds_the_webhook_tasks_and_beat_schedules_the_sweep() -> None:
    from django.conf import settings

    from config.celery import app

    app.loader.import_default_modules()

    assert {webhooks.DELIVER, webhooks.SWEEP} <= set(app.tasks)
    assert settings.CELERY_BEAT_SCHEDULE["webhook-sweep"]["task"] == webhooks.SWEEP


@pytest.mark.django_db(transaction=True)
def test_a_failed_run_queues_run_ended_with_its_status_and_no_error_text(
    admin: User, allowed: Receiver, doorbell: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    webhooks.create_endpoint(workflow="expense_approval", url=allowed.url, actor=admin)
    published(monkeypatch)
    thread = services.start_thread(workflow="expense_approval", input=EXPENSE, actor=admin)
    run = Run.objects.get(thread=thread)
    claim = services.claim_run(run_id=run.pk, holder="tests")

    assert services.fail_run(run_id=run.pk, token=claim.token, error="secret amount 1234 broke it")

    delivery = WebhookDelivery.objects.get()
    data = json.loads(delivery.body)["data"]
    assert (data["status"], data["thread_status"], data["run_id"]) == ("error", "error", str(run.public_id))
    assert "1234" not in delivery.body


@pytest.mark.django_db(transaction=True)
def test_a_webhook_that_cannot_be_queued_does_not_fail_the_run(
    admin: User, allowed: Receiver, doorbell: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    webhooks.create_endpoint(workflow="expense_approval", url=allowed.url, actor=admin)

    def broken(run: Run, thread: Thread) -> dict[str, Any]:
        raise ValueError("a bug in the payload")

    monkeypatch.setattr(webhooks, "run_payload", broken)
    thread = services.start_thread(workflow="expense_approval", input=EXPENSE, actor=admin)

    services.cancel_thread(thread=thread, actor=admin)

    thread.refresh_from_db()
    assert thread.status == Thread.Status.CANCELLED
    assert not WebhookDelivery.objects.exists()
