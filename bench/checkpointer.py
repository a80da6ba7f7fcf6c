"""Checkpointer benchmarks: durable steps per second, and storage growth of one thread.

Run by hand (not part of the test suite):

    .venv/bin/python bench/checkpointer.py [--threads 50] [--quick] [--profile] [--what-if]

Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust auth); the database
`signoff_bench` is dropped and created anew. SQLite files live in a temp dir.
Progress goes to stderr, the report (Markdown) to stdout. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import operator
import os
import platform
import random
import sqlite3
import statistics
import string
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypedDict

ROOT = Path(__file__).resolve().parent.parent
# Python puts this script's folder first on the path, where bench/queue.py would shadow the
# standard library's queue (psycopg imports it); the repository root goes there instead.
if Path(sys.path[0] or ".").resolve() == ROOT / "bench":
    sys.path[0] = str(ROOT)
else:
    sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from psycopg.rows import dict_row  # noqa: E402

PG_SERVER = "postgres://postgres@127.0.0.1:5432"
PG_DB = "signoff_bench"
PG_URL = f"{PG_SERVER}/{PG_DB}"
NODES = 10
SIZES = (1024, 10 * 1024)
ITEM_CHARS = 100
SAVERS = ("InMemorySaver", "SqliteSaver", "PostgresSaver", "DjangoSaver-SQLite", "DjangoSaver-PG")
# What-if variants (--what-if): not savers anyone should use, upper bounds for the profile.
SKIP_WRITES = ", put_writes skipped"
LOCKED = ", put + put_writes under one lock"
WHAT_IF = (
    "PostgresSaver",
    "DjangoSaver-PG",
    f"DjangoSaver-PG{SKIP_WRITES}",
    "SqliteSaver",
    "DjangoSaver-SQLite",
    f"DjangoSaver-SQLite{LOCKED}",
    f"DjangoSaver-SQLite{SKIP_WRITES}",
)
# Tables each saver writes, and the SQL giving the payload bytes of one thread's rows.
# JSONB/JSON columns are counted as their text; blob columns as their bytes.
PAYLOAD_SQL: dict[str, list[str]] = {
    "SqliteSaver": [
        "SELECT coalesce(sum(length(checkpoint) + length(metadata)), 0) FROM checkpoints WHERE thread_id = ?",
        "SELECT coalesce(sum(length(value)), 0) FROM writes WHERE thread_id = ?",
    ],
    "PostgresSaver": [
        "SELECT coalesce(sum(octet_length(checkpoint::text) + octet_length(metadata::text)), 0)"
        " FROM checkpoints WHERE thread_id = %s",
        "SELECT coalesce(sum(octet_length(blob)), 0) FROM checkpoint_blobs WHERE thread_id = %s",
        "SELECT coalesce(sum(octet_length(blob)), 0) FROM checkpoint_writes WHERE thread_id = %s",
    ],
    "DjangoSaver-SQLite": [
        'SELECT coalesce(sum(length(CAST(checkpoint AS BLOB)) + length("values")'
        " + length(CAST(metadata AS BLOB))), 0) FROM workflows_checkpoint WHERE thread_id = %s",
        "SELECT coalesce(sum(length(blob)), 0) FROM workflows_checkpointblob WHERE thread_id = %s",
        "SELECT coalesce(sum(length(blob)), 0) FROM workflows_checkpointwrite WHERE thread_id = %s",
    ],
    "DjangoSaver-PG": [
        'SELECT coalesce(sum(octet_length(checkpoint::text) + octet_length("values")'
        " + octet_length(metadata::text)), 0) FROM workflows_checkpoint WHERE thread_id = %s",
        "SELECT coalesce(sum(octet_length(blob)), 0) FROM workflows_checkpointblob WHERE thread_id = %s",
        "SELECT coalesce(sum(octet_length(blob)), 0) FROM workflows_checkpointwrite WHERE thread_id = %s",
    ],
}
TABLES = {
    "SqliteSaver": ("checkpoints", "writes"),
    "PostgresSaver": ("checkpoints", "checkpoint_blobs", "checkpoint_writes"),
    "DjangoSaver-SQLite": ("workflows_checkpoint", "workflows_checkpointblob", "workflows_checkpointwrite"),
    "DjangoSaver-PG": ("workflows_checkpoint", "workflows_checkpointblob", "workflows_checkpointwrite"),
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def random_text(rng: random.Random, size: int) -> str:
    return "".join(rng.choices(string.ascii_letters + string.digits, k=size))


# -- environment ---------------------------------------------------------------------


def reset_pg_database() -> None:
    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {PG_DB}")
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pg_walinspect")  # to count commits in the profile


def setup_django(tmp: Path) -> None:
    """Django on a SQLite file (alias `default`) plus PostgreSQL (alias `pg`), migrated."""
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    os.environ["DJANGO_SECRET_KEY"] = "bench"
    os.environ.setdefault("SIGNOFF_AUDIT_KEY", "YmVuY2gtb25seS1hdWRpdC1rZXktbm90LWEtc2VjcmV0IQ")
    os.environ["DATABASE_URL"] = f"sqlite:///{tmp / 'django.sqlite3'}"
    os.environ["SIGNOFF_VAR_DIR"] = str(tmp / "var")
    import django
    from django.conf import settings
    from django.core.management import call_command

    from config.settings import database_from_url

    settings.DATABASES["pg"] = database_from_url(PG_URL)
    django.setup()
    for alias in ("default", "pg"):
        call_command("migrate", database=alias, verbosity=0)


def machine_info() -> list[tuple[str, str]]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "?",
    )
    with psycopg.connect(PG_URL) as conn:
        row = conn.execute("SELECT version(), current_setting('synchronous_commit')").fetchone()
    assert row is not None
    free = subprocess.run(["free", "-h"], capture_output=True, text=True, check=True).stdout
    saver_file = "workflows/checkpointer"
    git = ["git", "-C", str(ROOT)]
    last = subprocess.run(
        [*git, "log", "-1", "--format=%h %s", "--", saver_file], capture_output=True, text=True
    )
    dirty = subprocess.run([*git, "status", "--porcelain", "--", saver_file], capture_output=True, text=True)
    revision = last.stdout.strip() + (" + uncommitted changes" if dirty.stdout.strip() else "")
    mem = next(line for line in free.splitlines() if line.startswith("Mem:")).split()[1]
    return [
        ("DjangoSaver (last commit of workflows/checkpointer/)", revision),
        ("CPU", f"{cpu}, nproc={os.cpu_count()}"),
        ("memory (free -h total)", mem),
        ("PostgreSQL", f"{row[0].split(' on ')[0]}, 127.0.0.1 (synchronous_commit={row[1]})"),
        ("SQLite", sqlite3.sqlite_version),
        ("Python", platform.python_version()),
        ("platform", platform.platform()),
        ("load average at start (1/5/15 min)", " / ".join(f"{x:.2f}" for x in os.getloadavg())),
    ]


# -- savers --------------------------------------------------------------------------


@contextlib.contextmanager
def open_saver(name: str, tmp: Path) -> Iterator[Any]:
    """A fresh saver; SQLite ones get the Django SQLite pragmas (WAL, synchronous=NORMAL)."""
    if name == "InMemorySaver":
        from langgraph.checkpoint.memory import InMemorySaver

        yield InMemorySaver()
    elif name == "SqliteSaver":
        from langgraph.checkpoint.sqlite import SqliteSaver

        conn = sqlite3.connect(tmp / "langgraph.sqlite3", check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        saver = SqliteSaver(conn)
        saver.setup()
        try:
            yield saver
        finally:
            conn.close()
    elif name == "PostgresSaver":
        from langgraph.checkpoint.postgres import PostgresSaver

        with psycopg.Connection.connect(
            PG_URL, autocommit=True, prepare_threshold=0, row_factory=dict_row
        ) as pg_conn:
            saver = PostgresSaver(pg_conn)
            saver.setup()
            yield saver
    else:
        from workflows.checkpointer import DjangoSaver

        using = "pg" if name.startswith("DjangoSaver-PG") else "default"
        if name.endswith(SKIP_WRITES):

            class SkipWrites(DjangoSaver):
                def put_writes(self, *args: Any, **kwargs: Any) -> None:
                    return None

            yield SkipWrites(using=using)
        elif name.endswith(LOCKED):
            lock = threading.Lock()

            class Locked(DjangoSaver):
                def put(self, *args: Any, **kwargs: Any) -> Any:
                    with lock:
                        return super().put(*args, **kwargs)

                def put_writes(self, *args: Any, **kwargs: Any) -> None:
                    with lock:
                        super().put_writes(*args, **kwargs)

            yield Locked(using=using)
        else:
            yield DjangoSaver(using=using)


# -- benchmark 1: durable steps per second --------------------------------------------


class TextState(TypedDict):
    text: str


def text_graph(saver: Any, payloads: list[str]) -> Any:
    from langgraph.graph import END, START, StateGraph

    builder = StateGraph(TextState)
    previous = START
    for index, payload in enumerate(payloads):

        def node(state: TextState, payload: str = payload) -> dict[str, str]:
            return {"text": payload}

        builder.add_node(f"n{index}", node)
        builder.add_edge(previous, f"n{index}")
        previous = f"n{index}"
    builder.add_edge(previous, END)
    return builder.compile(checkpointer=saver)


def run_threads(graph: Any, prefix: str, count: int, expected: str) -> float:
    started = time.perf_counter()
    for index in range(count):
        config = {"configurable": {"thread_id": f"{prefix}-{index}"}}
        result = graph.invoke({"text": ""}, config, durability="sync")
        assert result["text"] == expected
    elapsed = time.perf_counter() - started
    state = graph.get_state({"configurable": {"thread_id": f"{prefix}-{count - 1}"}})
    assert state.values["text"] == expected
    assert state.next == ()
    return elapsed


@dataclass
class Rate:
    samples: list[float] = field(default_factory=list)

    def text(self) -> str:
        return f"{statistics.median(self.samples):,.0f} ({min(self.samples):,.0f}–{max(self.samples):,.0f})"

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


def floor_rates(tmp: Path, size: int, steps: int, repeats: int) -> dict[str, Rate]:
    """One raw INSERT + COMMIT per step with a payload of `size` bytes."""
    payload = random.Random(size).randbytes(size)
    rates = {"floor PG": Rate(), "floor SQLite": Rate()}
    with psycopg.connect(PG_URL) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_floor (id bigserial PRIMARY KEY, payload bytea)")
        conn.commit()
        for _ in range(repeats + 1):
            started = time.perf_counter()
            for _ in range(steps):
                conn.execute("INSERT INTO bench_floor (payload) VALUES (%s)", (payload,))
                conn.commit()
            rates["floor PG"].samples.append(steps / (time.perf_counter() - started))
    lite = sqlite3.connect(tmp / "floor.sqlite3")
    lite.execute("PRAGMA journal_mode=WAL")
    lite.execute("PRAGMA synchronous=NORMAL")
    lite.execute("CREATE TABLE IF NOT EXISTS bench_floor (id INTEGER PRIMARY KEY, payload BLOB)")
    for _ in range(repeats + 1):
        started = time.perf_counter()
        for _ in range(steps):
            lite.execute("INSERT INTO bench_floor (payload) VALUES (?)", (payload,))
            lite.commit()
        rates["floor SQLite"].samples.append(steps / (time.perf_counter() - started))
    lite.close()
    for rate in rates.values():
        del rate.samples[0]  # the first round is the warm-up
    return rates


def bench_steps(
    tmp: Path, threads: int, repeats: int, names: tuple[str, ...] = SAVERS, sizes: tuple[int, ...] = SIZES
) -> dict[int, dict[str, Rate]]:
    """Savers take turns within each repeat, so background load hits them all alike."""
    results: dict[int, dict[str, Rate]] = {}
    for size in sizes:
        rng = random.Random(size)
        payloads = [random_text(rng, size) for _ in range(NODES)]
        results[size] = {name: Rate() for name in names}
        with contextlib.ExitStack() as stack:
            graphs = {
                name: text_graph(stack.enter_context(open_saver(name, tmp)), payloads) for name in names
            }
            for name, graph in graphs.items():
                run_threads(graph, f"warm-{name}-{size}", 2, payloads[-1])
            for repeat in range(repeats):
                for name, graph in graphs.items():
                    elapsed = run_threads(graph, f"b1-{name}-{size}-{repeat}", threads, payloads[-1])
                    results[size][name].samples.append(NODES * threads / elapsed)
        if names == SAVERS:
            results[size].update(floor_rates(tmp, size, NODES * threads, repeats))
        for name, rate in results[size].items():
            log(f"  {size:>6} B  {name:<20} {rate.text()} steps/s")
    return results


# -- benchmark 2: storage growth -------------------------------------------------------


class ItemsState(TypedDict):
    items: Annotated[list[str], operator.add]
    target: int


def items_graph(saver: Any, items: list[str]) -> Any:
    """One node that appends the next item and loops on itself until `target` items."""
    from langgraph.graph import END, START, StateGraph

    def grow(state: ItemsState) -> dict[str, list[str]]:
        return {"items": [items[len(state["items"])]]}

    def again(state: ItemsState) -> str:
        return "grow" if len(state["items"]) < state["target"] else END

    builder = StateGraph(ItemsState)
    builder.add_node("grow", grow)
    builder.add_edge(START, "grow")
    builder.add_conditional_edges("grow", again, ["grow", END])
    return builder.compile(checkpointer=saver)


PG_DISK_SQL = "SELECT sum(pg_total_relation_size(t::regclass)) FROM unnest(%s::text[]) t"
# dbstat: the pages of each table and of its indexes.
SQLITE_DISK_SQL = (
    "SELECT sum(pgsize) FROM dbstat WHERE name IN (SELECT name FROM sqlite_master WHERE tbl_name IN ({}))"
)


def _one(row: tuple[Any, ...] | None) -> int:
    assert row is not None
    return int(row[0])


def measure(name: str, saver: Any, thread_id: str) -> tuple[int, int]:
    """(payload bytes of the thread's rows, bytes the saver's tables take on disk)."""
    tables = TABLES[name]
    if name == "SqliteSaver":
        with saver.lock:
            lite: sqlite3.Connection = saver.conn
            payload = sum(lite.execute(sql, (thread_id,)).fetchone()[0] for sql in PAYLOAD_SQL[name])
            disk_sql = SQLITE_DISK_SQL.format(",".join("?" * len(tables)))
            return payload, lite.execute(disk_sql, tables).fetchone()[0]
    if name == "PostgresSaver":
        with psycopg.connect(PG_URL) as conn:
            payload = sum(_one(conn.execute(sql, (thread_id,)).fetchone()) for sql in PAYLOAD_SQL[name])
            return payload, _one(conn.execute(PG_DISK_SQL, (list(tables),)).fetchone())
    from django.db import connections

    connection = connections["pg" if name == "DjangoSaver-PG" else "default"]
    with connection.cursor() as cur:

        def scalar(sql: str, params: Any) -> int:
            cur.execute(sql, params)
            return int(cur.fetchone()[0])

        payload = sum(scalar(sql, (thread_id,)) for sql in PAYLOAD_SQL[name])
        if connection.vendor == "postgresql":
            return payload, scalar(PG_DISK_SQL, (list(tables),))
        return payload, scalar(SQLITE_DISK_SQL.format(",".join(["%s"] * len(tables))), tables)


def bench_growth(tmp: Path, marks: tuple[int, ...]) -> dict[str, list[tuple[int, int, int]]]:
    """Per saver: (steps, payload bytes, on-disk bytes delta) at each mark."""
    rng = random.Random(400)
    items = [random_text(rng, ITEM_CHARS) for _ in range(marks[-1])]
    results: dict[str, list[tuple[int, int, int]]] = {}
    for name in SAVERS[1:]:
        with open_saver(name, tmp) as saver:
            graph = items_graph(saver, items)
            thread_id = f"growth-{name}"
            config: dict[str, Any] = {
                "configurable": {"thread_id": thread_id},
                "recursion_limit": marks[-1] + 10,
            }
            _, disk_before = measure(name, saver, thread_id)
            results[name] = []
            for mark in marks:
                graph.invoke({"target": mark}, config, durability="sync")
                state = graph.get_state(config)
                assert state.values["items"] == items[:mark], f"{name}: wrong state after {mark} steps"
                payload, disk = measure(name, saver, thread_id)
                results[name].append((mark, payload, disk - disk_before))
        log(f"  {name:<20} " + ", ".join(f"{m}: {p / 1e6:.2f} MB" for m, p, _ in results[name]))
    return results


# -- profile ---------------------------------------------------------------------------


@dataclass
class Tally:
    seconds: float = 0.0
    calls: int = 0


class Probe:
    """Time and calls of saver methods and (for DjangoSaver) of its SQL.

    Wraps functions process-wide, since LangGraph calls the saver from worker threads.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.tallies: dict[str, Tally] = {}
        self.intervals: dict[str, list[tuple[float, float]]] = {}
        self.undo: list[Callable[[], None]] = []

    def wrap(self, owner: Any, attr: str, key: str) -> None:
        original = getattr(owner, attr)
        own = attr in vars(owner)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - started
                with self.lock:
                    if key in ("put", "put_writes"):
                        self.intervals.setdefault(key, []).append((started, started + elapsed))
                    tally = self.tallies.setdefault(key, Tally())
                    tally.seconds += elapsed
                    tally.calls += 1

        setattr(owner, attr, wrapper)
        self.undo.append(lambda: setattr(owner, attr, original) if own else delattr(owner, attr))

    def overlap(self) -> str:
        """Share of put_writes calls that ran while a put ran, and their mean ms vs the others'."""
        puts = self.intervals.get("put", [])
        split: dict[bool, list[float]] = {True: [], False: []}
        for start, end in self.intervals.get("put_writes", []):
            split[any(start < put_end and put_start < end for put_start, put_end in puts)].append(end - start)
        share = len(split[True]) / max(len(split[True]) + len(split[False]), 1)
        means = [f"{statistics.fmean(split[k]) * 1e3:.2f}" if split[k] else "-" for k in (True, False)]
        return f"{share:.0%}, {means[0]} / {means[1]}"

    def __enter__(self) -> Probe:
        return self

    def __exit__(self, *exc: object) -> None:
        for undo in reversed(self.undo):
            undo()

    def get(self, key: str) -> Tally:
        return self.tallies.get(key, Tally())


def wal_position() -> str:
    with psycopg.connect(PG_URL) as conn:
        row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    return str(row[0])


def wal_since(start: str) -> tuple[int, int]:
    """(commit records, WAL bytes) written server-wide since `start` (pg_walinspect)."""
    with psycopg.connect(PG_URL) as conn:
        row = conn.execute(
            "SELECT (SELECT coalesce(sum(count), 0) FROM pg_get_wal_stats(%s::pg_lsn, end_lsn, true)"
            "        WHERE \"resource_manager/record_type\" = 'Transaction/COMMIT'),"
            " pg_wal_lsn_diff(end_lsn, %s::pg_lsn) FROM (SELECT pg_current_wal_lsn() AS end_lsn) e",
            (start, start),
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def profile(tmp: Path, threads: int) -> None:
    """Where each saver's time goes, per durable step."""
    steps = NODES * threads
    methods = ("put", "put_writes", "get_tuple")
    # DjangoSaver runs every write through connections.execute and every read through
    # connections.select; saver.py calls them by the names it imported.
    sql_keys = ("execute", "select")

    def ms(seconds: float) -> str:
        return f"{seconds / steps * 1e3:.2f}"

    timing: list[list[str]] = []
    django: list[list[str]] = []
    for size in SIZES:
        rng = random.Random(size)
        payloads = [random_text(rng, size) for _ in range(NODES)]
        for name in SAVERS:
            with open_saver(name, tmp) as saver:
                graph = text_graph(saver, payloads)
                run_threads(graph, f"pwarm-{name}-{size}", 2, payloads[-1])
                pg = name in ("PostgresSaver", "DjangoSaver-PG")
                wal_start = wal_position() if pg else ""
                with Probe() as probe:
                    for method in methods:
                        # On the class: compiling gives the graph DjangoSaver.with_allowlist's
                        # copy of the saver, which a wrapper on this instance would miss.
                        probe.wrap(type(saver), method, method)
                    if name.startswith("DjangoSaver"):
                        from workflows.checkpointer import saver as saver_module

                        for key in sql_keys:
                            probe.wrap(saver_module, key, key)
                    wall = run_threads(graph, f"prof-{name}-{size}", threads, payloads[-1])
                commits, wal_bytes = wal_since(wal_start) if pg else (0, 0)
            in_saver = sum(probe.get(m).seconds for m in methods)
            row = [f"{size // 1024} KB", name, f"{steps / wall:,.0f}", ms(wall)]
            row += [*(ms(probe.get(m).seconds) for m in methods), ms(in_saver)]
            row += [probe.overlap()]
            row += [f"{commits / steps:.2f}", f"{wal_bytes / steps:,.0f}"] if pg else ["", ""]
            timing.append(row)
            if name.startswith("DjangoSaver"):
                in_sql = sum(probe.get(k).seconds for k in sql_keys)
                django.append(
                    [
                        f"{size // 1024} KB",
                        name,
                        *(f"{probe.get(k).calls / steps:.2f}" for k in sql_keys),
                        *(ms(probe.get(k).seconds) for k in sql_keys),
                        ms(in_saver - in_sql),
                    ]
                )
    print(f"\n## Profile: where the time goes ({threads} threads x {NODES} steps, one run each)\n")
    print("ms per step, wall-clock, summed over the threads LangGraph calls the saver from (calls")
    print("overlap, so the sum can exceed the wall time). Per invoke: put x12, put_writes x11,")
    print("get_tuple x1 (+1 read-back for the last thread). PG commits and WAL bytes per step come from")
    print("pg_walinspect (COMMIT records, server-wide, so other clients of the server would add to them).")
    print("LangGraph waits for each put before the next step (durability='sync'); put_writes runs in the")
    print("background, often while a put runs.\n")
    head = ["size", "saver", "steps/s", "wall", *methods, "all saver calls"]
    head += ["put_writes during a put: share, ms during / ms alone", "PG commits/step"]
    table([*head, "WAL B/step"], timing)
    print("\nDjangoSaver, inside its calls: `execute` runs every write (its statements, round trip and")
    print("commit on the DB-API connection), `select` every read (one per get_tuple). Python = saver calls")
    print("minus both (serialization, SQL building, waiting to borrow a write connection).\n")
    head = ["size", "saver", "writes/step", "reads/step", "write SQL ms", "read SQL ms", "Python ms"]
    table(head, django)


# -- report ----------------------------------------------------------------------------


def report_steps(results: dict[int, dict[str, Rate]], threads: int, repeats: int) -> None:
    print(f"\n## Benchmark 1: durable steps/s ({NODES} nodes x {threads} threads, median of {repeats})\n")
    print("steps/s = node executions (10 per thread) / wall seconds; median (min–max) of the repeats.\n")
    head = ["saver", *(f"{size // 1024} KB" for size in SIZES)]
    table(head, [[name, *(results[size][name].text() for size in SIZES)] for name in results[SIZES[0]]])
    print()
    rows = []
    for ours, theirs, target in (
        ("DjangoSaver-PG", "PostgresSaver", 1.2),
        ("DjangoSaver-SQLite", "SqliteSaver", 1.0),
    ):
        ratios = [results[size][ours].median / results[size][theirs].median for size in SIZES]
        rows.append(
            [
                f"{ours} / {theirs}",
                f">= {target}",
                *(f"{r:.2f} ({'met' if r >= target else 'MISSED'})" for r in ratios),
            ]
        )
    table(["ratio of medians", "target", *(f"{size // 1024} KB" for size in SIZES)], rows)


def report_what_if(results: dict[str, Rate], threads: int, repeats: int) -> None:
    print(
        f"\n## What if: DjangoSaver variants (1 KB, {NODES} nodes x {threads} threads, median of {repeats})\n"
    )
    print("Upper bounds, not fixes: skipping put_writes drops pending writes (crash recovery).\n")
    rows = []
    for name, rate in results.items():
        base = "PostgresSaver" if "PG" in name or name == "PostgresSaver" else "SqliteSaver"
        rows.append([name, rate.text(), f"{rate.median / results[base].median:.2f}"])
    table(["saver", "steps/s", "vs official saver"], rows)


def table(head: list[str], rows: list[list[str]]) -> None:
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join(row) + " |")


def report_growth(results: dict[str, list[tuple[int, int, int]]]) -> None:
    marks = [mark for mark, _, _ in next(iter(results.values()))]
    spans = list(zip((0, *marks[:-1]), marks, strict=True))
    print(f"\n## Benchmark 2: storage growth of one thread ({marks[-1]} steps, one 100-char item each)\n")
    print("Payload bytes of the thread's rows (blob/value/checkpoint/metadata columns).\n")
    head = ["saver", *(f"total @{m}" for m in marks), *(f"avg B/step @{m}" for m in marks)]
    head += [f"B/step {a}-{b}" for a, b in spans]
    rows = []
    for name, points in results.items():
        payloads = dict([(0, 0)] + [(mark, payload) for mark, payload, _ in points])
        row = [name, *(f"{payloads[m]:,}" for m in marks), *(f"{payloads[m] / m:,.0f}" for m in marks)]
        rows.append(row + [f"{(payloads[b] - payloads[a]) / (b - a):,.0f}" for a, b in spans])
    table(head, rows)
    print("\nOn disk: growth of the saver's tables incl. indexes and TOAST (PG: pg_total_relation_size;")
    print("SQLite: dbstat pages), from before the thread's first step.\n")
    head = ["saver", *(f"on disk @{m}" for m in marks), *(f"on disk B/step @{m}" for m in marks)]
    rows = [
        [name, *(f"{disk:,}" for _, _, disk in points), *(f"{disk / mark:,.0f}" for mark, _, disk in points)]
        for name, points in results.items()
    ]
    table(head, rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=50, help="LangGraph threads per measurement")
    parser.add_argument("--quick", action="store_true", help="10 threads, 1 repeat, growth to 100 steps")
    parser.add_argument("--profile", action="store_true", help="also: where each saver's time goes")
    parser.add_argument("--what-if", action="store_true", help="also: DjangoSaver variants as upper bounds")
    args = parser.parse_args()
    threads, repeats, marks = args.threads, 3, (100, 200, 400)
    if args.quick:
        threads, repeats, marks = min(threads, 10), 1, (25, 50, 100)

    reset_pg_database()
    with tempfile.TemporaryDirectory(prefix="signoff-bench-") as name:
        tmp = Path(name)
        setup_django(tmp)
        print("# Checkpointer benchmark\n")
        print(f"- command: `{' '.join([Path(sys.executable).name, *sys.argv])}`")
        print(f"- date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
        for key, value in machine_info():
            print(f"- {key}: {value}")
        log("benchmark 1: durable steps/s")
        steps = bench_steps(tmp, threads, repeats)
        report_steps(steps, threads, repeats)
        log("benchmark 2: storage growth")
        report_growth(bench_growth(tmp, marks))
        if args.profile:
            profile(tmp, threads)
        if args.what_if:
            log("what-if: DjangoSaver variants")
            report_what_if(bench_steps(tmp, threads, repeats, WHAT_IF, (1024,))[1024], threads, repeats)
        print(f"\nLoad average at end (1/5/15 min): {' / '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
