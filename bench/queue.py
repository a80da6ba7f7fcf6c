"""Reviewer page benchmarks: the queue with 100,000 threads and 10,000 open reviews (keyset
pages 1 and 200, sorted by age and by amount, the htmx fragments), the inbox (its list, and a
review opened in it, as a page and as the htmx pane), and the review page of a thread with 200
checkpoints.

Run by hand (not part of the test suite):

    .venv/bin/python bench/queue.py [--db postgres|sqlite] [--repeat 50]
        [--database signoff_bench_queue] [--threads 100000] [--open 10000]

PostgreSQL: the database `--database` (default `signoff_bench_queue`; its name must start with
signoff_bench) on 127.0.0.1:5432 is dropped and created anew. SQLite: a file in a temp dir.
Each page is requested in-process through Django's test client (middleware, view, queries,
template: everything but the network), logged in as a reviewer; the report (Markdown) goes
to stdout. See bench/README.md.
"""

from __future__ import annotations

import sys

# This file's name is the issue's, and it shadows the standard library's `queue` (which
# psycopg and Celery import) when run as a script: take bench/ off the import path first.
del sys.path[0]

import argparse
import os
import platform
import subprocess
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PG_SERVER = "postgres://postgres@127.0.0.1:5432"
PG_DB = "signoff_bench_queue"
THREADS = 100_000
OPEN_REVIEWS = 10_000
DECIDED_REVIEWS = 20_000
LONG_STEPS = 200
WORKFLOWS = ("expense_approval", "content_review", "parallel_approval", "seed_demo")


from bench.pages import measure, print_pages, recreate_postgres, start_django  # noqa: E402 - needs ROOT on sys.path first


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def setup_django(db: str, tmp: Path, database: str = PG_DB) -> None:
    # Production settings redirect plain HTTP to HTTPS (301); the test client speaks plain HTTP.
    os.environ["SECURE_SSL_REDIRECT"] = "false"
    if db == "postgres":
        url = f"{PG_SERVER}/{database}"
        recreate_postgres(url)
    else:
        url = f"sqlite:///{tmp / 'bench.sqlite3'}"
    start_django(tmp, url)


# What each workflow's reviews carry as their summary (Review.summary, summary_amount), as
# approvals.services writes it when a review opens: by workflow, from the thread's number n.
def summary_of(workflow: str, n: int) -> tuple[dict[str, Any], Decimal | None]:
    amount = Decimal(n * 7919 % 500_000) / 100
    if workflow == "expense_approval":
        return {"employee": f"employee {n % 997}", "amount": float(amount), "category": "travel"}, amount
    if workflow == "parallel_approval":
        return {"counterparty": f"Company {n % 389}", "value": float(amount)}, amount
    if workflow == "content_review":
        return {"topic": f"Topic {n % 211}", "audience": "everyone", "revision": 1}, None
    return {}, None


def seed(threads: int = THREADS, open_reviews: int = OPEN_REVIEWS) -> dict[str, Any]:
    from django.contrib.auth.models import Group, User
    from django.db import connection
    from django.utils import timezone

    from approvals.models import Review
    from workflows.models import Thread

    reviewer = User.objects.create_user("reviewer", password="x")
    for name in ("finance", "editors", "contracts"):
        reviewer.groups.add(Group.objects.get_or_create(name=name)[0])
    now = timezone.now()
    log(f"seeding {threads:,} threads")
    batch = 5000
    for start in range(0, threads, batch):
        Thread.objects.bulk_create(
            [
                Thread(
                    workflow=WORKFLOWS[i % len(WORKFLOWS)],
                    title=f"Claim {i:06d} by employee {i % 997}",
                    status=Thread.Status.INTERRUPTED if i < open_reviews else Thread.Status.COMPLETED,
                    input={"employee": f"employee {i % 997}", "amount": (i % 5000) / 10, "n": i},
                )
                for i in range(start, min(start + batch, threads))
            ]
        )
        if start and start % 100_000 == 0:
            log(f"  {start:,}")
    ids = list(Thread.objects.order_by("id").values_list("id", flat=True)[: open_reviews + DECIDED_REVIEWS])
    log(f"seeding {open_reviews:,} open and {DECIDED_REVIEWS:,} closed reviews")
    rows = []
    for n, thread_id in enumerate(ids):
        open_ = n < open_reviews
        workflow = WORKFLOWS[(thread_id - ids[0]) % len(WORKFLOWS)]
        summary, amount = summary_of(workflow, n)
        rows.append(
            Review(
                thread_id=thread_id,
                workflow=workflow,
                interrupt_id=f"bench-{n}",
                kind=Review.Kind.BREAKPOINT,
                node="pay",
                checkpoint_id=f"cp-{n}",
                value={"next": ["pay"], "n": n},
                search_text=f'claim {n:06d} by employee {n % 997}\npay\n{{"n": {n}}}\n'
                + "\n".join(str(value) for value in summary.values()).lower(),
                summary=summary,
                summary_amount=amount,
                status=Review.Status.OPEN if open_ else Review.Status.DECIDED,
                claimed_by=reviewer if open_ and n % 10 == 0 else None,
                claim_expires_at=now + timezone.timedelta(hours=1) if open_ and n % 10 == 0 else None,
                due_at=now + timezone.timedelta(hours=n % 48),
            )
        )
    Review.objects.bulk_create(rows, batch_size=5000)
    # auto_now_add gave every review the same opening time: spread them over the last weeks,
    # as a real queue's are, so the age sort's keyset is not decided by the id alone.
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "UPDATE approvals_review SET created_at = %s - make_interval(secs => id * 97)", [now]
            )
            # Autovacuum would analyze a table this fresh within a minute; do it now.
            cursor.execute("VACUUM ANALYZE")
        else:
            cursor.execute(
                "UPDATE approvals_review SET created_at = "
                "strftime('%%Y-%%m-%%d %%H:%%M:%%f', %s, '-' || (id * 97) || ' seconds')",
                [now.strftime("%Y-%m-%d %H:%M:%S.%f")],
            )
    return {"reviewer": reviewer}


def long_thread(reviewer: Any) -> Any:
    """A thread that ran LONG_STEPS steps before stopping for review, through the real engine."""
    from typing import TypedDict

    from langgraph.graph import END, START, StateGraph

    from approvals.models import Review
    from workflows import registry, services
    from workflows.execution import execute_run

    class LongState(TypedDict):
        count: int
        notes: list[str]
        approved: bool

    def step(state: LongState) -> dict[str, Any]:
        return {"count": state["count"] + 1, "notes": [*state["notes"][-20:], f"step {state['count'] + 1}"]}

    def build() -> StateGraph[LongState]:
        builder = StateGraph(LongState)
        builder.add_node("step", step)
        builder.add_node("finish", lambda state: {})
        builder.add_edge(START, "step")
        builder.add_conditional_edges("step", lambda s: "step" if s["count"] < LONG_STEPS else "finish")
        builder.add_edge("finish", END)
        return builder

    registry.add(
        registry.Workflow(
            name="bench_long",
            title="Long",
            builder=build,
            reviewer_group="finance",
            editable=("approved",),
            interrupt_before=("finish",),
        )
    )
    os.environ["SIGNOFF_RECURSION_LIMIT"] = str(LONG_STEPS + 20)
    from django.conf import settings

    settings.SIGNOFF_RECURSION_LIMIT = LONG_STEPS + 20
    thread = services.start_thread(
        workflow="bench_long", input={"count": 0, "notes": [], "approved": False}, actor=reviewer
    )
    outcome = execute_run(thread.runs.get().pk)
    assert outcome.status == "recorded", outcome
    review = Review.objects.get(thread=thread, status=Review.Status.OPEN)
    from workflows.models import Checkpoint

    checkpoints = Checkpoint.objects.filter(thread_id=thread.thread_id).count()
    return review, checkpoints


def page_url(client: Any, first: str, page: int, **headers: str) -> str:
    """The URL of page `page`, reached as a reviewer would: following the next links from
    `first` (keyset pages have no page number to jump to)."""
    import re

    url = first
    for _ in range(page - 1):
        response = client.get(url, **headers)
        html = response.content.decode()
        found = re.search(r'href="(/\?[^"]*)" rel="next"', html)
        assert found is not None, f"no page after {url} ({response.status_code}): {html[-3000:]}"
        url = found.group(1).replace("&amp;", "&")
    return url


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--db", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--database", default=PG_DB, help="the PostgreSQL database (dropped and made anew)")
    parser.add_argument("--threads", type=int, default=THREADS)
    parser.add_argument("--open", type=int, default=OPEN_REVIEWS, help="open reviews")
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        setup_django(args.db, Path(tmp), args.database)
        from django.test import Client
        from django.test.utils import setup_test_environment

        setup_test_environment()
        started = time.perf_counter()
        people = seed(args.threads, args.open)
        review, checkpoints = long_thread(people["reviewer"])
        log(f"seeded in {time.perf_counter() - started:.0f} s; long thread has {checkpoints} checkpoints")
        client = Client()
        client.force_login(people["reviewer"])
        hx = {"HTTP_HX_REQUEST": "true"}
        log("following the next links to page 200")
        page_200 = page_url(client, "/", 200)
        amount_200 = page_url(client, "/?sort=-amount", 200)
        workflow_1 = "/?workflow=expense_approval&sort=-amount"
        # One workflow has a quarter of the open reviews: 2,500 at 10,000, so 100 pages.
        workflow_last = page_url(client, workflow_1, 100)
        pages: list[tuple[str, str, dict[str, str]]] = [
            ("queue, page 1 (25 rows)", "/", {}),
            ("queue, page 1 (100 rows)", "/?per_page=100", {}),
            ("queue, 10 rows", "/?per_page=10", {}),
            ("queue, page 200 (by cursor)", page_200, {}),
            ("queue, htmx refresh (fragment), page 1", "/", hx),
            ("queue, htmx refresh (fragment), page 200", page_200, hx),
            ("queue, by amount, page 1", "/?sort=-amount", {}),
            ("queue, by amount, page 200", amount_200, {}),
            ("queue, by amount, page 200 (fragment)", amount_200, hx),
            (
                "queue, one workflow with its columns, by amount, page 1",
                "/?workflow=expense_approval&sort=-amount",
                {},
            ),
            ("queue, one workflow with its columns, by amount, page 100", workflow_last, {}),
            ("queue, due soonest", "/?sort=due", {}),
            ("queue, mine", "/?scope=mine", {}),
            ("queue, search", "/?q=employee+42", {}),
            ("queue, search (fragment)", "/?q=employee+42", hx),
            ("inbox, list only", "/inbox/", {}),
            ("inbox, list fragment (htmx refresh)", "/inbox/", {**hx, "HTTP_HX_TARGET": "results"}),
            (f"inbox, list and a review of {checkpoints} checkpoints", f"/inbox/{review.pk}/", {}),
            (f"inbox, review pane (htmx), {checkpoints} checkpoints", f"/inbox/{review.pk}/", hx),
            (f"review page, {checkpoints} checkpoints (newest 20 shown)", f"/reviews/{review.pk}/", {}),
            (
                f"review page, {checkpoints} checkpoints, all 200 shown",
                f"/reviews/{review.pk}/?history=all",
                {},
            ),
        ]
        results: list[tuple[str, dict[str, Any]]] = []
        for name, url, headers in pages:
            log(f"measuring {name}")
            results.append((name, measure(client, url, args.repeat, **headers)))
    report(args, results)


def report(args: argparse.Namespace, results: list[tuple[str, dict[str, Any]]]) -> None:
    cpu = subprocess.run(["nproc"], capture_output=True, text=True, check=False).stdout.strip()
    print(f"### Reviewer pages ({args.db}), {args.repeat} requests each\n")
    print(
        f"{args.threads:,} threads, {args.open:,} open and {DECIDED_REVIEWS:,} decided reviews "
        f"(the reviewer sees 3 of 4 workflows); Python {platform.python_version()}, {cpu} CPUs.\n"
    )
    print_pages("page", results)


if __name__ == "__main__":
    main()
