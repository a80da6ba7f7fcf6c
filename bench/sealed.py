"""What encryption at rest costs: writing and reading N audit events and N reviews with and
without SIGNOFF_ENCRYPTION_KEY (workflows/sealed.py seals their JSON columns).

Run by hand (not part of the test suite):

    .venv/bin/python bench/sealed.py [--rows 10000] [--repeat 3]
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/signoff_bench_sealed .venv/bin/python bench/sealed.py

Without a postgres:// DATABASE_URL the database is a SQLite file in a temp dir. With one, its
database is dropped and created anew, so its name must start with `signoff_bench`.

- audit write: N `record_event` calls (the service every change uses: chain lock, last hash,
  hash, insert), 500 to a transaction; data shaped like a decision's (edits before/after, a
  comment, ids), about 300 bytes of JSON.
- audit read: every event as a model instance (`list(AuditEvent.objects.order_by("id"))`),
  which opens each `data`.
- review write: N reviews of one thread by `bulk_create` in batches of 500, payload of ~300
  bytes; review read: every review as a model instance.
- field: the `data` field alone, no database: N values through `get_db_prep_value` and
  `from_db_value` (JSON dump and load, plus the seal and the open with a key).
The key is switched in the same process (the fields read the setting on each value); the
tables are emptied between modes with `manage.py flush`. The best of `--repeat` runs is kept.
The report (Markdown) goes to stdout.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, bench/ comes first on the import path, and bench/queue.py would shadow the
# standard library's `queue`: the project root takes its place.
if sys.path and Path(sys.path[0]).resolve() == ROOT / "bench":
    sys.path[0] = str(ROOT)
else:
    sys.path.insert(0, str(ROOT))

from bench.pages import recreate_postgres, start_django  # noqa: E402

KEY = b"bench-only-key-bench-only-key-32"


def _data(n: int) -> dict[str, object]:
    return {
        "review": n,
        "decision": n,
        "action": "approve",
        "node": "pay",
        "interrupt_id": f"{n:032x}",
        "checkpoint_id": f"1f0{n:029x}",
        "updates": {"amount": 100 + n / 100, "category": "travel", "approved": True},
        "comment": f"checked the receipt of claim {n}, the amount matches",
    }


def _best(run: Callable[[], None], reset: Callable[[], None], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        reset()
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL", "")
    tmp = Path(tempfile.mkdtemp(prefix="signoff-bench-sealed-"))
    if url.startswith("postgres"):
        recreate_postgres(url)
    else:
        url = f"sqlite:///{tmp}/bench.sqlite3"
    start_django(tmp, url)

    from django.conf import settings
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import connection, transaction

    from approvals.models import Review
    from workflows import services
    from workflows.models import AuditEvent, Thread

    rows = args.rows
    state: dict[str, object] = {}

    def reset() -> None:
        call_command("flush", interactive=False, verbosity=0)
        user = User.objects.create_user("bench")
        state["user"] = user
        state["thread"] = Thread.objects.create(workflow="expense_approval", title="bench", input=_data(0))

    def write_audit() -> None:
        for start in range(0, rows, 500):
            with transaction.atomic():
                for n in range(start, min(rows, start + 500)):
                    services.record_event(action="review.decided", actor=state["user"], data=_data(n))  # type: ignore[arg-type]

    def write_reviews() -> None:
        thread = state["thread"]
        Review.objects.bulk_create(
            [
                Review(
                    thread=thread,  # type: ignore[misc]
                    workflow="expense_approval",
                    interrupt_id=f"{n:032x}",
                    kind=Review.Kind.INTERRUPT,
                    node="pay",
                    checkpoint_id="x",
                    value=_data(n),
                    status=Review.Status.DECIDED,
                )
                for n in range(rows)
            ],
            batch_size=500,
        )

    results: dict[str, dict[str, float]] = {}
    for mode, key in (("no key", None), ("key set", KEY)):
        settings.SIGNOFF_ENCRYPTION_KEY = key
        audit_write = _best(write_audit, reset, args.repeat)
        audit_read = min(_timed(lambda: list(AuditEvent.objects.order_by("id"))) for _ in range(args.repeat))
        assert AuditEvent.objects.count() == rows
        with connection.cursor() as cursor:
            cursor.execute("SELECT data FROM workflows_auditevent ORDER BY id LIMIT 1")
            stored = cursor.fetchone()[0]
        review_write = _best(write_reviews, reset, args.repeat)
        review_read = min(_timed(lambda: list(Review.objects.order_by("id"))) for _ in range(args.repeat))
        results[mode] = {
            "audit write": audit_write,
            "audit read": audit_read,
            "review write": review_write,
            "review read": review_read,
            "stored bytes": float(len(stored if isinstance(stored, str) else str(stored))),
        }

    # The field alone, no database: what sealing adds per value on the CPU, which the timings
    # above (noisy on a shared machine) contain.
    field = AuditEvent._meta.get_field("data")
    values = [_data(n) for n in range(rows)]
    for mode, key in (("no key", None), ("key set", KEY)):
        settings.SIGNOFF_ENCRYPTION_KEY = key

        def round_trip() -> None:
            for value in values:
                field.from_db_value(field.get_db_prep_value(value, connection), None, connection)

        results[mode]["field"] = min(_timed(round_trip) for _ in range(args.repeat))

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    print(
        f"Database: {connection.vendor} · rows: {rows} · best of {args.repeat} · "
        f"commit {commit.stdout.strip()}"
    )
    print(
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}"
    )
    print()
    print(f"| {rows:,} rows | no key | key set | cost of the key |")
    print("|---|---|---|---|")
    for name in ("audit write", "audit read", "review write", "review read", "field"):
        plain, sealed = results["no key"][name], results["key set"][name]
        print(
            f"| {name} | {plain * 1000:.0f} ms | {sealed * 1000:.0f} ms | "
            f"{(sealed - plain) / rows * 1e6:+.1f} µs a row ({(sealed / plain - 1) * 100:+.0f} %) |"
        )
    plain_bytes, sealed_bytes = results["no key"]["stored bytes"], results["key set"]["stored bytes"]
    print(
        f"| one audit event's `data` as stored | {plain_bytes:.0f} B | {sealed_bytes:.0f} B | "
        f"{sealed_bytes / plain_bytes:.2f}× |"
    )


def _timed(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
