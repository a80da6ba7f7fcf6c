"""The threads page for operators (`approvals.views.threads`), and a failed thread's page: its
error's last line or traceback, and Retry (issue 13, item 4)."""

from __future__ import annotations

import dataclasses
import html
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from approvals.views import without_server_paths
from tests.factories import EXPENSE, audit_actions, make_user, registered, row_counts, run_queued
from tests.fake_workflows import tally
from tests.pages import HX, client_for, expense_thread, grant
from workflows import registry, services
from workflows.models import Run, Thread

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("doorbell")]

THREADS = reverse("approvals:threads")


@pytest.fixture
def finance_tally() -> Iterator[registry.Workflow]:
    """The fake one-step graph (test_tally's), reviewed by finance: it fails when asked."""
    workflow = registry.Workflow(
        name="finance_tally", title="Finance tally", builder=tally, reviewer_group="finance"
    )
    with registered(workflow) as spec:
        yield spec


@pytest.fixture
def fiona() -> User:
    """A reviewer of finance only: expense_approval and finance_tally, nothing else."""
    return make_user("fiona", groups=["finance"])


@pytest.fixture
def failed(finance_tally: registry.Workflow, staff: User) -> Thread:
    thread = services.start_thread(
        workflow="finance_tally", input={"count": 1, "fail": True}, actor=staff, title="Broken tally"
    )
    run_queued(thread)
    assert thread.status == Thread.Status.FAILED
    return thread


def queued(workflow: str, title: str, actor: User | None = None, **input: Any) -> Thread:
    """A thread started and not run yet (its status is queued): no graph runs for it."""
    return services.start_thread(workflow=workflow, input=input or dict(EXPENSE), actor=actor, title=title)


def listed(response_text: str) -> list[str]:
    return re.findall(r'<tr id="thread-([0-9a-f-]{36})"', response_text)


def link(response_text: str, rel: str) -> str | None:
    found = re.search(rf'<a href="([^"]+)"[^>]*rel="{rel}"', response_text)
    return html.unescape(found.group(1)) if found else None


def thread_url(thread: Thread) -> str:
    return reverse("approvals:thread", args=[thread.public_id])


def retry_url(thread: Thread) -> str:
    return reverse("approvals:thread_retry", args=[thread.public_id])


# -- who sees which threads ------------------------------------------------------------------


def test_a_finance_member_sees_the_expense_threads_and_not_another_groups(fiona: User, staff: User):
    mine = queued("expense_approval", "Train to Lyon", staff)
    theirs = queued("test_tally", "Testers' tally", staff, count=0)

    response = client_for(fiona).get(THREADS)

    assert response.status_code == 200
    assert listed(response.text) == [str(mine.public_id)]
    assert "Testers&#x27; tally" not in response.text
    # Every row links to a page the user may open.
    assert client_for(fiona).get(thread_url(mine)).status_code == 200
    assert client_for(fiona).get(thread_url(theirs)).status_code == 404


def test_a_superuser_sees_every_workflows_threads_and_staff_only_their_groups(admin: User, staff: User):
    expense = queued("expense_approval", "Train to Lyon", staff)
    tally_thread = queued("test_tally", "Testers' tally", staff, count=0)

    everything = listed(client_for(admin).get(THREADS).text)
    # Staff without a reviewer group open no thread page (invariant 10), so none is listed.
    nothing = listed(client_for(staff).get(THREADS).text)

    assert everything == [str(tally_thread.public_id), str(expense.public_id)]
    assert nothing == []


def test_the_workflow_filter_lists_one_workflows_threads(admin: User, staff: User):
    expense = queued("expense_approval", "Train to Lyon", staff)
    queued("test_tally", "Testers' tally", staff, count=0)

    response = client_for(admin).get(THREADS, {"workflow": "expense_approval"})

    assert listed(response.text) == [str(expense.public_id)]
    assert '<option value="expense_approval" selected>' in response.text


def test_the_workflow_choices_are_the_workflows_the_user_reviews(fiona: User):
    text = client_for(fiona).get(THREADS).text

    assert '<option value="expense_approval"' in text
    assert '<option value="test_tally"' not in text


# -- status filters --------------------------------------------------------------------------


@pytest.fixture
def one_of_each(finance_tally: registry.Workflow, staff: User) -> dict[str, Thread]:
    """A finance thread in each status the page filters on."""
    waiting_run = queued("finance_tally", "About to run", staff, count=1)
    run = waiting_run.runs.get()
    assert services.claim_run(run_id=run.pk, holder=services.lease_holder()).token
    completed = queued("finance_tally", "Done", staff, count=1)
    run_queued(completed)
    failed = queued("finance_tally", "Broken", staff, count=1, fail=True)
    run_queued(failed)
    cancelled = queued("expense_approval", "Withdrawn", staff)
    services.cancel_thread(thread=cancelled, actor=staff, reason="claimed twice")
    threads = {
        "queued": queued("expense_approval", "Not started", staff),
        "running": waiting_run,
        "waiting": expense_thread(staff, "Train to Lyon"),
        "failed": failed,
        "completed": completed,
        "cancelled": cancelled,
    }
    for thread in threads.values():
        thread.refresh_from_db()
    assert [thread.status for thread in threads.values()] == [
        "queued",
        "running",
        "interrupted",
        "failed",
        "completed",
        "cancelled",
    ]
    return threads


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("running", {"queued", "running"}),
        ("waiting", {"waiting"}),
        ("failed", {"failed"}),
        ("completed", {"completed"}),
        ("cancelled", {"cancelled"}),
        ("", {"queued", "running", "waiting", "failed", "completed", "cancelled"}),
    ],
)
def test_each_status_filter_lists_the_threads_in_that_state(
    rita: Client, one_of_each: dict[str, Thread], status: str, expected: set[str]
):
    response = rita.get(THREADS, {"status": status} if status else {})

    ids = {str(one_of_each[name].public_id) for name in expected}
    assert set(listed(response.text)) == ids
    assert len(listed(response.text)) == len(ids)
    current = re.search(r'data-status-filter="(\w+)" class="current"', response.text)
    assert current is not None
    assert current.group(1) == (status or "all")


def test_a_row_says_who_started_the_thread_and_how_long_it_has_been_in_its_state(
    rita: Client, reviewer: User, staff: User
):
    thread = queued("expense_approval", "Train to Lyon", reviewer)
    Thread.objects.filter(pk=thread.pk).update(updated_at=timezone.now() - timedelta(hours=3, minutes=20))
    nobody = queued("expense_approval", "From the API", None)

    text = rita.get(THREADS).text

    row = text[text.index(f'id="thread-{thread.public_id}"') :]
    row = row[: row.index("</tr>")]
    assert '<td data-label="Started by">rita</td>' in row
    assert ">3 h 20 min</time>" in row
    assert 'data-status="queued">queued</span>' in row
    assert f'href="{thread_url(thread)}"' in row
    system = text[text.index(f'id="thread-{nobody.public_id}"') :]
    assert '<span class="muted">system</span>' in system[: system.index("</tr>")]


def test_an_unknown_status_or_workflow_is_named_and_ignored(rita: Client, staff: User):
    thread = queued("expense_approval", "Train to Lyon", staff)

    response = rita.get(THREADS, {"status": "stuck", "workflow": "nope\x00"})

    assert response.status_code == 200
    assert "Status: “stuck” is not one of running, waiting, failed, completed, cancelled" in response.text
    assert "Workflow: contains a NUL character" in response.text
    assert listed(response.text) == [str(thread.public_id)]


# -- keyset pages ----------------------------------------------------------------------------


@pytest.fixture
def many(staff: User) -> list[Thread]:
    """23 expense threads, newest state change first; five share one updated_at, across the
    boundary of the first two pages of ten, so only the id orders them."""
    threads = [queued("expense_approval", f"Claim {n}", staff) for n in range(23)]
    start = timezone.now() - timedelta(days=1)
    for n, thread in enumerate(threads):
        moment = start + timedelta(minutes=n)
        if 10 <= n <= 14:
            moment = start + timedelta(minutes=10)
        Thread.objects.filter(pk=thread.pk).update(updated_at=moment)
    return sorted(
        Thread.objects.filter(pk__in=[thread.pk for thread in threads]),
        key=lambda thread: (thread.updated_at, thread.pk),
        reverse=True,
    )


def test_keyset_pages_neither_repeat_nor_skip_a_thread(rita: Client, many: list[Thread]):
    pages: list[list[str]] = []
    url: str | None = f"{THREADS}?per_page=10"
    while url is not None:
        response = rita.get(url)
        pages.append(listed(response.text))
        url = link(response.text, "next")

    assert [len(page) for page in pages] == [10, 10, 3]
    assert [thread_id for page in pages for thread_id in page] == [str(thread.public_id) for thread in many]


def test_walking_back_by_newer_gives_the_same_pages(rita: Client, many: list[Thread]):
    first = rita.get(f"{THREADS}?per_page=10").text
    older = link(first, "next")
    assert older is not None
    second = rita.get(older).text
    last_url = link(second, "next")
    assert last_url is not None
    last = rita.get(last_url).text

    back_to_second = rita.get(link(last, "prev") or "").text
    back_to_first = rita.get(link(back_to_second, "prev") or "").text

    assert listed(back_to_second) == listed(second)
    assert listed(back_to_first) == listed(first)
    assert link(first, "prev") is None
    assert link(last, "next") is None


def test_a_deep_page_costs_the_queries_of_the_first_and_never_an_offset(rita: Client, many: list[Thread]):
    def queries_of(url: str) -> list[str]:
        with CaptureQueriesContext(connection) as captured:
            assert rita.get(url).status_code == 200
        return [query["sql"] for query in captured.captured_queries]

    url = f"{THREADS}?per_page=10"
    first = queries_of(url)
    for _ in range(2):
        url = link(rita.get(url).text, "next") or ""
    deep = queries_of(url)

    assert len(deep) == len(first)
    assert not any("OFFSET" in sql.upper() for sql in first + deep)
    assert not any("COUNT(" in sql.upper() for sql in first + deep)


def test_a_cursor_that_is_not_one_is_named_and_the_newest_shown(rita: Client, many: list[Thread]):
    response = rita.get(THREADS, {"before": "²-1", "per_page": "10"})

    assert "is not a position in the list (before)" in response.text
    assert listed(response.text) == [str(thread.public_id) for thread in many[:10]]


# -- htmx and the no-JavaScript path ---------------------------------------------------------


def test_under_htmx_only_the_rows_come_back(rita: Client, many: list[Thread]):
    response = rita.get(THREADS, {"per_page": "10"}, **HX)

    assert response.status_code == 200
    assert response.text.lstrip().startswith('<div id="rows">')
    assert "<html" not in response.text
    assert 'id="thread-filters"' not in response.text
    assert listed(response.text) == [str(thread.public_id) for thread in many[:10]]
    assert "HX-Request" in response["Vary"]


def test_without_javascript_the_filters_are_a_get_form_and_the_tabs_and_pages_links(
    rita: Client, many: list[Thread]
):
    text = rita.get(THREADS, {"per_page": "10"}).text

    form = re.search(r'<form id="thread-filters"[^>]*>', text)
    assert form is not None
    assert 'method="get"' in form.group(0)
    assert f'action="{THREADS}"' in form.group(0)
    assert '<noscript><button type="submit">Filter</button></noscript>' in text
    # The status tab keeps the page size, and is a real link; so is the next page.
    assert f'<a href="{THREADS}?status=failed&amp;per_page=10"' in text
    older = link(text, "next")
    assert older is not None
    assert older.startswith(f"{THREADS}?per_page=10&before=")
    # The status the tab chose travels with the form when the workflow changes.
    assert '<input type="hidden" name="status" value="" form="thread-filters">' in text


def test_the_threads_link_is_shown_only_to_who_sees_a_workflow(rita: Client, admin: User, staff: User):
    nav = f'<a href="{THREADS}">Threads</a>'

    assert nav in rita.get(reverse("approvals:queue")).text
    assert nav in client_for(admin).get(reverse("approvals:queue")).text
    assert nav not in client_for(staff).get(reverse("approvals:queue")).text
    assert nav not in client_for(make_user("nina")).get(reverse("approvals:queue")).text


# -- a failed thread's page ------------------------------------------------------------------


def test_a_reviewer_sees_the_errors_last_line_and_no_traceback(rita: Client, failed: Thread):
    text = rita.get(thread_url(failed)).text

    assert '<code class="failure-line">ValueError: asked to fail</code>' in text
    assert "Traceback" not in text
    assert 'File "/' not in text
    assert "fake_workflows.py" not in text


def test_staff_see_the_traceback_too(admin: User, failed: Thread):
    text = client_for(admin).get(thread_url(failed)).text

    assert '<code class="failure-line">ValueError: asked to fail</code>' in text
    assert "Traceback (shown to staff only)" in text
    assert "Traceback (most recent call last)" in text
    assert "fake_workflows.py" in text


def test_staff_who_review_the_workflow_see_the_traceback(failed: Thread):
    finance_staff = make_user("stella", groups=["finance"], staff=True)

    text = client_for(finance_staff).get(thread_url(failed)).text

    assert "Traceback (most recent call last)" in text


def test_a_server_path_in_the_last_line_is_hidden_from_reviewers_not_from_staff(
    rita: Client, admin: User, failed: Thread
):
    last = "FileNotFoundError: [Errno 2] No such file or directory: '/srv/signoff/var/receipts/42.pdf'"
    Thread.objects.filter(pk=failed.pk).update(error=f"Traceback (most recent call last):\n  ...\n{last}\n")

    reviewers = rita.get(thread_url(failed)).text
    staffs = client_for(admin).get(thread_url(failed)).text

    assert "No such file or directory: &#x27;[server path]&#x27;" in reviewers
    assert "/srv/signoff" not in reviewers
    assert "/srv/signoff/var/receipts/42.pdf" in staffs


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("ValueError: amount must be positive", "ValueError: amount must be positive"),
        ("OSError: cannot open /opt/app/x.db", "OSError: cannot open [server path]"),
        (r"OSError: C:\srv\app\x.db is locked", "OSError: [server path] is locked"),
        ("HTTPError: 404 for https://example.com/a/b", "HTTPError: 404 for https://example.com/a/b"),
        ("ValueError: ratio 1/2/3 and a/b/c", "ValueError: ratio 1/2/3 and a/b/c"),
    ],
)
def test_only_absolute_server_paths_are_hidden(text: str, shown: str):
    assert without_server_paths(text) == shown


# -- retry -----------------------------------------------------------------------------------


def test_without_the_permission_there_is_no_retry_button_and_a_retry_is_a_403(rita: Client, failed: Thread):
    page = rita.get(thread_url(failed)).text
    before = row_counts()

    response = rita.post(retry_url(failed))

    assert retry_url(failed) not in page
    assert response.status_code == 403
    assert "permission to retry threads (workflows.retry_thread)" in response.text
    assert row_counts() == before
    failed.refresh_from_db()
    assert failed.status == Thread.Status.FAILED


def test_with_the_permission_retry_queues_a_run_of_the_failed_thread(reviewer: User, failed: Thread):
    client = client_for(grant(reviewer, "retry_thread"))
    page = client.get(thread_url(failed)).text

    response = client.post(retry_url(failed), follow=True)

    assert f'action="{retry_url(failed)}"' in page
    assert response.redirect_chain == [(thread_url(failed), 302)]
    assert re.search(r"Retried; run \d+ is queued\.", response.text)
    failed.refresh_from_db()
    assert failed.status == Thread.Status.QUEUED
    assert failed.runs.order_by("-id").values_list("kind", "status").first() == (Run.Kind.RETRY, "queued")
    assert audit_actions(failed)[-1] == "thread.retried"


def test_a_retry_under_htmx_swaps_in_the_status_which_then_polls(reviewer: User, failed: Thread):
    client = client_for(grant(reviewer, "retry_thread"))

    response = client.post(retry_url(failed), **HX)

    assert response.status_code == 200
    assert response.text.lstrip().startswith('<section id="status"')
    assert 'hx-trigger="every 2s"' in response.text
    assert "<html" not in response.text


def test_a_superuser_may_retry(admin: User, failed: Thread):
    response = client_for(admin).post(retry_url(failed))

    assert response.status_code == 302
    failed.refresh_from_db()
    assert failed.status == Thread.Status.QUEUED


def test_retrying_a_thread_that_is_not_failed_is_a_409_and_writes_nothing(reviewer: User, failed: Thread):
    client = client_for(grant(reviewer, "retry_thread"))
    client.post(retry_url(failed))
    before = row_counts()

    response = client.post(retry_url(failed))
    htmx = client.post(retry_url(failed), **HX)

    assert response.status_code == 409
    assert "Only a failed thread can be retried; this one is queued." in response.text
    assert htmx.status_code == 409
    assert htmx["HX-Retarget"] == "#failure"
    assert htmx["HX-Reswap"] == "outerHTML"
    assert "<html" not in htmx.text
    assert row_counts() == before


def test_a_thread_the_user_may_not_see_is_a_404_even_with_the_permission(failed: Thread):
    editor = grant(make_user("eddie", groups=["editors"]), "retry_thread")
    before = row_counts()

    response = client_for(editor).post(retry_url(failed))

    assert response.status_code == 404
    assert row_counts() == before


def test_retry_is_a_post(reviewer: User, failed: Thread):
    response = client_for(grant(reviewer, "retry_thread")).get(retry_url(failed))

    assert response.status_code == 405


def test_a_lead_who_does_not_review_sees_the_threads_of_the_workflow_they_lead(staff: User):
    original = registry.get("expense_approval")
    registry.remove(original.name)
    registry.add(dataclasses.replace(original, lead_group="finance-leads"))
    try:
        manager = make_user("max", groups=["finance-leads"])
        led = services.start_thread(workflow="expense_approval", input=EXPENSE, actor=staff)
        other = services.start_thread(
            workflow="content_review", input={"topic": "t", "audience": "a"}, actor=staff
        )

        page = client_for(manager).get(reverse("approvals:threads"))
    finally:
        registry.remove(original.name)
        registry.add(original)

    assert page.status_code == 200
    assert f'href="{reverse("approvals:threads")}"' in page.text
    assert str(led.public_id) in page.text
    assert str(other.public_id) not in page.text
