"""How long a run's checkpoint writes take, measured where they happen: in the worker.

The saver times each leased write (`put`, `put_writes`: the statements and their commit) into
a per-process tally keyed by run; the worker takes the tally when the delivery ends and the run's
outcome (`finish_run`, `fail_run`, `release_run`) adds it to `Run.checkpoint_writes` in the same
transaction. The Prometheus endpoint sums the runs' tallies at scrape time. Kept in the database,
not in the process: web and workers may run on different machines, and a scrape must see every
worker's writes. A delivery whose worker dies loses its tally with it; the writes it made are the
ones its successor repeats.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Seconds. One write is a few statements and a commit: ~1 ms on a quiet SQLite, ~3 ms on
# PostgreSQL over loopback; the upper buckets catch lock waits and a busy disk.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


@dataclass
class WriteTimings:
    count: int = 0
    seconds: float = 0.0
    # Observations at or under each bound of BUCKETS (not cumulative; the last holds the rest).
    buckets: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))

    def observe(self, seconds: float) -> None:
        self.count += 1
        self.seconds += seconds
        self.buckets[next((i for i, bound in enumerate(BUCKETS) if seconds <= bound), len(BUCKETS))] += 1

    def add(self, other: WriteTimings) -> None:
        self.count += other.count
        self.seconds += other.seconds
        self.buckets = [mine + theirs for mine, theirs in zip(self.buckets, other.buckets, strict=True)]

    def as_json(self) -> dict[str, Any]:
        return {"count": self.count, "seconds": self.seconds, "buckets": list(self.buckets)}

    @classmethod
    def from_json(cls, value: Mapping[str, Any] | None) -> WriteTimings:
        """A tally stored on a run; an empty or foreign one (other buckets) counts as none."""
        if not value or len(value.get("buckets", ())) != len(BUCKETS) + 1:
            return cls()
        return cls(int(value["count"]), float(value["seconds"]), [int(n) for n in value["buckets"]])


_lock = threading.Lock()
_by_run: dict[int, WriteTimings] = {}


def observe(run_id: int, seconds: float) -> None:
    # LangGraph writes from its own threads as well as the caller's.
    with _lock:
        _by_run.setdefault(run_id, WriteTimings()).observe(seconds)


def take(run_id: int) -> WriteTimings:
    """The run's writes timed in this process since the last take, and forget them."""
    with _lock:
        return _by_run.pop(run_id, None) or WriteTimings()
