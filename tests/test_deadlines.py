"""Deadlines that act (issue 12, item 1): what a workflow or an interrupt declares for its due
time, and what the sweep does once it passes: notify, remind, escalate, decide a default;
due-soon notices and follow-up dates. On SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ImproperlyConfigured
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from approvals import deadlines, queries
from approvals import services as approvals
from approvals.models import Decision, Review
from approvals.signals import review_due_soon, review_escalated, review_follow_up, review_overdue
from tests.factories import audit_actions, decide, head, make_user, open_review, paused, run_queued
from tests.fake_workflows import AskState, build_ask, build_check, line
from tests.pages import HX, client_for, review_form
from workflows import registry
from workflows.models import AuditEvent, Thread

pytestmark = pytest.mark.django_db(transaction=True)

LATER = timedelta(hours=25)


def ask_workflow(name: str = "due_ask", **options: Any) -> registry.Workflow:
    return registry.Workflow(name=name, title="Asks", builder=build_ask, reviewer_group="finance", **options)


def breakpoint_workflow(**options: Any) -> registry.Workflow:
    return registry.Workflow(
        name="due_check",
        title="Checks",
        builder=build_check,
        reviewer_group="finance",
        interrupt_before=("finish",),
        **options,
    )


@pytest.fixture
def sent() -> Iterator[dict[str, list[dict[str, Any]]]]:
    """What each deadline signal was sent with, by signal."""
    signals = {
        "escalated": review_escalated,
        "overdue": review_overdue,
        "due_soon": review_due_soon,
        "follow_up": review_follow_up,
    }
    calls: dict[str, list[dict[str, Any]]] = {name: [] for name in signals}
    receivers = {}
    for name, signal in signals.items():

        def receiver(*, _name: str = name, **kwargs: Any) -> None:
            calls[_name].append(kwargs)

        receivers[name] = receiver
        signal.connect(receiver, dispatch_uid=f"test-{name}")
    yield calls
    for name, signal in signals.items():
        signal.disconnect(dispatch_uid=f"test-{name}")


@pytest.fixture
def manager() -> User:
    """Max, in the managers group only: where reviews are escalated to."""
    return make_user("max", groups=["managers"])


def sweep(**later: float) -> deadlines.DeadlineSweep:
    return deadlines.sweep_deadlines(now=timezone.now() + timedelta(**later))


# -- declaring a due policy ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("on_due", "message"),
    [
        ({"escalate": ""}, "'escalate' names the group"),
        ({"decide": "maybe"}, "'decide' is one of approve, reject, respond, ignore"),
        ({"decide": "respond"}, "'respond' needs a 'response' text"),
        ({"remind": 0}, "'remind' is the hours between reminders"),
        ({"remind": 4, "escalate": "managers"}, "exactly one of"),
        ({"escalate": "managers", "hours": 3}, "unknown due policy key(s) hours"),
        ({"escalate": "finance"}, "already its reviewer group"),
        ("escalate", "a due policy is a dict"),
    ],
)
def test_a_bad_due_policy_is_refused_at_registration_naming_the_workflow(on_due: Any, message: str):
    with pytest.raises(ImproperlyConfigured) as refused:
        registry.add(ask_workflow("bad_due", on_due=on_due))

    assert "workflow 'bad_due'" in str(refused.value)
    assert message in str(refused.value)
    assert "bad_due" not in {spec.name for spec in registry.all_workflows()}


def test_register_reads_the_policy_and_refuses_bad_hours():
    with pytest.raises(ImproperlyConfigured, match="review_hours: due hours are a number above 0"):
        registry.add(ask_workflow("bad_hours", review_hours=0))
    with pytest.raises(ImproperlyConfigured, match="on_due: 'remind' is the hours"):
        registry.register("bad_remind", title="x", on_due={"remind": "often"})(build_ask)

    registry.register("good_remind", title="x", reviewer_group="finance", on_due={"remind": 4})(build_ask)
    try:
        assert registry.get("good_remind").on_due == registry.DuePolicy(action="remind", every_hours=4.0)
    finally:
        registry.remove("good_remind")


def test_a_review_keeps_the_policy_it_opened_with(staff: User, sent: dict[str, list[Any]]):
    with paused(ask_workflow(on_due={"escalate": "managers"}), {"title": "Q3"}, staff) as thread:
        review = open_review(thread)
        assert review.due_policy == {"action": "escalate", "to_group": "managers"}
        assert review.reviewer_group == "finance"
        assert review.due_at is not None
        assert timedelta(hours=23.9) < review.due_at - review.created_at < timedelta(hours=24.1)
        # The workflow changes its mind after the review opened: the review does not.
        registry.remove("due_ask")
        registry.add(ask_workflow(on_due={"decide": "approve"}))

        assert sweep(hours=25).escalated == 1

    review.refresh_from_db()
    assert review.status == Review.Status.OPEN
    assert review.reviewer_group == "managers"
    assert not Decision.objects.filter(review=review).exists()


def interrupting(payload: dict[str, Any]) -> registry.Workflow:
    def build() -> Any:
        return line(AskState, ask=lambda state: {"answer": str(registry_interrupt(payload))})

    return registry.Workflow(
        name="due_payload", title="Payload", builder=build, reviewer_group="finance", review_hours=24
    )


def registry_interrupt(payload: dict[str, Any]) -> Any:
    from langgraph.types import interrupt

    return interrupt(payload)


def test_an_interrupt_payload_sets_its_own_hours_and_policy(staff: User):
    payload = {"question": "Pay?", "due": {"hours": 2, "escalate": "managers"}}
    with paused(interrupting(payload), {"title": "Q3"}, staff) as thread:
        review = open_review(thread)

    assert review.due_policy == {"action": "escalate", "to_group": "managers"}
    assert review.due_at is not None
    assert timedelta(hours=1.9) < review.due_at - review.created_at < timedelta(hours=2.1)


def test_a_bad_payload_policy_falls_back_to_the_workflows_and_is_logged(
    staff: User, caplog: pytest.LogCaptureFixture
):
    payload = {"question": "Pay?", "due": {"hours": -1, "decide": "perhaps"}}
    with paused(interrupting(payload), {"title": "Q3"}, staff) as thread:
        review = open_review(thread)

    assert review.due_policy == {"action": "notify"}
    assert review.due_at is not None
    assert timedelta(hours=23.9) < review.due_at - review.created_at < timedelta(hours=24.1)
    assert "the interrupt's due policy is refused" in caplog.text
    assert "due hours are a number above 0" in caplog.text


def test_a_default_the_review_cannot_take_becomes_a_notice(staff: User, caplog: pytest.LogCaptureFixture):
    workflow = breakpoint_workflow(on_due={"decide": "respond", "response": "no"})
    with paused(workflow, {"title": "Q3"}, staff) as thread:
        review = open_review(thread)

    assert review.due_policy == {"action": "notify"}
    assert "the default decision 'respond' is not one of approve, reject here" in caplog.text


# -- notify and remind ---------------------------------------------------------------------------


def test_an_overdue_review_is_announced_once(staff: User, sent: dict[str, list[Any]]):
    with paused(ask_workflow(), {"title": "Q3"}, staff) as thread:
        review = open_review(thread)

        assert sweep(hours=23) == deadlines.DeadlineSweep()
        assert sweep(hours=25).overdue == 1
        assert sweep(hours=26) == deadlines.DeadlineSweep()
        assert sweep(hours=200) == deadlines.DeadlineSweep()

    assert [call["review"].pk for call in sent["overdue"]] == [review.pk]
    assert audit_actions(thread).count("review.overdue") == 1
    event = AuditEvent.objects.get(thread=thread, action="review.overdue")
    assert event.actor_label == deadlines.DEADLINES
    assert event.data["group"] == "finance"
    review.refresh_from_db()
    assert review.status == Review.Status.OPEN
    assert review.overdue_notified_at is not None


def test_remind_tells_the_group_again_every_n_hours(staff: User, sent: dict[str, list[Any]]):
    with paused(ask_workflow(on_due={"remind": 4}), {"title": "Q3"}, staff) as thread:
        first = sweep(hours=24.5)
        again_too_soon = sweep(hours=26)
        second = sweep(hours=29)
        third = sweep(hours=33.5)

    assert (first.overdue, again_too_soon, second.reminded, third.reminded) == (
        1,
        deadlines.DeadlineSweep(),
        1,
        1,
    )
    assert len(sent["overdue"]) == 3
    assert audit_actions(thread).count("review.reminded") == 2


def test_a_decided_review_is_not_reminded(staff: User, reviewer: User, sent: dict[str, list[Any]]):
    with paused(ask_workflow(on_due={"remind": 1}), {"title": "Q3"}, staff) as thread:
        review = open_review(thread)
        sweep(hours=24.5)
        decide(review, reviewer, "approve")

        assert sweep(hours=30) == deadlines.DeadlineSweep()

    assert len(sent["overdue"]) == 1


# -- escalate ------------------------------------------------------------------------------------


def test_escalation_moves_the_review_ends_the_claim_and_tells_both_groups(
    staff: User, reviewer: User, sent: dict[str, list[Any]]
):
    with paused(ask_workflow(on_due={"escalate": "managers"}), {"title": "Q3"}, staff) as thread:
        review = open_review(thread)
        approvals.claim_review(review=review, actor=reviewer)
        approvals.set_follow_up(review=review, actor=reviewer, at=timezone.now() + timedelta(days=3))
        # Due a minute ago, while Rita's claim still runs.
        Review.objects.filter(pk=review.pk).update(due_at=timezone.now() - timedelta(minutes=1))

        result = deadlines.sweep_deadlines()
        again = sweep(minutes=50)

    assert (result.escalated, again) == (1, deadlines.DeadlineSweep())
    review.refresh_from_db()
    assert review.reviewer_group == "managers"
    assert review.escalated_from == "finance"
    assert review.responsible_group == "managers"
    assert review.claimed_by is None
    assert review.follow_up_at is None
    assert review.escalated_at is not None
    [call] = sent["escalated"]
    assert (call["from_group"], call["to_group"], call["previous_holder"]) == (
        "finance",
        "managers",
        reviewer,
    )
    event = AuditEvent.objects.get(thread=thread, action="review.escalated")
    assert event.data["from"] == "finance"
    assert event.data["to"] == "managers"
    assert event.data["previous_holder"] == "rita"


def test_the_new_group_gets_a_due_time_of_its_own_and_is_told_once_when_it_passes(
    staff: User, reviewer: User, sent: dict[str, list[Any]]
):
    with paused(ask_workflow(on_due={"escalate": "managers"}), {"title": "Q3"}, staff) as thread:
        review = open_review(thread)
        # The first group had three hours, and missed them.
        Review.objects.filter(pk=review.pk).update(
            created_at=timezone.now() - timedelta(hours=3, minutes=1),
            due_at=timezone.now() - timedelta(minutes=1),
        )

        assert deadlines.sweep_deadlines().escalated == 1
        review.refresh_from_db()
        assert timedelta(hours=2, minutes=59) < review.due_at - timezone.now() <= timedelta(hours=3)
        assert review.due_policy == {"action": "notify"}
        assert sweep(hours=2) == deadlines.DeadlineSweep()
        later = sweep(hours=3, minutes=1)
        last = sweep(hours=9)

    assert (later.escalated, later.overdue) == (0, 1)
    assert last == deadlines.DeadlineSweep()
    [notice] = sent["overdue"]
    assert notice["review"].responsible_group == "managers"
    escalated = AuditEvent.objects.get(thread=thread, action="review.escalated")
    assert escalated.data["new_due_at"].startswith(review.due_at.strftime("%Y-%m-%dT%H:%M:%S"))
    assert AuditEvent.objects.filter(thread=thread, action="review.overdue").count() == 1


def test_after_escalation_only_the_new_group_sees_and_decides_it(
    staff: User, reviewer: User, manager: User, rita: Client
):
    with paused(ask_workflow(on_due={"escalate": "managers"}), {"title": "Q3"}, staff) as thread:
        review = open_review(thread)
        form = review_form(rita, review, action="approve")
        max_client = client_for(manager)
        assert max_client.get(reverse("approvals:review", args=[review.pk])).status_code == 404
        assert max_client.get(reverse("approvals:thread", args=[thread.public_id])).status_code == 404

        sweep(hours=25)

        # Rita's old form: the review is no longer hers to find.
        refused = rita.post(reverse("approvals:decide", args=[review.pk]), form)
        assert refused.status_code == 404
        assert rita.get(reverse("approvals:review", args=[review.pk])).status_code == 404
        assert review.pk not in [row.pk for row in queries.queue(reviewer, queries.QueueFilters()).page]
        with pytest.raises(approvals.ReviewEscalated, match="escalated from finance to managers"):
            decide(review, reviewer, "approve")
        with pytest.raises(approvals.ReviewEscalated):
            approvals.claim_review(review=review, actor=reviewer)

        # Max now has it: in his queue, on its page, and his to decide; the thread shows too.
        assert [row.pk for row in queries.queue(manager, queries.QueueFilters()).page] == [review.pk]
        page = max_client.get(reverse("approvals:review", args=[review.pk]))
        assert page.status_code == 200
        assert "escalated from <strong>finance</strong> to <strong>managers</strong>" in page.text
        assert max_client.get(reverse("approvals:thread", args=[thread.public_id])).status_code == 200
        decision = decide(review, manager, "approve")

    assert decision.actor == manager
    assert Decision.objects.filter(review=review).count() == 1


def test_an_old_decision_form_after_escalation_is_a_409_naming_the_new_group(
    staff: User, reviewer: User, rita: Client, monkeypatch: pytest.MonkeyPatch
):
    with paused(ask_workflow(on_due={"escalate": "managers"}), {"title": "Q3"}, staff) as thread:
        review = open_review(thread)
        form = review_form(rita, review, action="approve")
        real = queries.readable_reviews

        def seen_before(user: Any) -> Any:
            # Rita's request finds the review, then the sweep moves it: decide() is the judge.
            found = [row.pk for row in real(user)]
            deadlines.sweep_deadlines(now=timezone.now() + LATER)
            return Review.objects.select_related("thread", "claimed_by").filter(pk__in=found)

        monkeypatch.setattr(queries, "readable_reviews", seen_before)
        refused = rita.post(reverse("approvals:decide", args=[review.pk]), form)

    assert refused.status_code == 409
    assert "escalated from finance to managers" in refused.text
    assert not Decision.objects.filter(review=review).exists()
    assert thread.runs.count() == 1


# -- decide a default ----------------------------------------------------------------------------


def test_a_default_is_decided_by_timeout_through_the_decision_service(staff: User, reviewer: User):
    with paused(ask_workflow(on_due={"decide": "approve"}), {"title": "Q3"}, staff) as thread:
        review = open_review(thread)
        approvals.claim_review(review=review, actor=reviewer)

        result = sweep(hours=25)
        again = sweep(hours=30)
        run_queued(thread)

        assert (result.timed_out, again) == (1, deadlines.DeadlineSweep())
        decision = Decision.objects.get(review=review)
        assert decision.actor is None
        assert decision.actor_label == "timeout"
        assert decision.decided_by == "timeout"
        assert decision.checkpoint_id == review.checkpoint_id
        review.refresh_from_db()
        assert review.status == Review.Status.DECIDED
        assert review.due_applied_at is not None
        event = AuditEvent.objects.get(thread=thread, action="review.decided")
        assert event.actor_label == "timeout"
        assert event.actor_id is None
        assert event.data["action"] == "approve"
        assert event.data["policy"] == {"action": "decide", "decision": "approve"}
        assert thread.status == Thread.Status.COMPLETED
        assert head(thread).values["answer"] == "approve"
        # A reviewer who comes late is told who decided.
        with pytest.raises(approvals.AlreadyDecided, match=r"\(approve\) by timeout at"):
            decide(review, reviewer, "reject")
        page = client_for(reviewer).get(reverse("approvals:review", args=[review.pk]))
        assert "by timeout at" in page.text


def test_a_default_reject_at_a_breakpoint_cancels_like_a_reviewer_would(staff: User):
    with paused(breakpoint_workflow(on_due={"decide": "reject"}), {"title": "Q3"}, staff) as thread:
        assert sweep(hours=25).timed_out == 1

    thread.refresh_from_db()
    assert thread.status == Thread.Status.CANCELLED
    assert Decision.objects.get(review__thread=thread).actor_label == "timeout"


def test_a_default_that_no_longer_applies_becomes_the_overdue_notice(
    staff: User, sent: dict[str, list[Any]], caplog: pytest.LogCaptureFixture
):
    with paused(ask_workflow(on_due={"decide": "approve"}), {"title": "Q3"}, staff) as thread:
        review = open_review(thread)
        # Pinned to a checkpoint the thread is no longer at: the default must not apply.
        Review.objects.filter(pk=review.pk).update(checkpoint_id="not-the-head")

        result = sweep(hours=25)
        again = sweep(hours=30)

    assert (result.overdue, result.timed_out, again) == (1, 0, deadlines.DeadlineSweep())
    assert not Decision.objects.filter(review=review).exists()
    assert len(sent["overdue"]) == 1
    event = AuditEvent.objects.get(thread=thread, action="review.overdue")
    assert "the default decision could not be taken" in event.data["reason"]
    assert "cannot be taken" in caplog.text


def test_a_system_decision_must_name_itself(staff: User):
    with paused(ask_workflow(), {"title": "Q3"}, staff) as thread:
        review = open_review(thread)
        with pytest.raises(approvals.InvalidDecision, match="names itself"):
            approvals.decide(review=review, actor=None, action="approve", checkpoint_id=review.checkpoint_id)
    assert not Decision.objects.exists()


# -- due soon and follow-ups ---------------------------------------------------------------------


def test_the_claimant_is_told_once_when_a_review_is_due_soon(
    staff: User, reviewer: User, sent: dict[str, list[Any]]
):
    with paused(ask_workflow(), {"title": "Q3"}, staff) as thread:
        review = open_review(thread)
        # Unclaimed: nobody to tell.
        assert sweep(hours=23).due_soon == 0
        approvals.claim_review(review=review, actor=reviewer)
        # Still far off with the default SIGNOFF_DUE_SOON_HOURS (2).
        assert deadlines.sweep_deadlines(now=timezone.now()).due_soon == 0
        # A claim lasts SIGNOFF_CLAIM_SECONDS: within it, the due time comes close.
        Review.objects.filter(pk=review.pk).update(due_at=timezone.now() + timedelta(hours=1))
        assert deadlines.sweep_deadlines().due_soon == 1
        assert deadlines.sweep_deadlines().due_soon == 0

    [call] = sent["due_soon"]
    assert call["review"].pk == review.pk
    assert AuditEvent.objects.get(thread=thread, action="review.due_soon").data["holder"] == "rita"


def test_a_follow_up_is_sent_once_to_who_set_it_then_cleared(
    staff: User, reviewer: User, sent: dict[str, list[Any]]
):
    with paused(ask_workflow(review_hours=100), {"title": "Q3"}, staff) as thread:
        review = open_review(thread)
        approvals.claim_review(review=review, actor=reviewer)
        approvals.set_follow_up(review=review, actor=reviewer, at=timezone.now() + timedelta(hours=20))

        assert sweep(hours=19).followed_up == 0
        assert sweep(hours=21).followed_up == 1
        assert sweep(hours=22).followed_up == 0

    [call] = sent["follow_up"]
    assert (call["review"].pk, call["user"]) == (review.pk, reviewer)
    review.refresh_from_db()
    assert (review.follow_up_at, review.follow_up_by) == (None, None)
    assert audit_actions(thread).count("review.follow_up_set") == 1
    assert audit_actions(thread).count("review.followed_up") == 1


def test_only_the_holder_sets_a_follow_up_and_only_in_the_future(
    staff: User, reviewer: User, other_reviewer: User
):
    with paused(ask_workflow(), {"title": "Q3"}, staff) as thread:
        review = open_review(thread)
        with pytest.raises(approvals.InvalidDecision, match="Claim the review first"):
            approvals.set_follow_up(review=review, actor=reviewer, at=timezone.now() + timedelta(days=1))
        approvals.claim_review(review=review, actor=reviewer)
        with pytest.raises(approvals.ReviewClaimed):
            approvals.set_follow_up(
                review=review, actor=other_reviewer, at=timezone.now() + timedelta(days=1)
            )
        with pytest.raises(approvals.InvalidDecision, match="in the future"):
            approvals.set_follow_up(review=review, actor=reviewer, at=timezone.now() - timedelta(minutes=1))
        with pytest.raises(approvals.InvalidDecision, match="within 366 days"):
            approvals.set_follow_up(review=review, actor=reviewer, at=timezone.now() + timedelta(days=400))

    review.refresh_from_db()
    assert review.follow_up_at is None
    assert "review.follow_up_set" not in audit_actions(thread)


def test_remind_me_tomorrow_works_without_javascript_and_shows_in_the_queue(
    staff: User, reviewer: User, rita: Client, oscar: Client
):
    with paused(ask_workflow(), {"title": "Q3"}, staff) as thread:
        review = open_review(thread)
        rita.post(reverse("approvals:claim", args=[review.pk]))
        page = rita.get(reverse("approvals:review", args=[review.pk]))
        assert f'action="{reverse("approvals:follow_up", args=[review.pk])}"' in page.text

        response = rita.post(reverse("approvals:follow_up", args=[review.pk]), {"preset": "tomorrow"})

        assert response.status_code == 302
        review.refresh_from_db()
        assert review.follow_up_by == reviewer
        assert review.follow_up_at is not None
        tomorrow = timezone.localtime(review.follow_up_at)
        assert (tomorrow.date(), tomorrow.hour) == (timezone.localdate() + timedelta(days=1), 9)
        page = rita.get(reverse("approvals:review", args=[review.pk]))
        assert "You asked to be reminded at" in page.text
        queue = rita.get(reverse("approvals:queue"))
        assert "Follow up" in queue.text
        # Nobody else is shown Rita's follow-up.
        others = oscar.get(reverse("approvals:queue")).text
        assert reverse("approvals:review", args=[review.pk]) in others
        assert "Follow up" not in others

        # A bad date is a form error with htmx, and changes nothing.
        bad = rita.post(reverse("approvals:follow_up", args=[review.pk]), {"at": "soon"}, **HX)
        assert bad.status_code == 422
        assert "Enter a valid date/time" in bad.text
        cleared = rita.post(reverse("approvals:follow_up", args=[review.pk]), {"preset": "clear"}, **HX)
        assert cleared.status_code == 200

    review.refresh_from_db()
    assert review.follow_up_at is None


def test_the_api_shows_an_escalated_thread_to_the_new_group(staff: User, reviewer: User, manager: User):
    from tests.clients import key_for

    with paused(ask_workflow(on_due={"escalate": "managers"}), {"title": "Q3"}, staff) as thread:
        url = f"/api/threads/{thread.public_id}"
        as_max = {"x-api-key": key_for(manager)}
        assert Client().get(url, headers=as_max).status_code == 404

        sweep(hours=25)

        assert Client().get(url, headers=as_max).status_code == 200
        # Rita still reviews the workflow, so she still follows its threads.
        assert Client().get(url, headers={"x-api-key": key_for(reviewer)}).status_code == 200
