"""The app under a real ASGI server, for the tests that stream: uvicorn on config/asgi.py in a
subprocess on the test database (as `make run` serves it), its log in a file, killed at the end.

    def test_x(asgi_server: AsgiServer) -> None:
        client = get_sync_client(url=asgi_server.api_url, api_key=...)

`live_server` is Django's threaded WSGI server: a stream there is collected whole before the
first byte leaves, so what streams must be tested here.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.workers import ROOT, database_url, wait_for


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class AsgiServer:
    """`uvicorn config.asgi:application` on a free port of 127.0.0.1; `env` adds to (or
    overrides) the test process's environment."""

    def __init__(self, directory: Path, name: str = "web", **env: str) -> None:
        self.name = name
        self.log = directory / f"{name}.log"
        self.port = free_port()
        self.env = {**os.environ, "DATABASE_URL": database_url(), **env}
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"

    def start(self) -> AsgiServer:
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "config.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            # Django has no lifespan handler; "auto" would log a traceback saying so.
            "--lifespan",
            "off",
            "--log-level",
            "info",
        ]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_for(self._ready, timeout=60, what=f"uvicorn ({self.name}) to start; see {self.log}")
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"uvicorn exited with {self.process.returncode}:\n{self.text()[-3000:]}")
        return "Uvicorn running on" in self.text()

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)


@pytest.fixture
def asgi_server(tmp_path: Path) -> Iterator[Any]:
    """Starts servers on demand (`asgi_server(**env)`), each stopped at the test's end."""
    started: list[AsgiServer] = []

    def start(name: str = "web", **env: str) -> AsgiServer:
        server = AsgiServer(tmp_path, name, **env).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
