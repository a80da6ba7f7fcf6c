"""Lease holder identity (issue 9, item 9): "the holder is dead" may only be concluded about a
process this one can see, i.e. on the same host, in the same boot and the same PID namespace.
Containers sharing a hostname but not a PID namespace must not judge each other's workers dead."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from workflows import services


def exited_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])  # noqa: S603 - our own interpreter
    child.wait()
    return child.pid


def test_the_holder_names_this_host_this_process_and_where_its_pid_is_valid():
    holder = services.lease_holder()

    assert holder.startswith(f"{socket.gethostname()}:")
    assert holder.endswith(f":{os.getpid()}")
    # hostname, the scope (boot and PID namespace), the pid
    assert len(holder.split(":")) == 3


def test_a_holder_from_this_namespace_whose_process_is_gone_is_dead():
    host, scope, _ = services.lease_holder().split(":")

    assert services._holder_is_dead(f"{host}:{scope}:{exited_pid()}")


def test_a_live_holder_from_this_namespace_is_not_dead():
    assert not services._holder_is_dead(services.lease_holder())


def test_a_holder_on_the_same_hostname_in_another_pid_namespace_or_boot_is_not_judged_dead():
    # A container sharing our hostname (host networking, or a fixed `hostname:` in compose)
    # runs its worker as a pid that means nothing here, and may well be absent here.
    host, scope, _ = services.lease_holder().split(":")
    other_scope = "0" * len(scope) if scope != "0" * len(scope) else "1" * len(scope)

    assert not services._holder_is_dead(f"{host}:{other_scope}:{exited_pid()}")


def test_a_holder_written_before_scopes_existed_is_not_judged_dead():
    # host:pid, as older workers wrote it: its namespace is unknown, so only its lease decides.
    assert not services._holder_is_dead(f"{socket.gethostname()}:{exited_pid()}")


def test_a_holder_on_another_host_is_not_dead():
    _, scope, _ = services.lease_holder().split(":")

    assert not services._holder_is_dead(f"not-{socket.gethostname()}:{scope}:{exited_pid()}")
