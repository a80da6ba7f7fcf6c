"""The HTTP API, end to end: one `langgraph_sdk` script, the human-in-the-loop loop, against
Signoff and against LangGraph's own server (`langgraph dev`), in one run.

Run by hand (not part of the test suite):

    .venv/bin/python bench/api.py                       # both servers, concurrency 1 and 8
    .venv/bin/python bench/api.py --only langgraph-dev  # or --only signoff
    .venv/bin/python bench/api.py --loops 10 --concurrency 1 4 8

One loop (the same client code for both servers, `loop()`): create a thread; `runs.wait` with
the input until the graph stops at its interrupt; read the state and its interrupt; `runs.wait`
with `Command(resume=[HumanResponse accept])` until the thread is done. The graph is
content_review (workflows/examples/content_review.py; for `langgraph dev` the plain copy in
bench/langgraph_dev/). Reported: loops per second at each concurrency (threads, each with its
own client, running loops back to back), and p50/p95 of resume -> done (the second `runs.wait`).

- Signoff: PostgreSQL (database `signoff_bench_api`, **dropped and created anew**), Redis
  (db 14, **emptied**) as the broker, `celery worker -P prefork -c 2` (2 worker processes, as
  `make run`) and the web server: uvicorn (config.asgi) when it is installed in .venv, else
  `manage.py runserver`; DEBUG off. Two superusers' keys (`manage.py create_api_key`): one
  starts each thread, the other approves it, as segregation of duties wants.
- `langgraph dev`: PyPI `langgraph-cli[inmem]`, installed by this script into its own venv,
  var/bench-venv (never into .venv), serving bench/langgraph_dev/langgraph.json with
  `--no-browser --no-reload`. In memory, not durable.

Progress goes to stderr, the report (Markdown) to stdout. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Python puts this script's folder first on the path, where bench/queue.py would shadow the
# standard library's queue; the repository root goes there instead.
if Path(sys.path[0] or ".").resolve() == ROOT / "bench":
    sys.path[0] = str(ROOT)
else:
    sys.path.insert(0, str(ROOT))

from langgraph_sdk import get_sync_client  # noqa: E402

GRAPH = "content_review"
TOPIC = {"topic": "durable workflows", "audience": "engineers"}
ACCEPT = [{"type": "accept", "args": None}]
DRAFT = "Durable workflows: what engineers should know."

PG_URL = "postgres://postgres@127.0.0.1:5432/signoff_bench_api"
REDIS_URL = "redis://127.0.0.1:6379/14"
BENCH_VENV = ROOT / "var" / "bench-venv"
# What `langgraph dev` is, pinned: the server the issue measured (langgraph-api 0.16.7) on the
# LangGraph that Signoff runs.
LANGGRAPH_DEV = ["langgraph-cli[inmem]==0.4.40", "langgraph-api==0.16.7", "langgraph==1.2.22"]
LANGGRAPH_DEV_CONFIG = ROOT / "bench" / "langgraph_dev" / "langgraph.json"
# Targets from issue 11: Signoff / langgraph dev in loops per second, and resume -> done.
TARGET_RATIO = {1: 10.0, 8: 2.0}
TARGET_RESUME_P50_MS = 100.0
WARMUP = 2
START_TIMEOUT = 120.0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the script both servers run ------------------------------------------------------------


def loop(client: Any, reviewer: Any = None) -> tuple[float, float]:
    """One human-in-the-loop round trip; returns the seconds from the start to the interrupt
    and from the resume to done. `reviewer` (another user's client) resumes: on Signoff the
    user who started a thread may not approve it (segregation of duties)."""
    reviewer = reviewer or client
    thread = client.threads.create(graph_id=GRAPH)
    thread_id = thread["thread_id"]
    started = time.perf_counter()
    client.runs.wait(thread_id, GRAPH, input=TOPIC)
    to_interrupt = time.perf_counter() - started
    state = client.threads.get_state(thread_id)
    [request] = state["tasks"][0]["interrupts"][0]["value"]
    if request["action_request"]["args"]["body"] != DRAFT or state["next"] != ["review"]:
        raise AssertionError(f"unexpected state at the interrupt: {state}")
    started = time.perf_counter()
    done = reviewer.runs.wait(thread_id, GRAPH, command={"resume": ACCEPT})
    to_done = time.perf_counter() - started
    if done.get("status") != "published" or done.get("published") != DRAFT:
        raise AssertionError(f"unexpected values after the resume: {done}")
    return to_interrupt, to_done


@dataclass
class Measured:
    concurrency: int
    loops: int
    seconds: float
    start: list[float] = field(default_factory=list)
    resume: list[float] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        return self.loops / self.seconds

    def resume_ms(self, q: float) -> float:
        return quantile_ms(self.resume, q)

    def start_ms(self, q: float) -> float:
        return quantile_ms(self.start, q)


def quantile_ms(seconds: list[float], q: float) -> float:
    """The q-quantile (nearest rank) in milliseconds."""
    ordered = sorted(seconds)
    return 1000 * ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(url: str, api_keys: tuple[str | None, str | None], concurrency: int, loops: int) -> Measured:
    """`loops` loops spread over `concurrency` threads (each its own client), after a warm-up."""
    # Imported here, after the path is fixed: concurrent.futures imports the standard queue.
    from concurrent.futures import ThreadPoolExecutor

    # Each thread: the starter's client and the reviewer's.
    clients = [
        tuple(get_sync_client(url=url, api_key=key, timeout=120) for key in api_keys)
        for _ in range(concurrency)
    ]
    for pair in clients[:1]:
        for _ in range(WARMUP):
            loop(*pair)
    remaining = loops
    lock = threading.Lock()
    results: list[tuple[float, float]] = []

    def work(pair: tuple[Any, ...]) -> None:
        nonlocal remaining
        while True:
            with lock:
                if remaining == 0:
                    return
                remaining -= 1
            took = loop(*pair)
            with lock:
                results.append(took)

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for future in [pool.submit(work, pair) for pair in clients]:
            future.result()
    elapsed = time.perf_counter() - started
    return Measured(
        concurrency=concurrency,
        loops=loops,
        seconds=elapsed,
        start=[first for first, _ in results],
        resume=[second for _, second in results],
    )


# -- the servers ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ok(url: str, what: str, processes: list[subprocess.Popen[bytes]], logs: list[Path]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        for process, logfile in zip(processes, logs, strict=True):
            if process.poll() is not None:
                sys.exit(f"{what} exited with {process.returncode}; its log:\n{logfile.read_text()[-4000:]}")
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/ok", timeout=2) as response:
            if response.status == 200:
                return
        time.sleep(0.3)
    sys.exit(f"{what} did not answer {url}/ok within {START_TIMEOUT:.0f}s")


@contextlib.contextmanager
def processes(
    commands: list[tuple[list[str], Path]], *, cwd: Path, env: dict[str, str]
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Each command in a session of its own, its output in its log; all killed by group at exit."""
    started: list[subprocess.Popen[bytes]] = []
    try:
        for command, logfile in commands:
            with logfile.open("ab") as out:
                started.append(
                    subprocess.Popen(
                        command,
                        cwd=cwd,
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        yield started
    finally:
        for process in started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in started:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def bench_venv() -> Path:
    """var/bench-venv with `langgraph dev` in it, made (once) by this script."""
    langgraph = BENCH_VENV / "bin" / "langgraph"
    stamp = BENCH_VENV / ".signoff-bench"
    want = " ".join(LANGGRAPH_DEV)
    if langgraph.exists() and stamp.exists() and stamp.read_text() == want:
        return langgraph
    log(f"==> installing {want} into {BENCH_VENV.relative_to(ROOT)}")
    shutil.rmtree(BENCH_VENV, ignore_errors=True)
    # The interpreter .venv was made with (the same Python for both servers).
    base = subprocess.run(
        [sys.executable, "-c", "import sys; print(sys._base_executable)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    subprocess.run([base, "-m", "venv", str(BENCH_VENV)], check=True)
    pip = [
        str(BENCH_VENV / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--quiet",
    ]
    subprocess.run([*pip, *LANGGRAPH_DEV], check=True)
    stamp.write_text(want)
    return langgraph


@contextlib.contextmanager
def langgraph_dev(tmp: Path) -> Iterator[tuple[str, None, str]]:
    langgraph = bench_venv()
    port = free_port()
    env = {
        **os.environ,
        # Nothing leaves the machine: no tracing, no analytics.
        "LANGSMITH_TRACING": "false",
        "LANGCHAIN_TRACING_V2": "false",
        "LANGGRAPH_CLI_NO_ANALYTICS": "1",
    }
    for name in ("LANGGRAPH_API_KEY", "LANGSMITH_API_KEY", "LANGCHAIN_API_KEY"):
        env.pop(name, None)
    logfile = tmp / "langgraph-dev.log"
    command = [
        str(langgraph),
        "dev",
        "--no-browser",
        "--no-reload",
        "--port",
        str(port),
        "--config",
        "langgraph.json",
    ]
    versions = "; ".join(
        f"print({name!r}, version({name!r}))" for name in ("langgraph-api", "langgraph-runtime-inmem")
    )
    version = (
        subprocess.run(
            [str(BENCH_VENV / "bin" / "python"), "-c", f"from importlib.metadata import version; {versions}"],
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.strip()
        .replace("\n", ", ")
    )
    # It resolves the graph's path from its working directory, and writes the in-memory
    # server's flush files (.langgraph_api/) there: a copy in the temp dir, not bench/.
    for source in (LANGGRAPH_DEV_CONFIG, LANGGRAPH_DEV_CONFIG.with_name("content_review.py")):
        shutil.copy(source, tmp / source.name)
    with processes([(command, logfile)], cwd=tmp, env=env) as started:
        url = f"http://127.0.0.1:{port}"
        wait_ok(url, "langgraph dev", started, [logfile])
        yield url, (None, None), f"`langgraph dev --no-browser --no-reload` ({version}, in memory)"


def signoff_env(tmp: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DJANGO_SECRET_KEY": os.environ.get("DJANGO_SECRET_KEY", "bench-only-not-a-secret"),
        "SIGNOFF_AUDIT_KEY": os.environ.get(
            "SIGNOFF_AUDIT_KEY", "YmVuY2gtb25seS1hdWRpdC1rZXktbm90LWEtc2VjcmV0IQ"
        ),
        "DJANGO_DEBUG": "false",
        "SECURE_SSL_REDIRECT": "false",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DATABASE_URL": PG_URL,
        "CELERY_BROKER_URL": REDIS_URL,
        "SIGNOFF_VAR_DIR": str(tmp),
        # One key drives every loop: at 600 requests a minute (the default) the limit, not the
        # server, would be measured.
        "SIGNOFF_API_RATE_LIMIT": os.environ.get("SIGNOFF_API_RATE_LIMIT", "off"),
    }
    return env


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        sys.exit(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


@contextlib.contextmanager
def signoff(tmp: Path) -> Iterator[tuple[str, str, str]]:
    from bench.pages import recreate_postgres

    recreate_postgres(PG_URL)
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()
    env = signoff_env(tmp)
    manage(env, "migrate", "--noinput")
    manage(
        env,
        "shell",
        "-c",
        "from django.contrib.auth.models import User; User.objects.create_superuser('bench', '', None); "
        "User.objects.create_superuser('bench_reviewer', '', None)",
    )
    # One user starts each thread and another approves it (segregation of duties).
    api_keys = tuple(
        manage(env, "create_api_key", user, "--name", "bench/api.py").strip()
        for user in ("bench", "bench_reviewer")
    )
    port = free_port()
    try:
        import uvicorn  # noqa: F401

        web = [sys.executable, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1"]
        web += ["--port", str(port), "--no-access-log"]
        server = "uvicorn (config.asgi)"
    except ImportError:
        web = [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"]
        server = "manage.py runserver"
    worker = [sys.executable, "-m", "celery", "-A", "config", "worker", "-P", "prefork", "-c", "2"]
    worker += ["--loglevel", "WARNING", "--without-gossip", "--without-mingle"]
    commands = [(web, tmp / "web.log"), (worker, tmp / "worker.log")]
    with processes(commands, cwd=ROOT, env=env) as started:
        url = f"http://127.0.0.1:{port}/api"
        wait_ok(url, "Signoff", started, [logfile for _, logfile in commands])
        yield url, api_keys, f"Signoff: {server}, `celery worker -P prefork -c 2`, PostgreSQL, Redis"


# -- the report -------------------------------------------------------------------------------


def run_target(name: str, tmp: Path, concurrencies: list[int], loops: int) -> tuple[str, dict[int, Measured]]:
    server = signoff if name == "signoff" else langgraph_dev
    results: dict[int, Measured] = {}
    with server(tmp) as (url, api_keys, described):
        for concurrency in concurrencies:
            count = max(loops, loops * concurrency // 2)
            log(f"==> {name}: {count} loops at concurrency {concurrency}")
            results[concurrency] = measured = measure(url, api_keys, concurrency, count)
            log(
                f"    {measured.per_second:.2f} loops/s, resume -> done p50 {measured.resume_ms(0.5):.0f} ms,"
                f" p95 {measured.resume_ms(0.95):.0f} ms"
            )
    return described, results


def postgres_version() -> str:
    import psycopg

    with psycopg.connect(PG_URL.rsplit("/", 1)[0] + "/postgres") as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


def report(args: argparse.Namespace, runs: dict[str, tuple[str, dict[int, Measured]]]) -> None:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.strip()
    print("## bench/api.py: the human-in-the-loop loop through the HTTP API\n")
    print(f"`.venv/bin/python bench/api.py {' '.join(sys.argv[1:])}`".replace(" `", "`"))
    print(
        f"at {commit or '?'}, {time.strftime('%Y-%m-%d', time.gmtime())}, {os.cpu_count()} CPUs"
        f" ({platform.processor() or platform.machine()}), Python {platform.python_version()}"
        + (f", PostgreSQL {postgres_version()}" if "signoff" in runs else "")
        + "\n"
    )
    for name, (described, _) in runs.items():
        print(f"- **{name}**: {described}")
    print(
        f"\nOne loop: threads.create, runs.wait (input) to the interrupt, threads.get_state, runs.wait"
        f" (resume) to done; {WARMUP} warm-up loops first.\n"
    )
    print(
        "| server | concurrency | loops | loops/s | resume -> done p50 | p95 | start -> interrupt p50 | p95 |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, (_, results) in runs.items():
        for concurrency, measured in results.items():
            print(
                f"| {name} | {concurrency} | {measured.loops} | {measured.per_second:.2f} |"
                f" {measured.resume_ms(0.5):.0f} ms | {measured.resume_ms(0.95):.0f} ms |"
                f" {measured.start_ms(0.5):.0f} ms | {measured.start_ms(0.95):.0f} ms |"
            )
    if "signoff" in runs and "langgraph-dev" in runs:
        print("\n| target | measured | met |")
        print("|---|---|---|")
        ours, theirs = runs["signoff"][1], runs["langgraph-dev"][1]
        for concurrency, want in TARGET_RATIO.items():
            if concurrency in ours and concurrency in theirs:
                ratio = ours[concurrency].per_second / theirs[concurrency].per_second
                print(
                    f"| loops/s at concurrency {concurrency} >= {want:.0f}x langgraph dev | {ratio:.1f}x |"
                    f" {'yes' if ratio >= want else 'no'} |"
                )
        for concurrency, measured in ours.items():
            p50 = measured.resume_ms(0.5)
            print(
                f"| resume -> done p50 <= {TARGET_RESUME_P50_MS:.0f} ms (concurrency {concurrency}) |"
                f" {p50:.0f} ms | {'yes' if p50 <= TARGET_RESUME_P50_MS else 'no'} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=["signoff", "langgraph-dev"], help="measure one server only")
    parser.add_argument(
        "--loops", type=int, default=20, help="loops at concurrency 1 (c x loops / 2 at c > 1; default 20)"
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()
    names = [args.only] if args.only else ["signoff", "langgraph-dev"]
    runs: dict[str, tuple[str, dict[int, Measured]]] = {}
    with tempfile.TemporaryDirectory(prefix="signoff-bench-api-") as tmp:
        for name in names:
            where = Path(tmp) / name
            where.mkdir()
            runs[name] = run_target(name, where, args.concurrency, args.loops)
    report(args, runs)


if __name__ == "__main__":
    main()
