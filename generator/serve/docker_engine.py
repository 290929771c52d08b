"""The docker engine the docker route talks to: a client of the one DOCKER_HOST (or the default
socket) names, or an EngineError saying where nothing answered and how to start one.

    connect()          a docker client whose engine answered a ping

The engine itself is the user's (a system service). The tests make one, and the images they serve
with in place of the NGC image, with tests/docker_standin.py. Every container gen-repo runs uses
the host's network (docker_server.py); ENGINE_FLAGS are the flags of an engine that never creates
a bridge or a private-range address.
"""

from __future__ import annotations

import os

from ..errors import ToolError

ENGINE_FLAGS = ("--bridge=none", "--iptables=false", "--ip-masq=false")
SOCKET = "/var/run/docker.sock"


class EngineError(ToolError):
    """No docker engine answers, and none could be started here."""


def _sdk():
    try:
        import docker
    except ImportError as e:
        raise ToolError("the docker route needs the docker Python SDK, which is not installed.",
                        "pip install docker (it is pinned in requirements.txt).") from e
    return docker


def engine_address() -> str:
    return os.environ.get("DOCKER_HOST") or f"unix://{SOCKET}"


def connect(timeout: float = 30.0):
    """A docker client whose engine answered a ping; EngineError naming the address otherwise."""
    docker = _sdk()
    from docker.errors import DockerException

    where = engine_address()
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except (DockerException, OSError) as e:
        raise EngineError(
            f"no docker engine is reachable at {where} ({_short(e)}).",
            "Start one (`sudo systemctl start docker`, or as root: dockerd "
            + " ".join(ENGINE_FLAGS) + "), check it with `docker info`, and unset DOCKER_HOST"
            " unless it names the engine you want; or serve without --docker (the embedded"
            " server runs the Python-backend models).") from e
    return client


def _short(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text if len(text) < 300 else text[:300] + "..."
