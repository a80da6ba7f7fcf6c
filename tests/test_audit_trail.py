"""The staff audit trail (issue "Operations", item 4): who did what, when, and what they changed;
its filters, its diffs, its exports, and who may read it."""

from __future__ import annotations

import ast
import csv
import io
import json
import re
import tracemalloc
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from tests.factories import EXPENSE, decide, make_thread, open_review, row_counts, run_queued
from tests.pages import HX, LOGIN, client_for, grant
from workflows.audit import Action
from workflows.models import AuditEvent, Run, Thread

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("doorbell")]

LOG = reverse("approvals:audit_log")
CSV = reverse("approvals:audit_export_csv")
JSONL = reverse("approvals:audit_export_jsonl")


@pytest.fixture
def staff(staff: User) -> User:
    """Sam, staff, holding the permission the demo `staff` user has: he reads the audit trail."""
    return grant(staff, "view_auditevent")


@pytest.fixture
def sam(staff: User) -> Client:
    return client_for(staff)


_hashes = iter(range(10**9))


def event(
    action: str = "review.decided",
    *,
    actor: str = "rita",
    thread: Thread | None = None,
    run: Run | None = None,
    data: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> AuditEvent:
    """An audit row written directly: these tests read the trail, they do not check its chain."""
    return AuditEvent.objects.create(
        actor_label=actor,
        action=action,
        thread=thread,
        run=run,
        data=data or {},
        created_at=at or timezone.now(),
        prev_hash="",
        hash=f"{next(_hashes):064x}",
    )


def plain_thread(workflow: str = "expense_approval", title: str = "Train to Lyon") -> Thread:
    return Thread.objects.create(workflow=workflow, title=title, status=Thread.Status.COMPLETED)


def event_ids(html: str) -> list[int]:
    return [int(pk) for pk in re.findall(r'<tr id="event-(\d+)"', html)]


def export_lines(response: Any) -> list[str]:
    return b"".join(response.streaming_content).decode().splitlines()


# -- who may read it -------------------------------------------------------------------------


def _urls() -> dict[str, str]:
    thread = plain_thread()
    return {
        "page": LOG,
        "thread timeline": reverse("approvals:audit_thread", args=[thread.public_id]),
        "CSV export": CSV,
        "JSONL export": JSONL,
    }


@pytest.mark.parametrize("page", ["page", "thread timeline", "CSV export", "JSONL export"])
@pytest.mark.parametrize(
    ("persona", "status"), [(None, 302), ("reviewer", 403), ("staff", 200), ("admin", 200)]
)
def test_only_staff_with_the_audit_permission_and_admins_may_read_the_trail(
    request: pytest.FixtureRequest, page: str, persona: str | None, status: int
):
    user = request.getfixturevalue(persona) if persona else None
    url = _urls()[page]

    response = client_for(user).get(url)

    assert response.status_code == status
    if persona is None:
        assert response["Location"].startswith(f"{LOGIN}?next=")


def test_staff_without_the_permission_are_refused_too():
    plain_staff = User.objects.create_user("stan", password="password", is_staff=True)

    assert client_for(plain_staff).get(LOG).status_code == 403
    assert client_for(plain_staff).get(CSV).status_code == 403


def test_the_audit_admin_asks_the_same_rule_as_the_trails_pages(staff: User):
    changer = grant(User.objects.create_user("chad", password="password", is_staff=True), "change_auditevent")
    admin_list = reverse("admin:workflows_auditevent_changelist")

    # Django's default would let change_auditevent read the events: the trail's rule does not.
    assert client_for(changer).get(admin_list).status_code == 403
    assert client_for(changer).get(LOG).status_code == 403
    assert client_for(staff).get(admin_list).status_code == 200


def test_the_nav_links_to_the_audit_trail_only_for_who_may_read_it(staff: User, reviewer: User):
    link = f'href="{LOG}"'

    assert link in client_for(staff).get(reverse("approvals:queue")).text
    assert link not in client_for(reviewer).get(reverse("approvals:queue")).text


def test_the_thread_page_links_to_its_timeline_only_for_who_may_read_the_trail(admin: User, reviewer: User):
    thread = plain_thread()
    timeline = f'href="{reverse("approvals:audit_thread", args=[thread.public_id])}"'
    page = reverse("approvals:thread", args=[thread.public_id])

    assert timeline in client_for(admin).get(page).text
    assert timeline not in client_for(reviewer).get(page).text


def test_reading_the_trail_writes_nothing(sam: Client):
    thread = plain_thread()
    event(thread=thread)
    before = row_counts()

    sam.get(LOG)
    sam.get(reverse("approvals:audit_thread", args=[thread.public_id]))
    b"".join(sam.get(CSV).streaming_content)

    assert row_counts() == before


# -- the page --------------------------------------------------------------------------------


def test_the_page_lists_events_newest_first_with_time_actor_action_thread_and_run(sam: Client):
    thread = plain_thread(title="Hotel in Lyon")
    run = Run.objects.create(thread=thread, kind=Run.Kind.START)
    first = event("thread.started", actor="ada", thread=thread, run=run)
    second = event("review.decided", actor="rita", thread=thread)

    response = sam.get(LOG)

    assert response.status_code == 200
    assert event_ids(response.text) == [second.pk, first.pk]
    row = response.text.split(f'id="event-{first.pk}"')[1].split("</tr>")[0]
    assert "ada" in row
    assert "thread.started" in row
    assert "Hotel in Lyon" in row
    assert f'href="{reverse("approvals:audit_thread", args=[thread.public_id])}"' in row
    assert f"<td>{run.pk}</td>" in row
    assert first.created_at.strftime("%Y-%m-%d %H:%M:%S") in row


def test_htmx_gets_only_the_results_and_the_page_varies_on_it(sam: Client):
    event()

    full = sam.get(LOG)
    fragment = sam.get(LOG, **HX)

    assert "<html" in full.text
    assert "<html" not in fragment.text
    assert fragment.text.lstrip().startswith('<div id="results"')
    assert "HX-Request" in full["Vary"]


def test_the_filter_form_works_without_javascript(sam: Client):
    html = sam.get(LOG).text
    form = html.split('<form id="audit-filters"')[1].split(">")[0]

    assert 'method="get"' in form
    assert f'action="{LOG}"' in form
    assert f'hx-get="{LOG}"' in form


def test_the_actor_filter_keeps_one_persons_events(sam: Client):
    ritas = event(actor="rita")
    event(actor="oscar")
    workers = event(actor="system:worker")

    assert event_ids(sam.get(LOG, {"actor": "rita"}).text) == [ritas.pk]
    assert event_ids(sam.get(LOG, {"actor": "system:worker"}).text) == [workers.pk]


def test_the_action_filter_keeps_one_action(sam: Client):
    event("thread.started")
    rollback = event("thread.rolled_back")

    html = sam.get(LOG, {"action": "thread.rolled_back"}).text

    assert event_ids(html) == [rollback.pk]
    assert '<option value="thread.rolled_back" selected>' in html


def test_the_workflow_filter_keeps_one_workflows_threads(sam: Client):
    expense = event(thread=plain_thread("expense_approval"))
    event(thread=plain_thread("content_review"))
    event()  # no thread at all

    assert event_ids(sam.get(LOG, {"workflow": "expense_approval"}).text) == [expense.pk]


def test_the_thread_filter_keeps_one_thread(sam: Client):
    mine = plain_thread()
    kept = event(thread=mine)
    event(thread=plain_thread())

    assert event_ids(sam.get(LOG, {"thread": str(mine.public_id)}).text) == [kept.pk]


def test_the_date_range_includes_both_days(sam: Client):
    day = timezone.make_aware(datetime(2026, 3, 10))
    event(at=day - timedelta(seconds=1))  # the evening before
    first = event(at=day)
    last = event(at=day + timedelta(days=2, hours=23, minutes=59))
    event(at=day + timedelta(days=3))  # midnight after

    html = sam.get(LOG, {"from": "2026-03-10", "to": "2026-03-12"}).text

    assert event_ids(html) == [last.pk, first.pk]
    assert event_ids(sam.get(LOG, {"from": "2026-03-12"}).text)[-1] == last.pk
    assert event_ids(sam.get(LOG, {"to": "2026-03-10"}).text)[0] == first.pk


def test_filters_combine(sam: Client):
    thread = plain_thread()
    kept = event("review.decided", actor="rita", thread=thread)
    event("review.decided", actor="oscar", thread=thread)
    event("thread.started", actor="rita", thread=thread)
    event("review.decided", actor="rita", thread=plain_thread())

    query = {"actor": "rita", "action": "review.decided", "thread": str(thread.public_id)}

    assert event_ids(sam.get(LOG, query).text) == [kept.pk]


def test_pages_go_older_and_newer_by_event_id_keeping_the_filters(sam: Client):
    events = [event(actor="rita") for _ in range(60)]
    event(actor="oscar")
    newest_first = [e.pk for e in reversed(events)]

    page1 = sam.get(LOG, {"actor": "rita", "per_page": 25}).text
    older = re.search(r'href="(/audit/\?[^"]*)"[^>]*rel="next"', page1)
    assert older is not None
    page2 = sam.get(older.group(1).replace("&amp;", "&")).text
    older = re.search(r'href="(/audit/\?[^"]*)"[^>]*rel="next"', page2)
    assert older is not None
    page3 = sam.get(older.group(1).replace("&amp;", "&")).text
    newer = re.search(r'href="(/audit/\?[^"]*)"[^>]*rel="prev"', page3)
    assert newer is not None
    back = sam.get(newer.group(1).replace("&amp;", "&")).text

    assert event_ids(page1) == newest_first[:25]
    assert event_ids(page2) == newest_first[25:50]
    assert event_ids(page3) == newest_first[50:]
    assert 'rel="next"' not in page3
    assert event_ids(back) == newest_first[25:50]
    assert "actor=rita" in older.group(1)


@pytest.mark.parametrize("per_page", [25, 200])
def test_the_page_takes_the_same_few_queries_whatever_its_size(
    sam: Client, per_page: int, django_assert_max_num_queries: Any
):
    threads = [plain_thread(title=f"Claim {n}") for n in range(10)]
    runs = [Run.objects.create(thread=thread, kind=Run.Kind.START) for thread in threads]
    for n in range(250):
        event(thread=threads[n % 10], run=runs[n % 10], data={"n": n})

    # Session, user, the user's and the groups' permissions, the user's groups (which workflows
    # they review or lead: the nav's Threads link), the events with their threads.
    with django_assert_max_num_queries(6):
        response = sam.get(LOG, {"per_page": per_page})

    assert len(event_ids(response.text)) == per_page


# -- what changed ----------------------------------------------------------------------------


def _row(html: str, pk: int) -> str:
    return html.split(f'id="event-{pk}"')[1].split('<tr id="event-')[0]


def test_a_decision_with_edits_shows_each_edited_field_before_and_after(
    sam: Client, staff: User, reviewer: User
):
    thread = make_thread("expense_approval", EXPENSE, staff)
    run_queued(thread)
    decide(open_review(thread), reviewer, "approve", updates={"amount": 95.5, "category": "meals"})
    resumed = AuditEvent.objects.get(thread=thread, action="thread.resumed")
    decided = AuditEvent.objects.get(thread=thread, action="review.decided")

    html = sam.get(LOG, {"thread": str(thread.public_id)}).text

    row = _row(html, resumed.pk)
    assert "<caption>updates</caption>" in row
    assert re.search(r"<td>amount</td><td><del>120.0</del></td><td><ins>95.5</ins></td>", row)
    assert re.search(r"<td>category</td><td><del>travel</del></td><td><ins>meals</ins></td>", row)
    assert "<dt>checkpoint_id</dt>" in row
    decision_row = _row(html, decided.pk)
    assert "rita" in decision_row
    assert "<dt>action</dt><dd><code>approve</code>" in decision_row
    assert "95.5" in decision_row


def test_nested_and_scalar_before_after_pairs_are_diffs_and_other_keys_are_fields(sam: Client):
    rolled_back = event(
        "thread.rolled_back",
        actor="ada",
        data={
            "reason": "wrong amount",
            "status": {"before": "interrupted", "after": "queued"},
            "updates": {"before": {"amount": 120.0}, "after": {"amount": 12.0}},
            "review": {"claim": {"before": "rita", "after": None}},
        },
    )

    row = _row(sam.get(LOG).text, rolled_back.pk)

    assert re.search(r"<td>status</td><td><del>interrupted</del></td><td><ins>queued</ins></td>", row)
    assert re.search(r"<td>amount</td><td><del>120.0</del></td><td><ins>12.0</ins></td>", row)
    assert "<caption>review.claim</caption>" in row
    assert "<dt>reason</dt><dd><code>wrong amount</code>" in row


def test_markup_in_data_and_titles_is_shown_as_text(sam: Client):
    attack = "<script>alert(1)</script>"
    thread = plain_thread(title=attack)
    event(
        actor=attack,
        thread=thread,
        data={
            "input": {"note": attack},
            "updates": {"before": {"note": "fine"}, "after": {"note": attack}},
            attack: "key",
        },
    )

    for response in (sam.get(LOG), sam.get(reverse("approvals:audit_thread", args=[thread.public_id]))):
        assert "<script>alert" not in response.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in response.text


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"thread": "not-a-uuid"}, "is not a thread id"),
        ({"from": "2026-13-45"}, "is not a date"),
        ({"to": "yesterday"}, "is not a date"),
        ({"from": "2026-03-12", "to": "2026-03-10"}, "is before"),
        ({"action": "thread.exploded"}, "is not an action"),
        ({"workflow": "no_such_workflow"}, "is not a registered workflow"),
        ({"before": "1; DROP TABLE"}, "is not an event id"),
        ({"from": "0001-01-01"}, "is outside"),
    ],
)
def test_a_bad_filter_is_named_on_the_page_and_ignored(sam: Client, params: dict[str, str], message: str):
    kept = event()

    page = sam.get(LOG, params)
    fragment = sam.get(LOG, params, **HX)

    for response in (page, fragment):
        assert response.status_code == 200
        assert message in response.text
        assert 'role="alert"' in response.text
        assert event_ids(response.text) == [kept.pk]


def test_a_bad_filter_refuses_the_export_with_the_reason(sam: Client):
    response = sam.get(CSV, {"thread": "nope"})

    assert response.status_code == 400
    assert "is not a thread id" in response.content.decode()


def test_every_action_the_services_record_can_be_filtered_on(sam: Client):
    offered = re.findall(r'<option value="([a-z]+\.[a-z_]+)"', sam.get(LOG).text)

    assert {"thread.started", "review.decided", "run.lease_expired"} <= set(offered)
    assert offered == Action.values


def test_every_audit_event_is_recorded_under_an_action_of_the_enumeration():
    # mypy holds record_event's callers to an Action; this catches a string that slipped past
    # a cast or an untyped call.
    root = Path(__file__).resolve().parent.parent
    literal: list[str] = []
    for source in [*root.glob("workflows/**/*.py"), *root.glob("approvals/**/*.py")]:
        if "migrations" in source.parts:
            continue
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                "record_event",
                "_record_sign_in",
            ):
                values = [kw.value for kw in node.keywords if kw.arg == "action"] + node.args[:1]
                literal += [
                    f"{source.name}:{node.lineno}" for value in values if isinstance(value, ast.Constant)
                ]

    assert literal == []


# -- the thread's timeline -------------------------------------------------------------------


def test_a_threads_timeline_lists_its_events_oldest_first(sam: Client):
    thread = plain_thread()
    first = event("thread.started", thread=thread)
    event("thread.started", thread=plain_thread())
    second = event("review.decided", thread=thread)

    response = sam.get(reverse("approvals:audit_thread", args=[thread.public_id]))

    assert response.status_code == 200
    assert event_ids(response.text) == [first.pk, second.pk]


def test_the_timeline_of_an_unknown_thread_is_not_found(sam: Client):
    assert sam.get(reverse("approvals:audit_thread", args=[uuid.uuid4()])).status_code == 404


# -- exports ---------------------------------------------------------------------------------


def test_the_csv_export_has_a_header_and_one_row_per_event_with_every_column(sam: Client):
    thread = plain_thread()
    run = Run.objects.create(thread=thread, kind=Run.Kind.START)
    decided = event(
        "review.decided",
        thread=thread,
        run=run,
        data={"updates": {"amount": 95.5}, "comment": 'quote " and, comma'},
    )
    bare = event("run.republished", actor="system:sweeper")

    response = sam.get(CSV)

    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    today = timezone.localdate().isoformat()
    assert response["Content-Disposition"] == f'attachment; filename="signoff-audit-{today}.csv"'
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0] == [
        "id",
        "created_at",
        "actor",
        "action",
        "thread",
        "workflow",
        "run",
        "data",
        "prev_hash",
        "hash",
    ]
    assert rows[1] == [
        str(decided.pk),
        decided.created_at.isoformat(),
        "rita",
        "review.decided",
        str(thread.public_id),
        "expense_approval",
        str(run.pk),
        json.dumps({"comment": 'quote " and, comma', "updates": {"amount": 95.5}}, ensure_ascii=False),
        "",
        decided.hash,
    ]
    assert rows[2][:7] == [
        str(bare.pk),
        bare.created_at.isoformat(),
        "system:sweeper",
        "run.republished",
        "",
        "",
        "",
    ]
    assert len(rows) == 3


def test_the_jsonl_export_has_one_object_per_event(sam: Client):
    thread = plain_thread()
    decided = event("review.decided", thread=thread, data={"updates": {"amount": 95.5}})
    bare = event("run.republished", actor="system:sweeper")

    response = sam.get(JSONL)

    assert response["Content-Type"] == "application/jsonl; charset=utf-8"
    assert response["Content-Disposition"].endswith(f'-{timezone.localdate().isoformat()}.jsonl"')
    records = [json.loads(line) for line in export_lines(response)]
    assert records == [
        {
            "id": decided.pk,
            "created_at": decided.created_at.isoformat(),
            "actor": "rita",
            "action": "review.decided",
            "thread": str(thread.public_id),
            "workflow": "expense_approval",
            "run": None,
            "data": {"updates": {"amount": 95.5}},
            "prev_hash": "",
            "hash": decided.hash,
        },
        {
            "id": bare.pk,
            "created_at": bare.created_at.isoformat(),
            "actor": "system:sweeper",
            "action": "run.republished",
            "thread": None,
            "workflow": None,
            "run": None,
            "data": {},
            "prev_hash": "",
            "hash": bare.hash,
        },
    ]


@pytest.mark.parametrize("url", [CSV, JSONL])
def test_an_export_honours_the_filters(sam: Client, url: str):
    thread = plain_thread()
    kept = event("review.decided", actor="rita", thread=thread)
    event("review.decided", actor="oscar", thread=thread)
    event("thread.started", actor="rita", thread=thread)

    response = sam.get(url, {"actor": "rita", "action": "review.decided", "workflow": "expense_approval"})

    lines = export_lines(response)
    body = lines[1:] if url == CSV else lines
    assert len(body) == 1
    assert body[0].startswith(f"{kept.pk},") or json.loads(body[0])["id"] == kept.pk


def test_the_export_links_keep_the_filters_but_not_the_page(sam: Client):
    events = [event(actor="rita") for _ in range(30)]

    html = sam.get(LOG, {"actor": "rita", "per_page": 25, "before": events[-1].pk}).text

    assert f'href="{CSV}?actor=rita"' in html
    assert f'href="{JSONL}?actor=rita"' in html


@pytest.mark.django_db  # in one transaction, rolled back: a flush of 100,000 rows would cost more
def test_an_export_of_100000_events_streams_in_bounded_memory(staff: User):
    rows = 100_000
    now = timezone.now()
    data = {
        "review": 1,
        "updates": {"before": {"amount": 120.0}, "after": {"amount": 95.5}},
        "note": "x" * 80,
    }
    AuditEvent.objects.bulk_create(
        (
            AuditEvent(
                actor_label="rita",
                action="review.decided",
                data=data,
                created_at=now,
                prev_hash="0" * 64,
                hash=f"{n:064x}",
            )
            for n in range(rows)
        ),
        batch_size=5000,
    )
    client = client_for(staff)

    for url in (CSV, JSONL):
        tracemalloc.start()
        try:
            response = client.get(url)
            lines = 0
            size = 0
            for chunk in response.streaming_content:
                lines += chunk.count(b"\n")
                size += len(chunk)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()

        # The export is 39-50 MB of text; holding the rows as instances would take several times
        # that. Measured: a peak of 3-4 MB on SQLite and PostgreSQL.
        assert peak < 20 * 1024 * 1024, f"{url}: peak {peak / 1e6:.1f} MB for {size / 1e6:.1f} MB sent"
        assert size > 2 * peak
        assert lines == (rows + 1 if url == CSV else rows)
