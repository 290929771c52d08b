"""Who can reach and control a server gen-repo starts, tried from another host.

The other host is a network namespace this test makes (a veth pair: this machine is 169.254.77.1,
the namespace 169.254.77.2): a client there reaches the server only through a non-loopback
address of this machine, as a host on the network would.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap

import pytest

from generator.serve import control
from tests.integration.conftest import build_fixture, embedded_server, serve_process

pytestmark = pytest.mark.integration

HOST, PEER = "169.254.77.1", "169.254.77.2"
NS = f"grtest{os.getpid() % 100000}"


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def other_host():
    """A network namespace linked to this machine by a veth pair; removed at the end."""
    host_if, peer_if = f"{NS}h"[:15], f"{NS}p"[:15]
    steps = [("netns", "add", NS), ("link", "add", host_if, "type", "veth", "peer", "name", peer_if),
             ("link", "set", peer_if, "netns", NS), ("addr", "add", f"{HOST}/30", "dev", host_if),
             ("link", "set", host_if, "up"),
             ("netns", "exec", NS, "ip", "addr", "add", f"{PEER}/30", "dev", peer_if),
             ("netns", "exec", NS, "ip", "link", "set", peer_if, "up"),
             ("netns", "exec", NS, "ip", "link", "set", "lo", "up")]
    try:
        for step in steps:
            done = _ip(*step)
            # CI runs as root with iproute2: a namespace that cannot be made is a failure
            assert done.returncode == 0, \
                f"cannot make a network namespace (`ip {' '.join(step)}`: {done.stderr.strip()})"
        yield NS
    finally:
        _ip("link", "del", host_if)
        _ip("netns", "del", NS)


def from_other_host(code: str) -> dict:
    """Run ``code`` (Python; it sets ``result``) in the other host's namespace; its result."""
    script = "import json, urllib.request, urllib.error, socket\nresult = {}\n" + REQUEST + \
        textwrap.dedent(code) + "\nprint(json.dumps(result))\n"
    done = subprocess.run(["ip", "netns", "exec", NS, sys.executable, "-c", script],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


REQUEST = """
def request(method, url, body=None, headers={}):
    req = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(),
                                 method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except urllib.error.URLError as e:
        return type(e.reason).__name__
    except OSError as e:
        return type(e).__name__
"""


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    out = tmp_path_factory.mktemp("secure") / "repo"
    build_fixture(out, "tiny_mlp", "python")
    return out


def test_by_default_the_server_is_not_reachable_from_another_host(repo, tmp_path, other_host):
    with embedded_server(repo, tmp_path) as (server, statuses):
        assert statuses["tiny_mlp_python"].state == "READY"
        assert server.http_url.startswith("127.0.0.1:")
        got = from_other_host(f"""
            result["http"] = request("GET", "http://{HOST}:{server.ports.http}/v2/health/ready")
            for name, port in (("grpc", {server.ports.grpc}), ("metrics", {server.ports.metrics})):
                try:
                    socket.create_connection(("{HOST}", port), timeout=5).close()
                    result[name] = "open"
                except OSError as e:
                    result[name] = type(e).__name__
        """)
        assert got == {"http": "ConnectionRefusedError", "grpc": "ConnectionRefusedError",
                       "metrics": "ConnectionRefusedError"}, got


def test_exposed_it_serves_other_hosts_but_model_control_needs_the_key(repo, tmp_path,
                                                                       other_host):
    evil = {"parameters": {"config": json.dumps({"backend": "python"}),
                           "file:1/model.py": base64.b64encode(
                               b"open('/tmp/gen-repo-pwned', 'w').write('x')").decode()}}
    with embedded_server(repo, tmp_path, listen="0.0.0.0") as (server, statuses):
        assert statuses["tiny_mlp_python"].state == "READY"
        base = f"http://{HOST}:{server.ports.http}/v2"
        key = server.key_path.read_text().strip()
        assert stat.S_IMODE(server.key_path.stat().st_mode) == 0o600
        got = from_other_host(f"""
            m = "{base}/models/tiny_mlp_python"
            result["ready"] = request("GET", "{base}/health/ready")
            result["metadata"] = request("GET", m)
            result["config"] = request("GET", m + "/config")
            result["infer"] = request("POST", m + "/infer", {{"inputs": [{{"name": "x",
                "shape": [1, 16], "datatype": "FP32", "data": [0.5] * 16}}]}})
            result["load evil"] = request("POST", "{base}/repository/models/evil/load",
                                          {json.dumps(evil)})
            result["unload"] = request("POST", "{base}/repository/models/tiny_mlp_python/unload",
                                       {{}})
            result["index"] = request("POST", "{base}/repository/index", {{}})
            result["trace"] = request("POST", "{base}/trace/setting", {{"trace_file": "/tmp/x"}})
            result["logging"] = request("POST", "{base}/logging", {{"log_info": False}})
            result["shm"] = request("GET", "{base}/systemsharedmemory/status")
            result["index with key"] = request("POST", "{base}/repository/index", {{}},
                                               {{"{control.HEADER}": "{key}"}})
            result["wrong key"] = request("POST", "{base}/repository/index", {{}},
                                          {{"{control.HEADER}": "guess"}})
        """)
        assert got == {"ready": 200, "metadata": 200, "config": 200, "infer": 200,
                       "load evil": 403, "unload": 403, "index": 403, "trace": 403,
                       "logging": 403, "shm": 403, "index with key": 200,
                       "wrong key": 403}, got
        assert not os.path.exists("/tmp/gen-repo-pwned")
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        client = grpcclient.InferenceServerClient(f"{HOST}:{server.ports.grpc}")
        with pytest.raises(InferenceServerException, match="restricted"):
            client.unload_model("tiny_mlp_python")
        assert client.is_model_ready("tiny_mlp_python")
        assert len(client.get_model_repository_index(
            headers=control.headers(key, "grpc")).models) == 1


def test_serve_says_where_it_listens_and_keeps_the_key_private(repo, tmp_path):
    with serve_process(repo, tmp_path / "server.log") as (proc, lines, ports):
        note = lines.until("listening on ", 240)
        assert note.startswith("listening on 127.0.0.1 (this machine only)")
        assert f"HTTP 127.0.0.1:{ports.http}" in "".join(lines.seen)
        path = control.key_path(ports.http)
        assert str(path) in note and stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.read_text() == control.key_path(ports.grpc).read_text()
        # verify (another process, same user) sends the key where it needs it
        assert control.headers_for(f"127.0.0.1:{ports.grpc}", "grpc")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0, lines.rest()
    assert not path.exists() and not control.key_path(ports.grpc).exists()


def test_a_model_unloaded_through_model_control_is_reported_and_serve_goes_on(repo, tmp_path):
    import shutil

    import tritonclient.http as httpclient

    from tests.integration.conftest import copy_model

    two = tmp_path / "repo"
    shutil.copytree(repo, two)
    copy_model(two, "tiny_mlp_python", "other_python")
    with serve_process(two, tmp_path / "server.log") as (proc, lines, ports):
        lines.until("listening on ", 240)
        client = httpclient.InferenceServerClient(f"127.0.0.1:{ports.http}")
        client.unload_model("other_python",
                            headers=control.headers_for(f"127.0.0.1:{ports.http}", "http"))
        lines.until("other_python was unloaded by a model-control request", 30)
        assert proc.poll() is None
        assert client.is_model_ready("tiny_mlp_python")
        assert not client.is_model_ready("other_python")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0, lines.rest()
