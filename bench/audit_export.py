"""Audit trail benchmarks: CSV and JSON Lines exports of N audit events (time and peak Python
memory) and the audit page's server time and query count.

Run by hand (not part of the test suite):

    .venv/bin/python bench/audit_export.py [--events 100000] [--repeat 20]
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/signoff_bench_audit .venv/bin/python bench/audit_export.py

Without a postgres:// DATABASE_URL the database is a SQLite file in a temp dir. With one, its
database is dropped and created anew, so its name must start with `signoff_bench`. Requests go
through Django's test client in-process (middleware, view, queries, template, streaming), logged
in as a staff user holding `workflows.view_auditevent`; the report (Markdown) goes to stdout.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
import tracemalloc
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, bench/ comes first on the import path, and bench/queue.py would shadow the
# standard library's `queue` (which asgiref and psycopg import): the project root takes its place.
if sys.path and Path(sys.path[0]).resolve() == ROOT / "bench":
    sys.path[0] = str(ROOT)
else:
    sys.path.insert(0, str(ROOT))

WORKFLOWS = ("expense_approval", "content_review", "parallel_approval", "seed_demo")
THREADS = 2_000
DAYS = 100
ACTORS = ("rita", "oscar", "ada", "system:worker", "system:sweeper")


from bench.pages import measure, print_pages, recreate_postgres, start_django  # noqa: E402 - needs ROOT on sys.path first


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def setup_django(tmp: Path) -> str:
    url = os.environ.get("DATABASE_URL", "")
    if url.startswith("postgres"):
        recreate_postgres(url)
        db = "postgres"
    else:
        url = f"sqlite:///{tmp / 'bench.sqlite3'}"
        db = "sqlite"
    start_django(tmp, url)
    return db


def event_data(n: int, action: str) -> dict[str, Any]:
    """Data shaped like what services record for each action."""
    if action == "review.decided":
        return {
            "review": n,
            "decision": n,
            "action": "approve",
            "node": "review",
            "interrupt_id": f"{n:032x}",
            "checkpoint_id": f"1f0-{n:012x}",
            "updates": {"amount": (n % 5000) / 10},
            "comment": "ok",
        }
    if action == "thread.resumed":
        return {
            "decisions": [n],
            "resume": {f"{n:032x}": {"action": "approve", "response": None, "comment": ""}},
            "proceed": False,
            "updates": {"before": {"amount": 120.0}, "after": {"amount": (n % 5000) / 10}},
            "checkpoint_id": f"1f0-{n:012x}",
        }
    if action == "thread.started":
        return {"workflow": "expense_approval", "input": {"employee": f"employee {n % 997}", "amount": 120.0}}
    return {"attempt": 1, "holder": f"worker-{n % 8}:1234", "kind": "start"}


def seed(events: int) -> dict[str, Any]:
    from django.contrib.auth.models import Permission, User
    from django.db import connection
    from django.utils import timezone

    from workflows.models import AuditEvent, Run, Thread

    staff = User.objects.create_user("staff", password="x", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_auditevent"))
    log(f"seeding {THREADS:,} threads with a run each")
    Thread.objects.bulk_create(
        Thread(workflow=WORKFLOWS[i % len(WORKFLOWS)], title=f"Claim {i:06d}", status=Thread.Status.COMPLETED)
        for i in range(THREADS)
    )
    threads = list(Thread.objects.order_by("id"))
    Run.objects.bulk_create(Run(thread=thread, kind=Run.Kind.START) for thread in threads)
    runs = dict(Run.objects.values_list("thread_id", "id"))
    actions = (
        "run.started",
        "review.opened",
        "run.interrupted",
        "review.decided",
        "thread.resumed",
        "thread.started",
    )
    start = timezone.now() - timedelta(days=DAYS)
    step = timedelta(days=DAYS) / events
    log(f"seeding {events:,} audit events over {DAYS} days")
    batch = 5000
    for first in range(0, events, batch):
        rows = []
        for n in range(first, min(first + batch, events)):
            action = actions[n % len(actions)]
            thread = threads[(n // len(actions)) % THREADS]
            rows.append(
                AuditEvent(
                    actor_label=ACTORS[n % len(ACTORS)],
                    action=action,
                    thread=thread,
                    run_id=runs[thread.pk],
                    data=event_data(n, action),
                    created_at=start + step * n,
                    prev_hash=f"{n - 1:064x}" if n else "",
                    hash=f"{n:064x}",
                )
            )
        AuditEvent.objects.bulk_create(rows)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
    middle = AuditEvent.objects.order_by("id").values_list("id", flat=True)[events // 2]
    day = (start + timedelta(days=DAYS // 2)).date()
    return {"staff": staff, "thread": threads[THREADS // 2], "middle": middle, "day": day}


def consume(client: Any, url: str) -> tuple[int, int]:
    response = client.get(url)
    assert response.status_code == 200, (url, response.status_code)
    lines = size = 0
    for chunk in response.streaming_content:
        lines += chunk.count(b"\n")
        size += len(chunk)
    return lines, size


def measure_export(client: Any, url: str) -> dict[str, Any]:
    consume(client, url + "?action=thread.started")  # warm up on a small export
    started = time.perf_counter()
    lines, size = consume(client, url)
    seconds = time.perf_counter() - started
    # A second pass under tracemalloc, which slows allocation: its time is not reported.
    tracemalloc.start()
    try:
        consume(client, url)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return {"seconds": seconds, "lines": lines, "bytes": size, "peak": peak}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = setup_django(Path(tmp))
        from django.test import Client
        from django.test.utils import setup_test_environment

        setup_test_environment()
        started = time.perf_counter()
        seeded = seed(args.events)
        log(f"seeded in {time.perf_counter() - started:.0f} s")
        client = Client()
        client.force_login(seeded["staff"])
        thread = seeded["thread"]
        pages: list[tuple[str, str, dict[str, str]]] = [
            ("page 1, 50 rows", "/audit/", {}),
            ("page 1, 200 rows", "/audit/?per_page=200", {}),
            ("htmx fragment, 50 rows", "/audit/", {"HTTP_HX_REQUEST": "true"}),
            ("middle of the table (before=)", f"/audit/?before={seeded['middle']}", {}),
            ("actor", "/audit/?actor=oscar", {}),
            ("action", "/audit/?action=thread.resumed", {}),
            ("workflow", "/audit/?workflow=content_review", {}),
            ("one day", f"/audit/?from={seeded['day']}&to={seeded['day']}", {}),
            ("thread (filter)", f"/audit/?thread={thread.public_id}", {}),
            ("thread timeline", f"/audit/threads/{thread.public_id}/", {}),
        ]
        results: list[tuple[str, dict[str, Any]]] = []
        for name, url, headers in pages:
            log(f"measuring {name}")
            results.append((name, measure(client, url, args.repeat, **headers)))
        exports: list[tuple[str, dict[str, Any]]] = []
        for name, url in (("CSV", "/audit/export.csv"), ("JSON Lines", "/audit/export.jsonl")):
            log(f"exporting {name}")
            exports.append((name, measure_export(client, url)))
    report(db, args, results, exports)


def report(
    db: str,
    args: argparse.Namespace,
    results: list[tuple[str, dict[str, Any]]],
    exports: list[tuple[str, dict[str, Any]]],
) -> None:
    cpu = subprocess.run(["nproc"], capture_output=True, text=True, check=False).stdout.strip()
    print(f"### Audit trail ({db}), {args.events:,} events\n")
    print(
        f"{THREADS:,} threads in {len(WORKFLOWS)} workflows, events over {DAYS} days; "
        f"Python {platform.python_version()}, {cpu} CPUs.\n"
    )
    print("| export | rows | MB | seconds | rows/s | peak Python memory MB |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, result in exports:
        rows = result["lines"] - (1 if name == "CSV" else 0)
        print(
            f"| {name} | {rows:,} | {result['bytes'] / 1e6:.1f} | {result['seconds']:.2f} "
            f"| {rows / result['seconds']:,.0f} | {result['peak'] / 1e6:.1f} |"
        )
    print()
    print_pages(f"audit page ({args.repeat} requests each)", results)


if __name__ == "__main__":
    main()
