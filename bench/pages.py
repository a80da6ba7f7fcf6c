"""What the page benchmarks (queue.py, audit_export.py) share: a throwaway database, Django
set up on it, timing one page through Django's test client, and the table of those times."""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


def recreate_postgres(url: str) -> None:
    """Drop and create the database of `url`; only one whose name says it is a bench's."""
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if not name.startswith("signoff_bench"):
        sys.exit(f"refusing to drop {name!r}: the bench database's name must start with signoff_bench")
    with psycopg.connect(parts._replace(path="/postgres").geturl(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")


def start_django(tmp: Path, database_url: str) -> None:
    """Django with production settings (DEBUG off) on `database_url`, migrated; files in `tmp`."""
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only-not-a-secret")
    os.environ.setdefault("SIGNOFF_AUDIT_KEY", "YmVuY2gtb25seS1hdWRpdC1rZXktbm90LWEtc2VjcmV0IQ")
    os.environ["DJANGO_DEBUG"] = "false"
    os.environ["SIGNOFF_VAR_DIR"] = str(tmp)
    os.environ["CELERY_BROKER_URL"] = "memory://"
    os.environ["DATABASE_URL"] = database_url
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    # The test client serves no static files; the manifest storage would want collectstatic.
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    settings.ALLOWED_HOSTS = ["testserver"]
    call_command("migrate", verbosity=0)


def print_pages(heading: str, results: list[tuple[str, dict[str, Any]]]) -> None:
    """The Markdown table of `measure`'s results, one page a row; `heading` heads the first column."""
    print(f"| {heading} | median ms | p95 ms | queries | KB |")
    print("|---|---:|---:|---:|---:|")
    for name, result in results:
        print(
            f"| {name} | {result['median']:.1f} | {result['p95']:.1f} | {result['queries']} "
            f"| {result['bytes'] / 1024:.0f} |"
        )


def measure(client: Any, url: str, repeat: int, **headers: str) -> dict[str, Any]:
    """Median and p95 server time in ms of `repeat` GETs of `url`, after 3 warm-ups (template
    loading, compiled graphs, the connection), with the query count and size of the last."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for _ in range(3):
        response = client.get(url, **headers)
        assert response.status_code == 200, (url, response.status_code)
    times = []
    queries = 0
    for _ in range(repeat):
        with CaptureQueriesContext(connection) as captured:
            started = time.perf_counter()
            response = client.get(url, **headers)
            times.append((time.perf_counter() - started) * 1000)
        queries = len(captured)
        assert response.status_code == 200
    times.sort()
    return {
        "median": statistics.median(times),
        "p95": times[max(0, int(len(times) * 0.95) - 1)],
        "queries": queries,
        "bytes": len(response.content),
    }
