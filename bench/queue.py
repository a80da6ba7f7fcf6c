"""Reviewer page benchmarks: the queue with 100,000 threads and 10,000 open reviews, and the
review page of a thread with 200 checkpoints.

Run by hand (not part of the test suite):

    .venv/bin/python bench/queue.py [--db postgres|sqlite] [--repeat 50]

PostgreSQL: the database `signoff_bench_queue` on 127.0.0.1:5432 is dropped and created
anew. SQLite: a file in a temp dir. Each page is requested in-process through Django's
test client (middleware, view, queries, template: everything but the network), logged
in as a reviewer; the report (Markdown) goes to stdout. See bench/README.md.
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


def setup_django(db: str, tmp: Path) -> None:
    if db == "postgres":
        url = f"{PG_SERVER}/{PG_DB}"
        recreate_postgres(url)
    else:
        url = f"sqlite:///{tmp / 'bench.sqlite3'}"
    start_django(tmp, url)


def seed() -> dict[str, Any]:
    from django.contrib.auth.models import Group, User
    from django.utils import timezone

    from approvals.models import Review
    from workflows.models import Thread

    reviewer = User.objects.create_user("reviewer", password="x")
    for name in ("finance", "editors", "contracts"):
        reviewer.groups.add(Group.objects.get_or_create(name=name)[0])
    now = timezone.now()
    log(f"seeding {THREADS:,} threads")
    batch = 5000
    for start in range(0, THREADS, batch):
        Thread.objects.bulk_create(
            [
                Thread(
                    workflow=WORKFLOWS[i % len(WORKFLOWS)],
                    title=f"Claim {i:06d} by employee {i % 997}",
                    status=Thread.Status.INTERRUPTED if i < OPEN_REVIEWS else Thread.Status.COMPLETED,
                    input={"employee": f"employee {i % 997}", "amount": (i % 5000) / 10, "n": i},
                )
                for i in range(start, min(start + batch, THREADS))
            ]
        )
    ids = list(Thread.objects.order_by("id").values_list("id", flat=True))
    log(f"seeding {OPEN_REVIEWS:,} open and {DECIDED_REVIEWS:,} closed reviews")
    rows = []
    for n, thread_id in enumerate(ids[: OPEN_REVIEWS + DECIDED_REVIEWS]):
        open_ = n < OPEN_REVIEWS
        rows.append(
            Review(
                thread_id=thread_id,
                workflow=WORKFLOWS[(thread_id - ids[0]) % len(WORKFLOWS)],
                interrupt_id=f"bench-{n}",
                kind=Review.Kind.BREAKPOINT,
                node="pay",
                checkpoint_id=f"cp-{n}",
                value={"next": ["pay"], "n": n},
                search_text=f'claim {n:06d} by employee {n % 997}\npay\n{{"n": {n}}}',
                status=Review.Status.OPEN if open_ else Review.Status.DECIDED,
                claimed_by=reviewer if open_ and n % 10 == 0 else None,
                claim_expires_at=now + timezone.timedelta(hours=1) if open_ and n % 10 == 0 else None,
                due_at=now + timezone.timedelta(hours=n % 48),
            )
        )
    Review.objects.bulk_create(rows, batch_size=5000)
    # Autovacuum would analyze a table this fresh within a minute; do it now.
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--db", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        setup_django(args.db, Path(tmp))
        from django.test import Client
        from django.test.utils import setup_test_environment

        setup_test_environment()
        started = time.perf_counter()
        people = seed()
        review, checkpoints = long_thread(people["reviewer"])
        log(f"seeded in {time.perf_counter() - started:.0f} s; long thread has {checkpoints} checkpoints")
        client = Client()
        client.force_login(people["reviewer"])
        pages: list[tuple[str, str, dict[str, str]]] = [
            ("queue, page 1 (25 rows)", "/", {}),
            ("queue, page 1 (100 rows)", "/?per_page=100", {}),
            ("queue, 10 rows", "/?per_page=10", {}),
            ("queue, page 200", "/?page=200", {}),
            ("queue, htmx refresh (fragment)", "/", {"HTTP_HX_REQUEST": "true"}),
            ("queue, one workflow", "/?workflow=expense_approval", {}),
            ("queue, mine", "/?scope=mine", {}),
            ("queue, search", "/?q=employee+42", {}),
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
        f"{THREADS:,} threads, {OPEN_REVIEWS:,} open and {DECIDED_REVIEWS:,} decided reviews "
        f"(the reviewer sees 3 of 4 workflows); Python {platform.python_version()}, {cpu} CPUs.\n"
    )
    print_pages("page", results)


if __name__ == "__main__":
    main()
