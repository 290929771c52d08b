"""The processes of a running tritonserver: its Python-backend stubs, their memory (resident,
proportional and unique; GPU memory as nvidia-smi lists it), and the helpers that stop its whole
process group without touching a recycled process id.

Each Python-backend model instance runs in a stub process (``STUB_PROCESS``) whose command line
starts with the model's file, <repository>/<model>/<version>/model.py; psutil finds them among the
server's descendants. A server runs in its own session, so its pid is its process group's id,
and stays so while the server is an unreaped zombie (``wait_exit_unreaped`` leaves it one).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterable, NamedTuple

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


def resident_bytes(pid: int | None, with_descendants: bool = True) -> int | None:
    """Resident memory of process ``pid`` and (``with_descendants``) all its descendants, in bytes
    (None when it is not running)."""
    import psutil

    if not pid:
        return None
    try:
        root = psutil.Process(pid)
    except psutil.Error:
        return None
    total = 0
    for proc in [root, *(descendants(pid) if with_descendants else [])]:
        try:
            total += proc.memory_info().rss
        except psutil.Error:  # exited meanwhile
            pass
    return total


class ProcessMemory(NamedTuple):
    """Memory of one or more processes, in bytes."""

    pss: int  # proportional set size: each shared page split among the processes that map it
    uss: int  # unique set size: the pages no other process maps (private clean and dirty)
    rss: int = 0  # resident set size: every page it maps, shared ones in full


def private_and_shared(procs: Iterable) -> tuple[int, int] | None:
    """(private, shared) bytes of processes ``procs`` (psutil.Process; those of one model):
    their private pages summed, and the pages they share with any process (libraries, mapped
    weights) as the largest of them maps them -- the stubs of one model share nearly the same
    set, so private + shared is what they take on a machine where nothing else maps those pages.
    None when none can be read."""
    found = [m for m in (process_memory(p.pid) for p in procs) if m is not None]
    return _split(found) if found else None


def _split(found: list[ProcessMemory]) -> tuple[int, int]:
    return sum(m.uss for m in found), max(m.rss - m.uss for m in found)


class PeakMemory:
    """Within the block, the largest private and shared memory (``private_and_shared``) and
    summed PSS of processes ``procs`` (psutil.Process), read every ``every`` seconds and once at
    the end: what they hold under load, before an idle instance gives freed memory back.
    ``private``, ``shared`` and ``pss`` are None when ``procs`` is empty or none could be
    read."""

    def __init__(self, procs: list, every: float = 0.25):
        import threading

        self._procs, self._every = procs, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.private: int | None = None
        self.shared: int | None = None
        self.pss: int | None = None

    def _sample(self) -> None:
        found = [m for m in (process_memory(p.pid) for p in self._procs) if m is not None]
        if found:
            private, shared = _split(found)
            self.private = max(self.private or 0, private)
            self.shared = max(self.shared or 0, shared)
            self.pss = max(self.pss or 0, sum(m.pss for m in found))

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            self._sample()

    def __enter__(self) -> "PeakMemory":
        if self._procs:
            self._sample()
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._procs:
            self._stop.set()
            self._thread.join()
            self._sample()


def process_memory(pid: int) -> ProcessMemory | None:
    """PSS, USS and RSS of process ``pid``, from /proc/<pid>/smaps_rollup (None when the process is
    gone or the file cannot be read)."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    kib = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if len(parts) == 2 and parts[1] == "kB":
            kib[key] = int(parts[0])
    if "Pss" not in kib:
        return None
    return ProcessMemory(kib["Pss"] * 1024,
                         (kib.get("Private_Clean", 0) + kib.get("Private_Dirty", 0)) * 1024,
                         kib.get("Rss", 0) * 1024)


def mappings(pid: int) -> list[tuple[str, dict[str, int]]]:
    """Each mapping of process ``pid`` as (path, {"Rss": bytes, "Pss": bytes}), from
    /proc/<pid>/smaps; the path is "" for anonymous memory; [] when the process is gone."""
    try:
        text = Path(f"/proc/{pid}/smaps").read_text()
    except OSError:
        return []
    out: list[tuple[str, dict[str, int]]] = []
    for line in text.splitlines():
        head = line.split(None, 5)
        if head and "-" in head[0] and len(head) >= 5 and ":" not in head[0]:  # a mapping's line
            out.append((head[5] if len(head) == 6 else "", {"Rss": 0, "Pss": 0}))
        elif out and head and head[0][:-1] in out[-1][1]:
            out[-1][1][head[0][:-1]] += int(head[1]) * 1024
    return out


def file_memory(pid: int, file_name: str) -> dict[str, int]:
    """Rss and Pss (bytes) of process ``pid``'s mappings of files named ``file_name`` (e.g. a
    python variant's mapped weights.pt); zeros when it maps none or is gone."""
    total = {"Rss": 0, "Pss": 0}
    for path, kib in mappings(pid):
        if Path(path).name == file_name:
            for key in total:
                total[key] += kib[key]
    return total


def total_memory(procs: Iterable) -> ProcessMemory:
    """PSS and USS summed over ``procs`` (psutil.Process; one that has exited counts 0)."""
    found = [m for m in (process_memory(p.pid) for p in procs) if m is not None]
    return ProcessMemory(sum(m.pss for m in found), sum(m.uss for m in found),
                         sum(m.rss for m in found))


def gpu_memory() -> dict[int, int] | None:
    """GPU memory each process uses, in bytes, as ``nvidia-smi`` lists the compute processes
    (summed over the GPUs); None when there is no nvidia-smi or it fails (no GPU)."""
    tool = shutil.which("nvidia-smi")
    if not tool:
        return None
    try:
        done = subprocess.run([tool, "--query-compute-apps=pid,used_memory",
                               "--format=csv,noheader,nounits"], capture_output=True, text=True,
                              timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_gpu_memory(done.stdout) if done.returncode == 0 else None


def parse_gpu_memory(text: str) -> dict[int, int]:
    """nvidia-smi's ``pid, used_memory`` CSV rows (MiB, no header, no units) -> {pid: bytes}."""
    out: dict[int, int] = {}
    for line in text.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) == 2 and fields[0].isdigit() and fields[1].isdigit():
            out[int(fields[0])] = out.get(int(fields[0]), 0) + int(fields[1]) * 2**20
    return out


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
