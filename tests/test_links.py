"""Signed one-click links (approvals.links, approvals.link_views): approve, reject and open
from an email; never deciding on GET, once, before they expire, as their recipient only."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth.models import User
from django.core import signing
from django.core.cache import caches
from django.db import connection, transaction
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from approvals import links, services
from approvals.models import Decision, Link, Review
from tests.factories import decide, head, run_queued
from tests.html import form_fields
from tests.pages import LOGIN, expense_thread, snapshot
from tests.test_lock_order import no_errors, side_by_side
from workflows import engine, registry
from workflows import services as engine_services
from workflows.models import AuditEvent, Thread

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("doorbell")]

BASE = "https://signoff.example.com"


@pytest.fixture(autouse=True)
def _base_url(settings: Any) -> None:
    settings.SIGNOFF_BASE_URL = BASE


@pytest.fixture(autouse=True)
def _no_refusal_throttled_yet() -> Iterator[None]:
    # The throttle cache is shared by every process, tests included.
    caches["throttle"].delete(links.UNKNOWN_REFUSAL_KEY)
    yield
    caches["throttle"].delete(links.UNKNOWN_REFUSAL_KEY)


def escalate(review: Review, *, to: str) -> None:
    """Move the review to group `to` as the deadline sweep's escalation does."""
    Review.objects.filter(pk=review.pk).update(
        reviewer_group=to, escalated_from=review.responsible_group, escalated_at=timezone.now()
    )


def _with(monkeypatch: pytest.MonkeyPatch, **changes: object) -> None:
    """The expense workflow with some registry fields changed, for one test."""
    spec = registry.get("expense_approval")
    monkeypatch.setitem(registry._registry, spec.name, dataclasses.replace(spec, **changes))  # type: ignore[arg-type]


@pytest.fixture
def email_decisions(monkeypatch: pytest.MonkeyPatch) -> None:
    _with(monkeypatch, email_decisions=True)


def path(url: str) -> str:
    """The link as the test client follows it: path and query, without the site."""
    assert url.startswith(BASE + "/"), url
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def token(url: str) -> str:
    return parse_qs(urlsplit(url).query)["t"][0]


def confirm(client: Client, url: str) -> dict[str, str]:
    """Open the link's confirmation page and return its form as a browser would submit it."""
    page = client.get(path(url))
    assert page.status_code == 200, page.status_code
    fields = form_fields(page.text, "link-form")
    assert fields["t"] == token(url)
    return fields


def press(client: Client, url: str) -> tuple[int, str]:
    """Open the link and press its one button."""
    response = client.post(reverse("approvals:link"), confirm(client, url))
    return response.status_code, response.text


def refusals(reason: str) -> list[AuditEvent]:
    events = AuditEvent.objects.filter(action="link.refused").order_by("id")
    return [event for event in events if event.data["reason"] == reason]


def anonymous() -> Client:
    return Client(enforce_csrf_checks=True)


# -- issuing ---------------------------------------------------------------------------------


def test_links_for_gives_absolute_signed_urls_and_the_database_keeps_no_token(reviewer: User, review: Review):
    urls = links.links_for(recipient=reviewer, review=review)

    assert set(urls) == {"approve", "reject", "open"}
    assert all(url.startswith(f"{BASE}/links/?t=") for url in urls.values())
    assert len(set(urls.values())) == 3
    issued = Link.objects.filter(review=review, recipient=reviewer)
    assert sorted(issued.values_list("action", flat=True)) == ["approve", "open", "reject"]
    stored = " ".join(str(value) for row in issued.values_list() for value in row)
    for url in urls.values():
        secret = signing.loads(token(url), salt=links.SALT)[1]
        assert secret not in stored
        assert token(url) not in stored
    link = issued.get(action="approve")
    assert link.checkpoint_id == review.checkpoint_id
    assert link.reviewer_group == "finance"
    hours = (link.expires_at - link.created_at).total_seconds() / 3600
    assert round(hours) == 72
    event = AuditEvent.objects.get(action="link.issued")
    assert event.data["recipient"] == "rita"
    assert event.data["links"]["approve"] == link.pk
    assert all(token(url) not in str(event.data) for url in urls.values())


def test_links_expire_after_signoff_link_hours(settings: Any, reviewer: User, review: Review):
    settings.SIGNOFF_LINK_HOURS = 2

    links.links_for(recipient=reviewer, review=review)

    link = Link.objects.get(action="approve")
    assert round((link.expires_at - link.created_at).total_seconds()) == 7200


def test_without_a_base_url_links_point_at_the_local_server(settings: Any, reviewer: User, review: Review):
    settings.SIGNOFF_BASE_URL = ""

    urls = links.links_for(recipient=reviewer, review=review)

    assert urls["open"].startswith("http://127.0.0.1:8000/links/?t=")


def test_links_issued_inside_a_transaction_that_fails_are_gone_with_it(reviewer: User, review: Review):
    def build_the_email() -> None:
        with transaction.atomic():
            links.links_for(recipient=reviewer, review=review)
            raise RuntimeError("the email could not be built")

    with pytest.raises(RuntimeError):
        build_the_email()

    assert not Link.objects.exists()
    assert not AuditEvent.objects.filter(action="link.issued").exists()


def test_someone_who_may_not_review_gets_only_the_open_link(staff: User, review: Review):
    assert set(links.links_for(recipient=staff, review=review)) == {"open"}


def test_a_parallel_reviews_interrupt_gets_approve_and_reject_links(reviewer: User, contract: Thread):
    legal = contract.reviews.get(node="legal")

    assert set(links.links_for(recipient=reviewer, review=legal)) == {"approve", "reject", "open"}


def test_email_decisions_is_off_unless_a_workflow_turns_it_on():
    assert registry.get("expense_approval").email_decisions is False
    assert registry.Workflow(name="x", title="X", builder=lambda: None).email_decisions is False  # type: ignore[arg-type,return-value]


# -- following, signed in --------------------------------------------------------------------


def test_following_a_link_only_shows_a_confirmation_page(rita: Client, reviewer: User, review: Review):
    urls = links.links_for(recipient=reviewer, review=review)
    before = snapshot(review.thread)

    page = rita.get(path(urls["approve"]))

    assert page.status_code == 200
    assert "Train to Lyon" in page.text
    assert "<dd data-node>pay</dd>" in page.text
    assert "<dd>Expense approval</dd>" in page.text
    assert "The thread goes on from “pay”." in page.text
    assert "<code>approved</code> = True" in page.text
    assert 'method="post"' in page.text
    assert page.text.count("<button") == 2  # this one, and the header's "Log out"
    assert snapshot(review.thread) == before
    review.refresh_from_db()
    assert review.status == Review.Status.OPEN
    assert Link.objects.get(action="approve").used_at is None


def test_approving_by_link_decides_as_the_recipient_and_the_thread_goes_on(
    rita: Client, reviewer: User, review: Review
):
    urls = links.links_for(recipient=reviewer, review=review)

    status, text = press(rita, urls["approve"])

    assert status == 200
    assert "Approved" in text
    decision = Decision.objects.get(review=review)
    assert (decision.actor, decision.action, decision.checkpoint_id) == (
        reviewer,
        "approve",
        review.checkpoint_id,
    )
    link = Link.objects.get(action="approve")
    assert link.used_at is not None
    assert link.decision == decision
    event = AuditEvent.objects.get(action="review.decided")
    assert event.actor == reviewer
    assert event.actor_label == "rita"
    assert (event.data["via"], event.data["link"], event.data["signed_in"]) == ("link", link.pk, True)
    run_queued(review.thread)
    assert review.thread.status == Thread.Status.COMPLETED
    assert head(review.thread).values["outcome"] == "paid 120.00"


def test_rejecting_by_link_takes_the_workflows_reject_branch(rita: Client, reviewer: User, review: Review):
    urls = links.links_for(recipient=reviewer, review=review)

    status, _ = press(rita, urls["reject"])

    assert status == 200
    assert Decision.objects.get(review=review).action == "reject"
    run_queued(review.thread)
    assert head(review.thread).values["outcome"] == "rejected"


def test_a_link_used_twice_is_a_409_naming_who_decided_and_when(rita: Client, reviewer: User, review: Review):
    urls = links.links_for(recipient=reviewer, review=review)
    fields = confirm(rita, urls["approve"])
    assert rita.post(reverse("approvals:link"), fields).status_code == 200
    decision = Decision.objects.get(review=review)
    when = timezone.localtime(decision.created_at).strftime("%Y-%m-%d %H:%M:%S %Z")

    again = rita.post(reverse("approvals:link"), fields)
    page = rita.get(path(urls["approve"]))
    sibling = rita.get(path(urls["reject"]))

    for response in (again, page):
        assert response.status_code == 409
        assert "This link was already used." in response.text
        assert f"already decided (approve) by rita at {when}" in response.text
    assert sibling.status_code == 409
    assert f"by rita at {when}" in sibling.text
    assert Decision.objects.count() == 1
    # Audited once for the link, however often it is replayed.
    assert len(refusals("used")) == 1


def test_a_link_for_a_review_someone_else_decided_names_them_and_when(
    rita: Client, reviewer: User, other_reviewer: User, review: Review
):
    urls = links.links_for(recipient=reviewer, review=review)
    fields = confirm(rita, urls["approve"])
    decision = decide(review, other_reviewer, "reject")
    when = timezone.localtime(decision.created_at).strftime("%Y-%m-%d %H:%M:%S %Z")

    page = rita.get(path(urls["approve"]))
    post = rita.post(reverse("approvals:link"), fields)

    for response in (page, post):
        assert response.status_code == 409
        assert f"already decided (reject) by oscar at {when}" in response.text
    assert Decision.objects.get(review=review).actor == other_reviewer
    assert Link.objects.get(action="approve").used_at is None


def test_a_link_for_a_withdrawn_review_says_who_withdrew_it_and_when(
    rita: Client, reviewer: User, admin: User, review: Review
):
    urls = links.links_for(recipient=reviewer, review=review)
    fields = confirm(rita, urls["approve"])
    engine_services.cancel_thread(thread=review.thread, actor=admin, reason="duplicate claim")
    event = AuditEvent.objects.get(action="review.cancelled")
    when = timezone.localtime(event.created_at).strftime("%Y-%m-%d %H:%M:%S %Z")

    page = rita.get(path(urls["approve"]))
    post = rita.post(reverse("approvals:link"), fields)

    for response in (page, post):
        assert response.status_code == 409
        assert f"withdrawn (thread cancelled) by ada at {when}" in response.text
    assert not Decision.objects.exists()


def test_a_link_for_a_thread_that_moved_on_is_a_409_and_decides_nothing(
    rita: Client, reviewer: User, admin: User, review: Review
):
    urls = links.links_for(recipient=reviewer, review=review)
    fields = confirm(rita, urls["approve"])
    # An admin rolls the thread back: it runs again and pauses with a new review.
    thread = review.thread
    history = engine.graph_for("expense_approval").get_state_history(engine.config_for(thread.thread_id))
    start = next(state for state in history if state.next == ("draft",))
    engine_services.rollback_thread(
        thread=thread, actor=admin, checkpoint_id=engine.checkpoint_id_of(start), reason="redo"
    )
    run_queued(review.thread)
    fresh = Review.objects.filter(thread=review.thread, status=Review.Status.OPEN).get()
    assert fresh.pk != review.pk

    post = rita.post(reverse("approvals:link"), fields)

    assert post.status_code == 409
    assert "withdrawn (thread rolled back) by ada" in post.text
    fresh.refresh_from_db()
    assert fresh.status == Review.Status.OPEN
    assert not Decision.objects.exists()


def test_a_link_for_a_review_escalated_to_another_group_is_a_409(
    monkeypatch: pytest.MonkeyPatch, rita: Client, reviewer: User, review: Review
):
    urls = links.links_for(recipient=reviewer, review=review)
    fields = confirm(rita, urls["approve"])
    reviewer.groups.create(name="board")
    escalate(review, to="board")

    page = rita.get(path(urls["approve"]))
    post = rita.post(reverse("approvals:link"), fields)

    for response in (page, post):
        assert response.status_code == 409
        assert "escalated to board" in response.text
    assert not Decision.objects.exists()


def test_a_link_for_a_workflow_no_longer_registered_says_so(
    monkeypatch: pytest.MonkeyPatch, rita: Client, reviewer: User, review: Review
):
    urls = links.links_for(recipient=reviewer, review=review)
    monkeypatch.delitem(registry._registry, "expense_approval")

    page = rita.get(path(urls["approve"]))

    assert page.status_code == 409
    assert "is no longer registered on this server" in page.text


def test_a_recipient_no_longer_in_the_group_cannot_decide_by_link(
    rita: Client, reviewer: User, review: Review
):
    urls = links.links_for(recipient=reviewer, review=review)
    reviewer.groups.clear()

    page = rita.get(path(urls["approve"]))

    assert page.status_code == 409
    assert "rita is no longer a reviewer of this workflow" in page.text


def test_someone_else_signed_in_is_refused_and_the_link_still_works_for_its_recipient(
    rita: Client, oscar: Client, reviewer: User, review: Review
):
    urls = links.links_for(recipient=reviewer, review=review)
    fields = confirm(rita, urls["approve"])

    page = oscar.get(path(urls["approve"]))
    post = oscar.post(reverse("approvals:link"), fields)

    for response in (page, post):
        assert response.status_code == 403
        assert "This link was sent to someone else." in response.text
    assert not Decision.objects.exists()
    [event] = refusals("other_user")
    assert event.actor_label == "oscar"
    assert event.data["link"] == Link.objects.get(action="approve").pk
    assert rita.post(reverse("approvals:link"), fields).status_code == 200


def test_a_refusal_that_is_not_the_links_fault_leaves_it_usable(
    rita: Client, reviewer: User, other_reviewer: User, review: Review
):
    urls = links.links_for(recipient=reviewer, review=review)
    fields = confirm(rita, urls["approve"])
    services.claim_review(review=review, actor=other_reviewer)

    held = rita.post(reverse("approvals:link"), fields)

    assert held.status_code == 409
    assert "being reviewed by oscar" in held.text
    assert Link.objects.get(action="approve").used_at is None
    services.release_review(review=review, actor=other_reviewer)
    assert rita.post(reverse("approvals:link"), fields).status_code == 200
    assert Decision.objects.get(review=review).actor == reviewer


def test_the_open_link_leads_to_the_review_page(rita: Client, reviewer: User, review: Review):
    urls = links.links_for(recipient=reviewer, review=review)

    response = rita.get(path(urls["open"]))
    anonymous_response = anonymous().get(path(urls["open"]), follow=True)

    assert response.status_code == 302
    assert response["Location"] == reverse("approvals:review", args=[review.pk])
    assert anonymous_response.redirect_chain[-1][0].startswith(LOGIN)


# -- refused links ---------------------------------------------------------------------------


def test_an_expired_link_is_refused_with_a_410_and_audited_once(
    rita: Client, reviewer: User, review: Review, monkeypatch: pytest.MonkeyPatch
):
    urls = links.links_for(recipient=reviewer, review=review)
    fields = confirm(rita, urls["approve"])
    later = timezone.now() + timedelta(hours=72, seconds=1)
    monkeypatch.setattr(timezone, "now", lambda: later)

    page = rita.get(path(urls["approve"]))
    post = rita.post(reverse("approvals:link"), fields)

    for response in (page, post):
        assert response.status_code == 410
        assert "This link has expired (links in emails work for 72 hours)." in response.text
    assert not Decision.objects.exists()
    [event] = refusals("expired")
    assert event.data["link"] == Link.objects.get(action="approve").pk
    assert token(urls["approve"]) not in str(event.data)


def test_a_tampered_link_is_refused_with_a_400_and_audited_at_most_once_a_minute(
    rita: Client, reviewer: User, review: Review
):
    urls = links.links_for(recipient=reviewer, review=review)
    good = token(urls["approve"])
    bad = good[:-1] + ("A" if good[-1] != "A" else "B")

    first = rita.get(reverse("approvals:link"), {"t": bad})
    second = anonymous().get(reverse("approvals:link"), {"t": "garbage"})
    post = rita.post(reverse("approvals:link"), {"t": bad})

    for response in (first, second, post):
        assert response.status_code == 400
        assert "This link is not valid" in response.text
    [event] = refusals("tampered")
    assert event.actor_label == "rita"
    assert bad not in str(event.data)
    assert good not in str(event.data)
    assert not Decision.objects.exists()


def test_a_link_signed_right_with_the_wrong_secret_is_tampered(rita: Client, reviewer: User, review: Review):
    links.links_for(recipient=reviewer, review=review)
    link = Link.objects.get(action="approve")
    # What someone holding SECRET_KEY but not the table could make: the stored hash refuses it.
    forged = signing.dumps([link.pk, "guessed"], salt=links.SALT, compress=False)

    response = rita.get(reverse("approvals:link"), {"t": forged})

    assert response.status_code == 400
    [event] = refusals("tampered")
    assert event.data["link"] == link.pk


def test_another_signed_value_of_the_app_is_not_a_link(rita: Client, reviewer: User, review: Review):
    links.links_for(recipient=reviewer, review=review)
    link = Link.objects.get(action="approve")
    other = signing.dumps([link.pk, "x"], salt="approvals.forms", compress=False)

    assert rita.get(reverse("approvals:link"), {"t": other}).status_code == 400


# -- without a session -----------------------------------------------------------------------


def test_without_a_session_a_link_asks_to_sign_in_then_shows_the_confirmation(reviewer: User, review: Review):
    urls = links.links_for(recipient=reviewer, review=review)
    client = anonymous()

    page = client.get(path(urls["approve"]))
    sign_in = client.get(LOGIN)
    csrf = str(sign_in.context["csrf_token"])
    post = client.post(reverse("approvals:link"), {"t": token(urls["approve"]), "csrfmiddlewaretoken": csrf})

    for response in (page, post):
        assert response.status_code == 302
        login, next_url = response["Location"].split("?next=")
        assert login == LOGIN
        assert parse_qs(f"next={next_url}")["next"][0] == path(urls["approve"])
    assert not Decision.objects.exists()
    fields = {"csrfmiddlewaretoken": csrf}
    fields.update(username="rita", password="password", next=path(urls["approve"]))
    signed_in = client.post(LOGIN, fields)
    assert signed_in.status_code == 302
    assert signed_in["Location"] == path(urls["approve"])
    assert client.get(signed_in["Location"]).status_code == 200
    status, _ = press(client, urls["approve"])
    assert status == 200
    assert AuditEvent.objects.get(action="review.decided").data["signed_in"] is True


def test_with_email_decisions_a_link_decides_without_a_session_csrf_checked(
    email_decisions: None, reviewer: User, review: Review
):
    urls = links.links_for(recipient=reviewer, review=review)
    client = anonymous()

    fields = confirm(client, urls["reject"])
    forged = Client(enforce_csrf_checks=True).post(reverse("approvals:link"), {"t": fields["t"]})
    assert forged.status_code == 403
    assert not Decision.objects.exists()
    response = client.post(reverse("approvals:link"), fields)

    assert response.status_code == 200
    assert "Rejected" in response.text
    assert "you will be asked to sign in" in response.text
    decision = Decision.objects.get(review=review)
    assert (decision.actor, decision.action) == (reviewer, "reject")
    event = AuditEvent.objects.get(action="review.decided")
    assert event.actor_label == "rita"
    assert (event.data["via"], event.data["signed_in"]) == ("link", False)
    assert "_auth_user_id" not in client.session
    run_queued(review.thread)
    assert head(review.thread).values["outcome"] == "rejected"


def test_with_email_decisions_a_used_link_is_still_a_409_without_a_session(
    email_decisions: None, reviewer: User, review: Review
):
    urls = links.links_for(recipient=reviewer, review=review)
    client = anonymous()
    status, _ = press(client, urls["approve"])
    assert status == 200

    again = client.get(path(urls["approve"]))

    assert again.status_code == 409
    assert "already decided (approve) by rita" in again.text
    assert refusals("used")[0].actor_label == "anonymous"


# -- at the same moment (PostgreSQL) ---------------------------------------------------------


@pytest.mark.postgres
def test_one_link_pressed_twice_at_once_decides_once(reviewer: User, staff: User):
    review = expense_thread(staff).reviews.get()
    links.links_for(recipient=reviewer, review=review)
    link = Link.objects.get(action="approve")
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def press_once() -> None:
        try:
            fresh = Link.objects.select_related("review__thread", "recipient").get(pk=link.pk)
            barrier.wait()
            links.decide(link=fresh, signed_in=False)
            outcomes.append("decided")
        except services.DecisionRefused as exc:
            outcomes.append(type(exc).__name__)
        finally:
            connection.close()

    racers = [threading.Thread(target=press_once) for _ in range(2)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join()

    assert sorted(outcomes) == ["AlreadyDecided", "decided"]
    assert Decision.objects.filter(review=review).count() == 1
    assert Link.objects.get(pk=link.pk).decision == Decision.objects.get(review=review)


def test_the_decision_checks_the_group_again_under_the_reviews_lock(
    monkeypatch: pytest.MonkeyPatch, reviewer: User, review: Review
):
    links.links_for(recipient=reviewer, review=review)
    link = Link.objects.select_related("review__thread", "recipient").get(action="approve")
    # Escalated after the page was shown: rita reviews for the new group too, so only the
    # link's own check stands in the way.
    reviewer.groups.create(name="board")
    escalate(review, to="board")
    before = snapshot(review.thread)

    with pytest.raises(links.LinkEscalated):
        links.decide(link=link, signed_in=True)

    assert snapshot(review.thread) == before
    assert Link.objects.get(pk=link.pk).used_at is None


@pytest.mark.postgres
def test_a_refusal_audited_while_the_link_decides_does_not_deadlock(
    reviewer: User, other_reviewer: User, staff: User
):
    review = expense_thread(staff).reviews.get()
    links.links_for(recipient=reviewer, review=review)
    link = Link.objects.select_related("review__thread", "recipient").get(action="approve")

    results = side_by_side(
        # Holds the link row, then waits for the audit lock...
        lambda: links.record_refusal(
            link=link, reason=links.Reason.OTHER_USER, user=other_reviewer, ip_address=""
        ),
        r"FROM \"approvals_link\".*FOR UPDATE",
        # ...while the decision holds thread, run and review and waits for the link row.
        lambda: links.decide(link=link, signed_in=True),
    )

    no_errors(results)
    assert results[0] is True
    assert isinstance(results[1], Decision)
    assert engine_services.verify_audit_chain()[1] is None
