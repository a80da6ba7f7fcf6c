"""History as a tree (issue 13, items 5 and 3): after a rollback or a fork the history draws
each branch in its own lane, marks the live one (the head's), says which rollback left each
other branch behind, and shows every reviewer's decision and comment on its checkpoint, on the
review and thread pages and in the thread admin's timeline, in a bounded number of queries."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from approvals import queries
from approvals.models import Review
from tests.factories import decide, make_thread, open_review, paused, run_queued
from tests.fake_workflows import ticks_workflow
from tests.pages import HX, client_for, expense_thread, review_url
from workflows import services
from workflows.models import Checkpoint, Thread

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("doorbell")]


def step_of(thread: Thread, step: int, *, live: bool = True) -> str:
    """The checkpoint id of `step` on the live branch (or off it)."""
    [found] = [e for e in queries.history(thread) if e.step == step and e.live == live and e.source == "loop"]
    return found.checkpoint_id


def first_step(thread: Thread) -> str:
    """The thread's very first step 0, on whichever branch it now is."""
    stored = Checkpoint.objects.filter(thread_id=thread.thread_id).order_by("checkpoint_id")
    return next(row.checkpoint_id for row in stored if row.metadata.get("step") == 0)


def rolled_back(thread: Thread, actor: User, reason: str, *, to_step: int = 0) -> Thread:
    """Roll the thread back to a step of its live branch (step 0: the first step 0, wherever
    it is) and run it to its next pause."""
    target = first_step(thread) if to_step == 0 else step_of(thread, to_step)
    services.rollback_thread(thread=thread, actor=actor, checkpoint_id=target, reason=reason)
    run_queued(thread)
    return thread


@pytest.fixture
def paid_then_rolled_back(staff: User, reviewer: User, admin: User) -> Thread:
    """An expense claim approved with a comment and paid, then rolled back by Ada to step 0
    and run again to its review: the paid branch is left behind."""
    thread = expense_thread(staff)
    decide(open_review(thread), reviewer, "approve", comment="Receipt checked")
    run_queued(thread)
    assert thread.status == Thread.Status.COMPLETED
    return rolled_back(thread, admin, "the amount was wrong")


def rows(html: str) -> list[str]:
    """Each checkpoint's <li> in the history, newest first."""
    history = html[html.index('<ol class="timeline">') :]
    return re.findall(r'<li class="checkpoint [^"]*".*?</div>\n  </li>', history, re.S)


# -- the tree ---------------------------------------------------------------------------------


def test_a_rolled_back_thread_has_a_live_branch_and_one_left_behind_by_the_rollback(
    paid_then_rolled_back: Thread, admin: User
):
    tree = queries.history_tree(paid_then_rolled_back)

    assert (tree.lanes, tree.abandoned) == (2, 1)
    assert [(e.step, e.node, e.live, e.lane) for e in tree.rows] == [
        (2, "draft", True, 0),  # the head, paused before pay again
        (1, "rollback", True, 0),  # the copy of step 0
        (3, "pay", False, 1),  # the old head: paid
        (2, "edit", False, 1),  # the reviewer's approval
        (1, "draft", False, 1),
        (0, "__start__", False, 1),  # the step 0 rolled back to, copied above
        (-1, "input", True, 0),  # where both branches start
    ]
    tip = tree.rows[2]
    assert tip.branch_tip
    assert [e.branch_tip for e in tree.rows].count(True) == 1
    gone = tip.abandoned_by
    assert gone is not None
    assert (gone.kind, gone.actor, gone.reason, gone.to_step) == (
        "rollback",
        admin.username,
        "the amount was wrong",
        0,
    )
    assert gone.run_id == paid_then_rolled_back.runs.get(kind="rollback").pk
    # Every checkpoint off the live branch says which rollback left it; none on it does.
    assert all(e.abandoned_by == gone for e in tree.rows if not e.live)
    assert all(e.abandoned_by is None for e in tree.rows if e.live)
    assert tree.rows[1].made_by == gone


def test_the_branches_are_drawn_in_lanes_that_meet_where_they_split(paid_then_rolled_back: Thread):
    rails = [e.rails for e in queries.history_tree(paid_then_rolled_back).rows]

    through, gone = ["up live", "down live"], ["up gone", "down gone", "dot gone"]
    assert rails == [
        [["down live", "dot live"], []],
        [["up live", "down live", "dot live"], []],
        [through, ["down gone", "dot gone"]],
        [through, gone],
        [through, gone],
        [through, gone],
        # The old branch bends into the input checkpoint, the first of both.
        [["right gone", "up live", "dot live"], ["up gone", "left gone"]],
    ]


def test_a_checkpoint_whose_parent_is_older_than_those_read_lists_no_changes_rather_than_wrong_ones(
    paid_then_rolled_back: Thread,
):
    tree = queries.history_tree(paid_then_rolled_back, limit=3)

    head, copy, old_head = tree.rows
    assert tree.more
    # The copy's parent is the input checkpoint, far below the three rows read: its changes
    # are not listed, and not diffed against the row below it, which is on another branch.
    assert (copy.source, copy.changes_known, copy.changes) == ("fork", False, [])
    assert head.changes_known
    assert [change.field for change in head.changes] == ["approved", "summary"]
    assert old_head.changes_known
    assert [change.field for change in old_head.changes] == ["outcome"]
    # The old branch's lane runs off the bottom: its parent is not listed either.
    assert old_head.rails[1] == ["down gone", "dot gone"]


def test_each_branch_left_behind_names_its_own_rollback_and_lanes_are_shared_when_free(
    paid_then_rolled_back: Thread, reviewer: User, admin: User
):
    thread = paid_then_rolled_back
    decide(open_review(thread), reviewer, "reject", comment="Not a business trip")
    run_queued(thread)
    rolled_back(thread, admin, "second look", to_step=2)

    tree = queries.history_tree(thread)

    tips = [e for e in tree.rows if e.branch_tip]
    assert [(e.node, e.abandoned_by and e.abandoned_by.reason) for e in tips] == [
        ("reject", "second look"),
        ("pay", "the amount was wrong"),
    ]
    assert tree.abandoned == 2
    # The second rollback went back to step 1 of the second branch: its branch is short and
    # ends above where the first branch's lane begins, so both use lane 1.
    assert {e.lane for e in tree.rows if not e.live} == {1}
    assert tree.lanes == 2
    assert (tree.rows[0].live, tree.rows[0].lane) == (True, 0)


def test_a_state_update_from_an_earlier_checkpoint_is_a_fork_drawn_as_a_branch(staff: User, admin: User):
    thread = expense_thread(staff)
    withdrawn = open_review(thread)
    services.update_thread_state(
        thread=thread,
        actor=admin,
        values={"amount": 99.0},
        as_node="draft",
        checkpoint_id=step_of(thread, 0),
        may_fork=True,
    )

    tree = queries.history_tree(thread)

    assert tree.abandoned == 1
    head, *_ = tree.rows
    assert (head.source, head.actor, head.live) == ("update", admin.username, True)
    assert head.made_by is not None
    assert head.made_by.kind == "fork"
    [tip] = [e for e in tree.rows if e.branch_tip]
    assert tip.checkpoint_id == withdrawn.checkpoint_id
    assert tip.abandoned_by is not None
    assert (tip.abandoned_by.kind, tip.abandoned_by.actor, tip.abandoned_by.to_step) == (
        "fork",
        admin.username,
        0,
    )
    assert tip.abandoned_by.run_id is None
    # The review the fork withdrew stays on the checkpoint it was raised at.
    assert [(note.review.pk, note.outcome) for note in tip.reviews] == [(withdrawn.pk, "withdrawn")]


# -- the pages ------------------------------------------------------------------------------


@pytest.mark.parametrize("page", ["review", "thread"])
def test_the_pages_mark_the_live_branch_and_name_the_rollback_that_left_the_other(
    rita: Client, paid_then_rolled_back: Thread, page: str
):
    thread = paid_then_rolled_back
    url = (
        review_url(open_review(thread))
        if page == "review"
        else reverse("approvals:thread", args=[thread.public_id])
    )

    html = rita.get(url).text

    shown = rows(html)
    assert [row.startswith('<li class="checkpoint live"') for row in shown] == [
        True,
        True,
        False,
        False,
        False,
        False,
        True,
    ]
    assert '<span class="tag live">head</span>' in shown[0]
    assert all('<span class="tag gone">abandoned</span>' in row for row in shown[2:6])
    assert "Left behind when ada rolled back to step 0 at" in shown[2]
    assert "the amount was wrong" in shown[2]
    assert sum("Left behind" in row for row in shown) == 1
    assert "A copy of step 0: ada's rollback starts a branch here." in shown[1]
    assert "1 branch left behind by a rollback is drawn in grey" in html
    # The lanes: the first row draws the head's dot in lane 0, the old head's in lane 1.
    head_dot = '<span class="rail"><i class="down live"></i><i class="dot live"></i></span>'
    assert f'{head_dot}<span class="rail"></span>' in shown[0]
    assert '<span class="rail"><i class="down gone"></i><i class="dot gone"></i></span>' in shown[2]


def test_the_history_fragment_draws_the_same_tree(rita: Client, paid_then_rolled_back: Thread):
    url = review_url(open_review(paid_then_rolled_back))

    fragment = rita.get(f"{url}?history=all", **HX).text

    assert fragment.strip().startswith('<section class="history" id="history">')
    assert "Left behind when ada rolled back to step 0" in fragment
    assert len(rows(fragment)) == 7


def test_a_decision_and_its_comment_show_on_the_checkpoint_it_was_made_at(
    rita: Client, paid_then_rolled_back: Thread
):
    thread = paid_then_rolled_back
    html = rita.get(reverse("approvals:thread", args=[thread.public_id])).text

    shown = rows(html)
    # The approval was given at step 1 (paused before pay), on the branch left behind; the
    # new review waits on the head.
    assert re.search(r"Review at <code>pay</code>:\s*<strong>approved</strong> by rita", shown[4])
    assert '<q class="comment">Receipt checked</q>' in shown[4]
    assert re.search(r"Review at <code>pay</code>:\s*<strong>waiting</strong> for a decision", shown[0])
    assert sum("Review at" in row for row in shown) == 2


def test_a_comment_is_shown_escaped(rita: Client, staff: User, reviewer: User):
    thread = expense_thread(staff)
    decide(open_review(thread), reviewer, "reject", comment="<b>no</b> receipt\nattached")
    run_queued(thread)

    html = rita.get(reverse("approvals:thread", args=[thread.public_id])).text

    assert re.search(r"<strong>rejected</strong> by rita", html)
    assert "&lt;b&gt;no&lt;/b&gt; receipt\nattached" in html
    assert "<b>no</b>" not in html


def test_partial_approvals_and_the_decision_that_completed_them_show_with_their_comments(
    staff: User, quinn: User, lena: User
):
    thread = make_thread(
        "test_four_eyes",
        {"employee": "Ada", "description": "Taxi", "amount": 30.0, "category": "travel"},
        staff,
    )
    run_queued(thread)
    review = open_review(thread)
    decide(review, quinn, "approve", comment="Receipt is fine")
    page = client_for(quinn).get(reverse("approvals:thread", args=[thread.public_id])).text
    waiting = next(row for row in rows(page) if "Review at" in row)
    assert re.search(r"<strong>waiting</strong> for a decision", waiting)
    assert re.search(
        r"approved by quinn\s*<time[^>]*>[^<]*</time>: <q class=\"comment\">Receipt is fine</q>", waiting
    )

    decide(review, lena, "approve", comment="Agreed")
    page = client_for(quinn).get(reverse("approvals:thread", args=[thread.public_id])).text

    decided = next(row for row in rows(page) if "Review at" in row)
    assert re.search(
        r"<strong>approved</strong> by lena\s*<time[^>]*>[^<]*</time>: <q class=\"comment\">Agreed</q>",
        decided,
    )
    assert re.findall(r"<li>approved by (\w+)", decided) == ["quinn", "lena"]


# -- the admin's timeline ---------------------------------------------------------------------


def test_the_admin_timeline_draws_the_same_tree_with_the_decisions(
    admin: User, paid_then_rolled_back: Thread
):
    thread = paid_then_rolled_back
    html = client_for(admin).get(reverse("admin:workflows_thread_change", args=[thread.pk])).text

    table = html[html.index('<table class="checkpoint-tree">') :]
    labels = re.findall(r'<strong class="branch-label (live|abandoned)">', table)
    assert labels == ["live", "live", "abandoned", "abandoned", "abandoned", "abandoned", "live"]
    cells = re.findall(r'<td class="rails"><span class="rails" aria-hidden="true">(.*?)</span></td>', table)
    assert len(cells) == 7
    assert '<i class="left gone"></i>' in cells[6]
    assert "Left behind when ada rolled back to step 0 at" in table
    assert '<q class="comment">Receipt checked</q>' in table
    assert "the thread's head is on the live branch" in html.lower()


# -- speed: a fixed number of queries however long the history ---------------------------------


def test_the_history_reads_in_four_queries_however_many_branches_and_decisions(
    django_assert_max_num_queries: Any, paid_then_rolled_back: Thread, reviewer: User, admin: User
):
    thread = paid_then_rolled_back
    for n in range(4):
        decide(open_review(thread), reviewer, "reject", comment=f"Try {n}")
        run_queued(thread)
        rolled_back(thread, admin, f"round {n}")
    assert Review.objects.filter(thread=thread).count() == 6

    # The checkpoints, the audit events naming people, the reviews with their decisions,
    # and the approvals.
    with django_assert_max_num_queries(4):
        tree = queries.history_tree(thread)

    assert tree.abandoned == 5
    assert sum(len(e.reviews) for e in tree.rows) == 6


@pytest.fixture
def ticking(staff: User) -> Iterator[Thread]:
    with paused(ticks_workflow(), {"count": 0}, staff) as thread:
        yield thread


def page_queries(client: Client, url: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    return len(captured)


def test_the_review_page_with_200_checkpoints_in_branches_costs_no_query_more_than_with_one_branch(
    django_assert_max_num_queries: Any, rita: Client, ticking: Thread, admin: User
):
    first = page_queries(rita, f"{review_url(open_review(ticking))}?history=all")
    while Checkpoint.objects.filter(thread_id=ticking.thread_id).count() < 200:
        rolled_back(ticking, admin, "count again")

    url = f"{review_url(open_review(ticking))}?history=all"
    with django_assert_max_num_queries(first):
        html = rita.get(url).text

    shown = rows(html)
    assert len(shown) == 200
    assert sum("Left behind when ada rolled back" in row for row in shown) >= 5
