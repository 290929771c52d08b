"""`gen-repo serve` stopped by a real SIGTERM or SIGINT while the embedded server is starting or
loading models, or once it serves: no traceback, exit 130 (interrupted; 0 once serving, as after
Ctrl-C), and no tritonserver or Python-backend process left behind."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import time

import psutil
import pytest

from tests.integration.conftest import Lines, alive, build_fixture, descendants, serve_process

pytestmark = pytest.mark.integration

MODEL = "tiny_mlp_python"


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = tmp_path_factory.mktemp("signals") / "repo"
    build_fixture(repo, "tiny_mlp", "python")
    return repo


def _all_output(lines: Lines) -> str:
    """Everything the process printed (it has exited: the reader reaches the end)."""
    while True:
        try:
            lines.seen.append(lines.queue.get(timeout=2))
        except queue.Empty:
            return "".join(lines.seen)


def _servers_on(port: int) -> list[psutil.Process]:
    """tritonserver processes started for this HTTP port (whoever their parent is now)."""
    return [p for p in psutil.process_iter(["cmdline"])
            if f"--http-port={port}" in " ".join(p.info["cmdline"] or [])]


@pytest.mark.parametrize("moment,line,delay,code", [
    ("starting", "starting tritonserver (embedded) (log", 0.0, 130),
    ("loading", f"loading {MODEL} ...", 0.3, 130),
    ("serving", "Ctrl-C stops the server", 0.0, 0),
])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_stops_cleanly_on_a_signal(repo, tmp_path, sig, moment, line, delay, code):
    procs: list[psutil.Process] = []
    with serve_process(repo, tmp_path / "server.log") as (proc, out, ports):
        try:
            out.until(line, timeout=180)
            time.sleep(delay)
            procs = descendants(proc.pid)  # the server (and its stub, while loading or serving)
            if moment != "starting":
                assert any(p.name() == "tritonserver" for p in procs), procs
            proc.send_signal(sig)
            returned = proc.wait(timeout=90)
        finally:
            left = _servers_on(ports.http)
            for p in descendants(proc.pid) + procs + left:
                if alive([p]):
                    p.kill()
            for server in left:  # an orphaned server's stubs: its process group
                with contextlib.suppress(OSError):
                    os.killpg(server.pid, signal.SIGKILL)
    text = _all_output(out)
    assert returned == code, text
    assert "Traceback" not in text and "internal error" not in text, text
    if code == 130:
        assert "ERROR: interrupted." in text, text
    else:
        assert "stopping the server" in text, text
    assert alive(procs) == [], text
    assert left == [], text
