"""Real Celery worker processes for the delivery and recovery tests, killed by pid."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def database_url() -> str:
    """The URL of the test database this process uses, for the workers to share."""
    settings = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{Path(settings['NAME']).resolve()}"
    host = settings.get("HOST") or "127.0.0.1"
    port = settings.get("PORT") or 5432
    user = settings.get("USER") or "postgres"
    return f"postgres://{user}@{host}:{port}/{settings['NAME']}"


class Worker:
    """`celery -A config worker -P prefork -c 1` as a subprocess, with its log in a file."""

    def __init__(self, directory: Path, name: str, *, concurrency: int = 1, **env: str) -> None:
        self.name = name
        self.concurrency = concurrency
        self.log = directory / f"{name}.log"
        self.pidfile = directory / f"{name}.pid"
        self.env = {
            **os.environ,
            "DATABASE_URL": database_url(),
            "SIGNOFF_LEASE_SECONDS": "2",
            "SIGNOFF_BUSY_RETRIES": "2",
            # One write connection and the pool's minimum are plenty for one task at a time.
            "DATABASE_POOL_SIZE": os.environ.get("DATABASE_POOL_SIZE", "4"),
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        self._launch(
            "worker",
            "-P",
            "prefork",
            "-c",
            str(self.concurrency),
            "-n",
            f"{self.name}@%h",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            ready="ready.",
            what=f"worker {self.name} to start",
        )
        return self

    def _launch(self, *args: str, ready: str, what: str) -> None:
        """`celery -A config <args>` in a session of its own, its output appended to the log,
        until `ready` shows in the log."""
        command = [sys.executable, "-m", "celery", "-A", "config", *args]
        command += ["--pidfile", str(self.pidfile), "--loglevel", "INFO"]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_for(lambda: ready in self.text(), timeout=60, what=what)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def children(self) -> list[int]:
        found = subprocess.run(["pgrep", "-P", str(self.pid)], capture_output=True, text=True, check=False)
        return [int(pid) for pid in found.stdout.split()]

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def signal(self, signum: int, *, with_children: bool = True) -> None:
        targets = [*self.children(), self.pid] if with_children else [self.pid]
        for pid in targets:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.signal(signal.SIGCONT)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.process.wait(timeout=30)


class Beat(Worker):
    """`celery -A config beat` as a subprocess: the clock, and the sweeper (workflows/beat.py)."""

    def start(self) -> Beat:
        schedule = str(self.log.with_suffix(".schedule"))
        self._launch("beat", "--schedule", schedule, ready="beat: Starting...", what="beat to start")
        return self


def wait_for(check: Callable[[], Any], *, timeout: float, what: str, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)
