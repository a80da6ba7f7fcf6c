"""Notifications: emails to the right people, received by a real SMTP server (aiosmtpd), with no
state value that the recipient may not see; preferences; the daily digest once a day; retries;
chat webhooks; the settings page."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from api import webhooks
from approvals import links
from approvals.models import Link, Review
from approvals.signals import (
    review_due_soon,
    review_escalated,
    review_follow_up,
    review_opened,
    review_overdue,
    review_reassigned,
)
from notifications import messages, queries, services
from notifications.models import ChatEndpoint, Preference, Send
from tests.factories import EXPENSE, make_user, open_review, run_queued
from tests.html import form_fields
from tests.mailserver import MailServer
from tests.pages import HX, client_for
from tests.workers import Worker, wait_for
from workflows import services as engine_services
from workflows.audit import Action
from workflows.models import AuditEvent, Thread

BASE = "https://signoff.example.com"
# The expense claim's state: employee and category are the workflow's summary fields, the
# description and the amount are not and must never reach an email.
CLAIM = {**EXPENSE, "employee": "Zelda Quux", "description": "Dinner at Chez Secret", "amount": 987.65}
SECRETS = ("Chez Secret", "987.65", "987,65")


def links_in(text: str) -> list[Link]:
    """The signed one-click links (approvals.links) an email carries, as issued."""
    return [
        links.verify(unquote(token))
        for token in re.findall(re.escape(BASE) + r"/links/\?t=([^\s\"<>&]+)", text)
    ]


def actions_in(text: str) -> set[str]:
    return {link.action for link in links_in(text)}


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The send ids the services would publish to Celery, captured instead."""
    sent: list[int] = []
    monkeypatch.setattr(services, "_publish", sent.append)
    return sent


@dataclass
class Receiver:
    """A chat's incoming webhook: a real HTTP server on 127.0.0.1, keeping what it is sent."""

    url: str
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)


@pytest.fixture
def receiver(settings: Any) -> Iterator[Receiver]:
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            state.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
            json.loads(body)
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/chat"
    settings.SIGNOFF_WEBHOOK_ALLOWED_URLS = [state.url.rsplit("/", 2)[0] + "/hooks/"]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def base_url(settings: Any) -> str:
    settings.SIGNOFF_BASE_URL = BASE
    settings.SIGNOFF_NOTIFY_RETRY_SECONDS = [0.1]
    settings.SIGNOFF_NOTIFY_MAX_ATTEMPTS = 3
    return BASE


def claim_thread(actor: User, title: str = "Team offsite") -> Thread:
    thread = engine_services.start_thread(workflow="expense_approval", input=CLAIM, actor=actor, title=title)
    run_queued(thread)
    return thread


def deliver_all() -> list[Send]:
    """Send every pending notification here, as the worker's task does."""
    for send_id in Send.objects.filter(status=Send.Status.PENDING).values_list("pk", flat=True):
        services.deliver(send_id=send_id)
    return list(Send.objects.order_by("id"))


def assert_no_secret(received: Any) -> None:
    for secret in SECRETS:
        assert secret not in received.text
        assert secret not in received.html
        assert secret not in received.subject


def emitted(signal: Any, **kwargs: Any) -> None:
    """Send a review signal inside a transaction, as the deadline and claim services do."""
    with transaction.atomic():
        signal.send(sender=Review, **kwargs)


# -- a review opens --------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_reviewer_group_is_emailed_when_a_review_opens_with_links_and_summary_values_only(
    staff: User,
    reviewer: User,
    other_reviewer: User,
    tester: User,
    admin: User,
    smtp: MailServer,
    base_url: str,
    doorbell: list[int],
    published: list[int],
) -> None:
    idle = make_user("idle", groups=["finance"])
    mute = make_user("mute", groups=["finance"])
    User.objects.filter(pk=idle.pk).update(is_active=False)
    User.objects.filter(pk=mute.pk).update(email="")

    thread = claim_thread(staff)
    review = open_review(thread)
    sends = list(Send.objects.order_by("id"))

    assert sorted(send.address for send in sends) == ["oscar@example.com", "rita@example.com"]
    assert {(send.kind, send.channel, send.status, send.review_id) for send in sends} == {
        ("opened", "email", "pending", review.pk)
    }
    assert published == [send.pk for send in sends]
    deliver_all()
    assert sorted((s.status, s.attempts) for s in Send.objects.all()) == [("sent", 1), ("sent", 1)]
    assert all(send.sent_at is not None for send in Send.objects.all())
    assert sorted(address for item in smtp.received for address in item.recipients) == [
        "oscar@example.com",
        "rita@example.com",
    ]
    [mail] = smtp.to("rita@example.com")
    assert mail.subject == "A review is waiting: Team offsite (Expense approval)"
    assert mail.message["from"] == "Signoff <signoff@example.com>"
    assert actions_in(mail.text) == actions_in(mail.html) == {"approve", "reject", "open"}
    assert {(link.recipient_id, link.review_id) for link in links_in(mail.text)} == {(reviewer.pk, review.pk)}
    assert "Step: pay" in mail.text
    assert "employee: Zelda Quux" in mail.text
    assert "travel" in mail.html
    assert_no_secret(mail)


@pytest.mark.django_db(transaction=True)
def test_nothing_is_queued_when_the_change_rolls_back(
    published: list[int], review: Review, reviewer: User, other_reviewer: User
) -> None:
    Send.objects.all().delete()

    queued: list[int] = []

    def change_that_fails() -> None:
        with transaction.atomic():
            review_opened.send(sender=Review, review=review)
            queued.append(Send.objects.count())
            raise RuntimeError("the change fails")

    with pytest.raises(RuntimeError):
        change_that_fails()

    assert queued == [2]
    assert Send.objects.count() == 0
    assert published == []


@pytest.mark.django_db(transaction=True)
def test_queueing_outside_a_transaction_is_refused(review: Review, reviewer: User) -> None:
    with pytest.raises(RuntimeError, match="inside the transaction"):
        services.queue_review_sends(kind=Send.Kind.OPENED, review=review, users=[reviewer])


# -- preferences -----------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_digest_and_off_mean_no_email_as_a_review_opens_and_another_workflow_is_unaffected(
    staff: User, reviewer: User, other_reviewer: User, doorbell: list[int], published: list[int]
) -> None:
    services.set_preferences(user=reviewer, choices={"expense_approval": "digest"})
    services.set_preferences(
        user=other_reviewer, choices={"expense_approval": "off", "content_review": "off"}
    )

    claim_thread(staff)

    assert Send.objects.count() == 0
    assert queries.preferences(reviewer)["content_review"] == "immediately"
    [event] = AuditEvent.objects.filter(action=Action.NOTIFICATION_PREFERENCES_CHANGED, actor=reviewer)
    assert event.data == {
        "before": {"expense_approval": "immediately"},
        "after": {"expense_approval": "digest"},
    }


@pytest.mark.django_db
def test_a_preference_for_a_workflow_the_user_does_not_review_or_a_bad_value_changes_nothing(
    tester: User,
) -> None:
    with pytest.raises(services.InvalidPreferences) as refused:
        services.set_preferences(
            user=tester, choices={"test_five_steps": "digest", "expense_approval": "off"}
        )
    assert refused.value.errors == {"expense_approval": "you do not review this workflow"}
    with pytest.raises(services.InvalidPreferences) as refused:
        services.set_preferences(user=tester, choices={"test_five_steps": "weekly"})
    assert refused.value.errors == {"test_five_steps": "choose one of digest, immediately, off"}

    assert Preference.objects.count() == 0
    assert not AuditEvent.objects.filter(action=Action.NOTIFICATION_PREFERENCES_CHANGED).exists()


# -- escalation: no values to the group the review left ------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_an_escalation_tells_both_groups_and_only_the_group_it_went_to_gets_state_values(
    staff: User,
    reviewer: User,
    other_reviewer: User,
    smtp: MailServer,
    base_url: str,
    doorbell: list[int],
    published: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    review = open_review(claim_thread(staff))
    Send.objects.all().delete()
    auditor = make_user("aude", groups=["auditors"])
    # Escalated, as the deadline sweep does: the review is now with the auditors.
    Review.objects.filter(pk=review.pk).update(
        reviewer_group="auditors", escalated_from="finance", escalated_at=timezone.now()
    )
    review.refresh_from_db()

    emitted(
        review_escalated, review=review, from_group="finance", to_group="auditors", previous_holder=reviewer
    )
    deliver_all()

    assert sorted(send.address for send in Send.objects.filter(kind="escalated")) == [
        "aude@example.com",
        "oscar@example.com",
        "rita@example.com",
    ]
    [to_auditor] = smtp.to(auditor.email)
    assert "It moved from finance to auditors." in to_auditor.text
    assert "employee: Zelda Quux" in to_auditor.text
    assert actions_in(to_auditor.text) == {"approve", "reject", "open"}
    for finance in (reviewer, other_reviewer):
        [mail] = smtp.to(finance.email)
        assert mail.subject == "A review was escalated: Team offsite (Expense approval)"
        assert "It moved from finance to auditors." in mail.text
        assert "Zelda Quux" not in mail.text
        assert "Zelda Quux" not in mail.html
        assert "travel" not in mail.html
        # Finance may no longer decide it: an open link only.
        assert actions_in(mail.text) == {"open"}
    for mail in smtp.received:
        assert_no_secret(mail)


@pytest.mark.django_db(transaction=True)
def test_a_member_who_left_the_group_before_the_email_was_written_gets_no_values(
    staff: User, reviewer: User, smtp: MailServer, base_url: str, doorbell: list[int], published: list[int]
) -> None:
    claim_thread(staff)
    reviewer.groups.clear()

    deliver_all()

    [mail] = smtp.to(reviewer.email)
    assert "Zelda Quux" not in mail.text
    assert "Team offsite" in mail.text


# -- the claimant, and claims changing hands ---------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_due_soon_and_follow_up_go_to_the_claimant_alone_and_overdue_to_the_group(
    published: list[int],
    review: Review,
    reviewer: User,
    other_reviewer: User,
    smtp: MailServer,
    base_url: str,
) -> None:
    Send.objects.all().delete()
    Review.objects.filter(pk=review.pk).update(
        claimed_by=reviewer, claim_expires_at=timezone.now() + timedelta(minutes=5)
    )
    review.refresh_from_db()

    emitted(review_due_soon, review=review)
    emitted(review_follow_up, review=review, user=reviewer)
    emitted(review_overdue, review=review)
    deliver_all()

    assert sorted((send.kind, send.address) for send in Send.objects.all()) == [
        ("due_soon", "rita@example.com"),
        ("follow_up", "rita@example.com"),
        ("overdue", "oscar@example.com"),
        ("overdue", "rita@example.com"),
    ]
    subjects = sorted(mail.subject.split(":")[0] for mail in smtp.to(reviewer.email))
    assert subjects == ["A review is overdue", "A review you hold is due soon", "Your follow-up on a review"]


@pytest.mark.django_db(transaction=True)
def test_a_reassignment_tells_the_previous_and_the_new_holder_but_not_the_lead_who_did_it(
    published: list[int], review: Review, reviewer: User, other_reviewer: User, smtp: MailServer
) -> None:
    Send.objects.all().delete()
    lead = make_user("lena", groups=["finance"])

    emitted(review_reassigned, review=review, previous_holder=reviewer, new_holder=other_reviewer, actor=lead)
    deliver_all()

    assert sorted(send.address for send in Send.objects.filter(kind="reassigned")) == [
        "oscar@example.com",
        "rita@example.com",
    ]
    [mail] = smtp.to(reviewer.email)
    assert "lena passed it from rita to oscar." in mail.text


# -- retries -----------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_an_smtp_server_that_keeps_refusing_is_tried_max_attempts_times_then_the_send_fails(
    published: list[int],
    review: Review,
    reviewer: User,
    other_reviewer: User,
    smtp: MailServer,
    base_url: str,
) -> None:
    Send.objects.all().delete()
    emitted(review_follow_up, review=review, user=reviewer)
    [send] = Send.objects.all()
    smtp.refuse = 10

    attempts = [services.deliver(send_id=send.pk) for _ in range(3)]

    assert [(a.status, a.retry_in) for a in attempts] == [
        ("pending", 0.1),
        ("pending", 0.1),
        ("failed", None),
    ]
    send.refresh_from_db()
    assert (send.status, send.attempts, send.sent_at) == ("failed", 3, None)
    assert "451" in send.last_error
    assert smtp.received == []
    assert services.deliver(send_id=send.pk).status == "failed"
    assert smtp.refused == 3


@pytest.mark.django_db(transaction=True)
def test_a_second_copy_of_the_message_while_one_is_in_flight_sends_nothing(
    published: list[int], review: Review, reviewer: User, smtp: MailServer
) -> None:
    Send.objects.all().delete()
    emitted(review_follow_up, review=review, user=reviewer)
    [send] = Send.objects.all()
    Send.objects.filter(pk=send.pk).update(next_attempt_at=timezone.now() + timedelta(minutes=1))

    assert services.deliver(send_id=send.pk).status == "pending"

    assert smtp.received == []
    assert Send.objects.get(pk=send.pk).attempts == 0


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_workers_delivering_the_same_send_at_once_send_one_email(
    published: list[int], review: Review, reviewer: User, smtp: MailServer
) -> None:
    Send.objects.all().delete()
    emitted(review_follow_up, review=review, user=reviewer)
    [send] = Send.objects.all()
    start = threading.Barrier(2)
    outcomes: list[str] = []

    def deliver() -> None:
        from django.db import connection

        start.wait()
        try:
            outcomes.append(services.deliver(send_id=send.pk).status)
        finally:
            connection.close()

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(smtp.received) == 1
    assert Send.objects.get(pk=send.pk).attempts == 1
    assert sorted(outcomes) in (["pending", "sent"], ["sent", "sent"])


@pytest.mark.django_db(transaction=True)
def test_the_sweep_publishes_again_a_send_whose_message_was_lost(
    published: list[int], review: Review, reviewer: User
) -> None:
    Send.objects.all().delete()
    emitted(review_follow_up, review=review, user=reviewer)
    [send] = Send.objects.all()
    published.clear()

    assert services.republish_lost(grace=60) == []
    Send.objects.filter(pk=send.pk).update(next_attempt_at=timezone.now() - timedelta(minutes=5))
    assert services.republish_lost(grace=60) == [send.pk]
    assert published == [send.pk]


# -- the daily digest ----------------------------------------------------------------------------------


def at(hour: int) -> datetime:
    return timezone.localtime().replace(hour=hour, minute=30)


@pytest.mark.django_db(transaction=True)
def test_the_digest_lists_the_open_reviews_a_user_can_act_on_once_a_day(
    staff: User,
    reviewer: User,
    other_reviewer: User,
    smtp: MailServer,
    base_url: str,
    doorbell: list[int],
    published: list[int],
    settings: Any,
) -> None:
    settings.SIGNOFF_DIGEST_HOUR = 7
    services.set_preferences(user=reviewer, choices={"expense_approval": "digest"})
    services.set_preferences(user=other_reviewer, choices={"content_review": "digest"})
    first = open_review(claim_thread(staff, "Team offsite"))
    second = open_review(claim_thread(staff, "Printer paper"))
    held = open_review(claim_thread(staff, "Held by Oscar"))
    Review.objects.filter(pk=held.pk).update(
        claimed_by=other_reviewer, claim_expires_at=timezone.now() + timedelta(hours=1)
    )
    Send.objects.filter(kind="opened").delete()

    assert services.queue_digests(now=at(6)) == []
    [digest_id] = services.queue_digests(now=at(8))
    # Again the same day (another sweep, a restarted beat): nothing more.
    assert services.queue_digests(now=at(9)) == []
    assert services.queue_digests(now=at(23)) == []
    deliver_all()

    digest = Send.objects.get(pk=digest_id)
    assert (digest.kind, digest.recipient, digest.status, digest.digest_date) == (
        "digest",
        reviewer,
        "sent",
        timezone.localdate(),
    )
    assert sorted(digest.details["reviews"]) == sorted([first.pk, second.pk])
    # Oscar chose the digest for content_review only, where nothing is open: no email.
    assert smtp.to(other_reviewer.email) == []
    [mail] = smtp.received
    assert mail.recipients == [reviewer.email]
    assert mail.subject == f"Your reviews for {timezone.localdate().isoformat()}: 2 open"
    assert {link.review_id for link in links_in(mail.text)} == {first.pk, second.pk}
    assert {link.review_id for link in links_in(mail.html)} == {first.pk, second.pk}
    assert "Held by Oscar" not in mail.text
    assert "Zelda Quux" not in mail.text
    assert_no_secret(mail)
    assert services.queue_digests(now=at(8) + timedelta(days=1)) != []


@pytest.mark.django_db
def test_the_database_refuses_a_second_digest_for_the_same_user_and_day(reviewer: User) -> None:
    day = timezone.localdate()
    fields = {"recipient": reviewer, "address": reviewer.email, "channel": "email", "kind": "digest"}
    Send.objects.create(message_id="ntf_a", digest_date=day, **fields)

    with pytest.raises(IntegrityError), transaction.atomic():
        Send.objects.create(message_id="ntf_b", digest_date=day, **fields)
    Send.objects.create(message_id="ntf_c", digest_date=day + timedelta(days=1), **fields)


@pytest.mark.django_db
def test_celery_finds_the_notification_tasks_and_beat_schedules_the_sweep() -> None:
    from config.celery import app

    app.loader.import_default_modules()
    assert {"notifications.tasks.deliver", "notifications.tasks.sweep"} <= set(app.tasks)
    assert app.conf.beat_schedule["notifications"]["task"] == "notifications.tasks.sweep"


# -- links ---------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_review_links_are_absolute_on_the_base_url(review: Review, reviewer: User, base_url: str) -> None:
    urls = messages.review_links(recipient=reviewer, review=review)
    assert set(urls) == {"approve", "reject", "open"}
    assert all(url.startswith(f"{BASE}/links/?t=") for url in urls.values())


@pytest.mark.django_db(transaction=True)
def test_the_email_renders_every_link_review_links_gives(
    published: list[int],
    review: Review,
    reviewer: User,
    smtp: MailServer,
    base_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    Send.objects.all().delete()
    signed = {"approve": f"{BASE}/l/approve-1", "reject": f"{BASE}/l/reject-1", "open": f"{BASE}/l/open-1"}
    monkeypatch.setattr(messages, "review_links", lambda *, recipient, review: signed)
    emitted(review_follow_up, review=review, user=reviewer)

    deliver_all()

    [mail] = smtp.received
    for name, url in signed.items():
        assert f"{name.capitalize()}: {url}" in mail.text
        assert f'href="{url}"' in mail.html


# -- chat webhooks ----------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_chat_endpoint_gets_a_signed_slack_compatible_message_without_state_values(
    staff: User,
    admin: User,
    receiver: Receiver,
    settings: Any,
    base_url: str,
    doorbell: list[int],
    published: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(webhooks, "_publish", lambda delivery_id, countdown: None)
    new = webhooks.create_endpoint(
        workflow="expense_approval", url=receiver.url, run_ended=True, review_opened=False, actor=admin
    )
    services.set_chat_notifications(endpoint=new.endpoint, active=True, actor=admin)
    other = webhooks.create_endpoint(workflow="content_review", url=receiver.url, actor=admin)
    services.set_chat_notifications(endpoint=other.endpoint, active=True, actor=admin)

    review = open_review(claim_thread(staff))
    [chat] = Send.objects.filter(channel="webhook")
    services.deliver(send_id=chat.pk)

    chat.refresh_from_db()
    assert (chat.status, chat.attempts, chat.address, chat.endpoint_id) == (
        "sent",
        1,
        receiver.url,
        new.endpoint.pk,
    )
    [(headers, raw)] = receiver.requests
    payload = Webhook(new.secret).verify(raw, headers)
    assert headers["webhook-id"] == chat.message_id
    assert headers["content-type"] == "application/json"
    link = f"{BASE}/reviews/{review.pk}/"
    assert payload["text"].startswith("A review is waiting: Team offsite (Expense approval, at pay), due ")
    assert payload["text"].endswith(f"Open: {link}")
    assert payload["blocks"][0]["type"] == "section"
    assert f"<{link}|Team offsite>" in payload["blocks"][0]["text"]["text"]
    assert payload["blocks"][1]["elements"] == [
        {"type": "button", "text": {"type": "plain_text", "text": "Open"}, "url": link}
    ]
    body = raw.decode()
    assert "Zelda Quux" not in body
    for secret in SECRETS:
        assert secret not in body
    assert AuditEvent.objects.filter(action=Action.NOTIFICATION_ENDPOINT_CHANGED).count() == 2


@pytest.mark.django_db
def test_a_turned_off_endpoint_cannot_get_chat_notifications(
    admin: User, receiver: Receiver, settings: Any
) -> None:
    new = webhooks.create_endpoint(workflow="expense_approval", url=receiver.url, actor=admin)
    webhooks.change_endpoint(
        endpoint=new.endpoint, url=receiver.url, run_ended=True, review_opened=True, active=False, actor=admin
    )
    new.endpoint.refresh_from_db()

    with pytest.raises(engine_services.InvalidState, match="turned off"):
        services.set_chat_notifications(endpoint=new.endpoint, active=True, actor=admin)


# -- the settings page ------------------------------------------------------------------------------------


SETTINGS = reverse("notifications:settings")


@pytest.mark.django_db
def test_the_settings_page_lists_each_workflow_the_user_reviews_with_its_choice(reviewer: User) -> None:
    services.set_preferences(user=reviewer, choices={"content_review": "off"})

    response = client_for(reviewer).get(SETTINGS)

    assert response.status_code == 200
    html = response.text
    assert f'href="{SETTINGS}"' in html
    assert f'<form id="notification-settings" method="post" action="{SETTINGS}"' in html
    for name in ("expense_approval", "content_review", "parallel_approval"):
        assert f'id="workflow-{name}"' in html
    assert 'id="workflow-test_five_steps"' not in html
    fields = form_fields(html, "notification-settings")
    assert (fields["content_review"], fields["expense_approval"], fields["parallel_approval"]) == (
        "off",
        "immediately",
        "immediately",
    )
    # What a browser submits unchanged saves without an error, and changes nothing.
    again = client_for(reviewer).post(SETTINGS, fields)
    assert again.status_code == 302
    assert Preference.objects.filter(user=reviewer).count() == 1


@pytest.mark.django_db
def test_saving_the_settings_page_stores_the_choices_and_redirects(reviewer: User) -> None:
    client = client_for(reviewer)

    response = client.post(
        SETTINGS,
        {"expense_approval": "digest", "content_review": "off", "parallel_approval": "immediately"},
        follow=True,
    )

    assert response.redirect_chain == [(SETTINGS, 302)]
    assert "Your notification settings are saved." in response.text
    chosen = queries.preferences(reviewer)
    assert (chosen["expense_approval"], chosen["content_review"], chosen["parallel_approval"]) == (
        "digest",
        "off",
        "immediately",
    )
    assert Preference.objects.filter(user=reviewer).count() == 2


@pytest.mark.django_db
def test_a_bad_choice_on_the_settings_page_is_a_clear_error_and_keeps_what_was_sent(reviewer: User) -> None:
    response = client_for(reviewer).post(
        SETTINGS, {"expense_approval": "weekly", "content_review": "off", "parallel_approval": "digest"}
    )

    assert response.status_code == 422
    assert "Choose immediately, daily digest or off." in response.text
    assert "Choose how you hear of this workflow." not in response.text
    fields = form_fields(response.text, "notification-settings")
    assert (fields["content_review"], fields["parallel_approval"]) == ("off", "digest")
    assert "expense_approval" not in fields
    assert Preference.objects.count() == 0


@pytest.mark.django_db
def test_the_settings_page_over_htmx_answers_with_its_form(reviewer: User) -> None:
    client = client_for(reviewer)

    page = client.get(SETTINGS, **HX)
    saved = client.post(
        SETTINGS, {"expense_approval": "off", "content_review": "off", "parallel_approval": "off"}, **HX
    )

    assert page.text.lstrip().startswith('<form id="notification-settings"')
    assert "HX-Request" in page["Vary"]
    assert saved.status_code == 200
    assert "Your notification settings are saved." in saved.text
    assert queries.preferences(reviewer)["parallel_approval"] == "off"


@pytest.mark.django_db
def test_the_settings_page_needs_a_sign_in(client: Any) -> None:
    response = client.get(SETTINGS)

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


# -- end to end: a real worker and the SMTP server -----------------------------------------------------------


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Any]:
    from config.celery import app

    app.control.purge()
    started: list[Worker] = []

    def start(name: str, **env: str) -> Worker:
        worker = Worker(tmp_path, name, **env).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def all_sent(count: int) -> list[Send]:
    sends = list(Send.objects.exclude(status=Send.Status.PENDING).order_by("id"))
    return sends if len(sends) >= count else []


@pytest.mark.workers
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_worker_emails_the_group_when_a_review_opens_and_retries_after_an_smtp_refusal(
    staff: User, reviewer: User, other_reviewer: User, tester: User, smtp: MailServer, workers: Any
) -> None:
    smtp.refuse = 1
    thread = engine_services.start_thread(
        workflow="expense_approval", input=CLAIM, actor=staff, title="Team offsite"
    )

    workers(
        "mail",
        **smtp.env(),
        SIGNOFF_BASE_URL=BASE,
        SIGNOFF_NOTIFY_RETRY_SECONDS="0.3",
        DEFAULT_FROM_EMAIL="Signoff <signoff@example.com>",
    )
    sends = wait_for(lambda: all_sent(2), timeout=90, what="both emails to be sent")

    review = Review.objects.get(thread=thread)
    assert sorted((send.address, send.status) for send in sends) == [
        ("oscar@example.com", "sent"),
        ("rita@example.com", "sent"),
    ]
    assert sorted(send.attempts for send in sends) == [1, 2]
    assert smtp.refused == 1
    assert sorted(address for mail in smtp.received for address in mail.recipients) == [
        "oscar@example.com",
        "rita@example.com",
    ]
    for mail in smtp.received:
        assert mail.subject == "A review is waiting: Team offsite (Expense approval)"
        assert actions_in(mail.text) == {"approve", "reject", "open"}
        assert {link.review_id for link in links_in(mail.text)} == {review.pk}
        assert "employee: Zelda Quux" in mail.text
        assert_no_secret(mail)
    assert smtp.to(tester.email) == []


@pytest.mark.django_db
def test_the_admin_marks_an_endpoint_for_chat_notifications_and_refuses_a_turned_off_one(
    admin: User, receiver: Receiver
) -> None:
    on = webhooks.create_endpoint(workflow="expense_approval", url=receiver.url, actor=admin)
    off = webhooks.create_endpoint(workflow="content_review", url=receiver.url, actor=admin)
    webhooks.change_endpoint(
        endpoint=off.endpoint, url=receiver.url, run_ended=True, review_opened=True, active=False, actor=admin
    )
    client = client_for(admin)
    add = reverse("admin:notifications_chatendpoint_add")

    refused = client.post(add, {"endpoint": off.endpoint.pk, "active": "on"})
    added = client.post(add, {"endpoint": on.endpoint.pk, "active": "on"})

    assert refused.status_code == 200
    assert "That webhook endpoint is turned off: turn it on first." in refused.text
    assert added.status_code == 302
    [chat] = ChatEndpoint.objects.all()
    assert (chat.endpoint_id, chat.active) == (on.endpoint.pk, True)
    [event] = AuditEvent.objects.filter(action=Action.NOTIFICATION_ENDPOINT_CHANGED)
    assert event.actor == admin
    assert event.data == {"endpoint_id": on.endpoint.pk, "workflow": "expense_approval", "active": True}
    change = reverse("admin:notifications_chatendpoint_change", args=[chat.pk])
    assert client.get(change).status_code == 200
    # Turned off (the box unticked); the endpoint posted is ignored: the row's stays.
    assert client.post(change, {"endpoint": off.endpoint.pk}).status_code == 302
    chat.refresh_from_db()
    assert (chat.endpoint_id, chat.active) == (on.endpoint.pk, False)
    assert AuditEvent.objects.filter(action=Action.NOTIFICATION_ENDPOINT_CHANGED).count() == 2
    assert client.get(reverse("admin:notifications_send_changelist")).status_code == 200


# -- settings from the environment -------------------------------------------------------------------------


def _mailer(**env: str) -> subprocess.CompletedProcess[str]:
    code = (
        "import django, json; django.setup(); from django.conf import settings; "
        "print(json.dumps(settings.MAILERS['default']))"
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith("EMAIL_")}
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**base, "DJANGO_SETTINGS_MODULE": "config.settings", **env},
        capture_output=True,
        text=True,
        check=False,
    )


def test_smtp_comes_from_the_environment_and_the_password_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "smtp-password"
    secret.write_text("s3cret\n")

    started = _mailer(
        EMAIL_HOST="smtp.example.com",
        EMAIL_PORT="587",
        EMAIL_HOST_USER="signoff",
        EMAIL_HOST_PASSWORD_FILE=str(secret),
        EMAIL_USE_TLS="true",
    )

    assert started.returncode == 0, started.stderr
    assert json.loads(started.stdout) == {
        "BACKEND": "django.core.mail.backends.smtp.EmailBackend",
        "OPTIONS": {
            "host": "smtp.example.com",
            "port": 587,
            "username": "signoff",
            "password": "s3cret",
            "use_tls": True,
            "use_ssl": False,
            "timeout": 10.0,
        },
    }


def test_debug_without_an_smtp_host_prints_emails_to_the_console() -> None:
    started = _mailer(DJANGO_DEBUG="true", SIGNOFF_AUDIT_KEY="", DJANGO_SECRET_KEY="dev")

    assert started.returncode == 0, started.stderr
    assert json.loads(started.stdout) == {"BACKEND": "django.core.mail.backends.console.EmailBackend"}


def test_tls_and_ssl_together_stop_start_up() -> None:
    started = _mailer(EMAIL_HOST="smtp.example.com", EMAIL_USE_TLS="on", EMAIL_USE_SSL="on")

    assert started.returncode != 0
    assert "EMAIL_USE_TLS and EMAIL_USE_SSL are both on: set one of them" in started.stderr


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_saves_of_a_users_first_preferences_at_once_both_succeed_one_after_the_other(
    reviewer: User,
) -> None:
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def save(choice: str) -> None:
        from django.db import connection

        start.wait()
        try:
            services.set_preferences(user=reviewer, choices={"expense_approval": choice})
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=save, args=(choice,)) for choice in ("digest", "off")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    [row] = Preference.objects.filter(user=reviewer)
    events = AuditEvent.objects.filter(action=Action.NOTIFICATION_PREFERENCES_CHANGED).order_by("id")
    assert [event.data["after"]["expense_approval"] for event in events][-1] == row.delivery
    assert len(events) == 2
    assert events[1].data["before"]["expense_approval"] == events[0].data["after"]["expense_approval"]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_admins_turning_chat_notifications_on_at_once_make_one_row(
    admin: User, receiver: Receiver
) -> None:
    new = webhooks.create_endpoint(workflow="expense_approval", url=receiver.url, actor=admin)
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def turn_on() -> None:
        from django.db import connection

        start.wait()
        try:
            services.set_chat_notifications(endpoint=new.endpoint, active=True, actor=admin)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=turn_on) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert ChatEndpoint.objects.filter(endpoint=new.endpoint, active=True).count() == 1
    assert AuditEvent.objects.filter(action=Action.NOTIFICATION_ENDPOINT_CHANGED).count() == 1
