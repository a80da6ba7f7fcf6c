"""Timing one page through Django's test client, shared by the page benchmarks."""

from __future__ import annotations

import statistics
import time
from typing import Any


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
