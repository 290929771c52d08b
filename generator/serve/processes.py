"""The processes of a running tritonserver: its Python-backend stubs, their memory, and the
helpers that stop its whole process group without touching a recycled process id.

Each Python-backend model instance runs in a stub process (``STUB_PROCESS``) whose command line
starts with the model's file, <repository>/<model>/<version>/model.py; psutil finds them among the
server's descendants. A server runs in its own session, so its pid is its process group's id,
and stays so while the server is an unreaped zombie (``wait_exit_unreaped`` leaves it one).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Callable, Iterable

STUB_PROCESS = "triton_python_backend_stub"  # one process per Python-backend model instance


def descendants(pid: int) -> list:
    """The psutil.Process of each descendant of ``pid`` ([] when it is gone)."""
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def dead_children(pid: int) -> int:
    """How many children of ``pid`` have exited and wait for it to reap them (zombies)."""
    import psutil

    try:
        children = psutil.Process(pid).children()
    except psutil.Error:
        return 0
    count = 0
    for child in children:
        try:
            count += child.status() == psutil.STATUS_ZOMBIE
        except psutil.Error:
            pass
    return count


def raise_descriptor_limit(pid: int) -> None:
    """Let process ``pid`` open as many files and sockets as the hard limit allows (a server
    at the usual soft limit of 1,024 stops answering once that many idle connections are
    open)."""
    import resource

    try:
        _, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (hard, hard))
    except (OSError, ValueError):  # gone already, or not allowed: the limit stays
        pass


def running(proc) -> bool:
    """True while ``proc`` (a psutil.Process) runs: not exited, not an unreaped zombie."""
    import psutil

    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def stub_processes(pid: int | None) -> dict:
    """{pid: psutil.Process} of the running Python-backend stubs under server ``pid``."""
    import psutil

    stubs = {}
    for p in descendants(pid) if pid else []:
        try:
            if p.name() == STUB_PROCESS and running(p):
                stubs[p.pid] = p
        except psutil.Error:  # exited meanwhile
            pass
    return stubs


def stubs_of(stubs: Iterable, name: str) -> list:
    """Those of ``stubs`` (psutil.Process) that serve model ``name``: a stub's command line starts
    with its model file, <repository>/<model>/<version>/model.py (several models may be loading
    at once, so which stubs appeared during a load says nothing)."""
    import psutil

    found = []
    for p in stubs:
        try:
            args = p.cmdline()
        except psutil.Error:  # exited meanwhile
            continue
        if len(args) > 1 and Path(args[1]).parent.parent.name == name:
            found.append(p)
    return found


def resident_bytes(pid: int | None) -> int | None:
    """Resident memory of process ``pid`` and all its descendants, in bytes (None when it is not
    running)."""
    import psutil

    if not pid:
        return None
    try:
        root = psutil.Process(pid)
    except psutil.Error:
        return None
    total = 0
    for proc in [root, *descendants(pid)]:
        try:
            total += proc.memory_info().rss
        except psutil.Error:  # exited meanwhile
            pass
    return total


def kill_group(pid: int) -> None:
    """SIGKILL process group ``pid``; nothing when it is gone (or not ours)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def kill_group_when_it_dies(proc, ours: Callable[[], bool]) -> None:
    """While ``ours()`` (the server still owns child ``proc``): once ``proc`` exits on its own,
    kill its process group at once. Its Python-backend stubs would live on as orphans holding the
    server's sockets, so a client call in flight (a reload) would wait out its whole timeout
    instead of failing."""
    while ours():
        if wait_exit_unreaped(proc.pid, 0.5, reaped=False):
            if ours():  # not a stop of ours (that kills the group itself)
                kill_group(proc.pid)  # the leader is an unreaped zombie: the group is still its own
            return


def wait_gone(procs: list, timeout: float) -> None:
    """Wait until each process has exited (a zombie waiting for its reaper counts as exited)."""
    import psutil

    deadline = time.monotonic() + timeout
    for p in procs:
        while time.monotonic() < deadline:
            try:
                if p.status() == psutil.STATUS_ZOMBIE:
                    break
            except psutil.NoSuchProcess:
                break
            time.sleep(0.02)


def wait_exit_unreaped(pid: int, timeout: float, reaped: bool = True) -> bool:
    """Wait until child ``pid`` has exited, leaving it unreaped (a zombie). True if it exited;
    one already reaped counts as exited when ``reaped``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
        except ChildProcessError:
            return reaped
        time.sleep(0.05)
    return False
