"""Who may control a server gen-repo starts: the address it listens on, and the key that guards
its model-control APIs.

Loading a model runs its code (a torch.package archive, a model.py sent as a file override), so
the APIs that change what the server runs or writes — model-repository (index, load, unload),
shared-memory, trace and logging — are restricted with Triton's own --http-restricted-api /
--grpc-restricted-protocol: a request must carry the header ``gen-repo-control-key`` (over gRPC
``triton-grpc-protocol-gen-repo-control-key``, Triton's prefix) with a random value made for
each server start. Inference, health, metadata, model config and statistics stay open.
gen-repo's own calls send the key; it lies in a file readable only by the user who started the
server (``key_path``), named by the server's HTTP and gRPC ports.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from pathlib import Path

from ..errors import SpecError
from ..machine import cache_dir

HEADER = "gen-repo-control-key"
RESTRICTED_APIS = ("model-repository", "shared-memory", "trace", "logging")
LOOPBACK = "127.0.0.1"  # the default address: reachable from this machine only


def new_key() -> str:
    return secrets.token_urlsafe(32)


def server_flags(key: str) -> list[str]:
    """tritonserver flags that restrict RESTRICTED_APIS to requests carrying ``key``."""
    apis = ",".join(RESTRICTED_APIS)
    return [f"--http-restricted-api={apis}:{HEADER}={key}",
            f"--grpc-restricted-protocol={apis}:{HEADER}={key}"]


def address_flags(address: str) -> list[str]:
    return [f"--http-address={address}", f"--grpc-address={address}",
            f"--metrics-address={address}"]


def check_address(address: str) -> str:
    """``address`` if it is an IP address this machine could listen on (SpecError otherwise)."""
    try:
        ipaddress.ip_address(address)
    except ValueError as e:
        raise SpecError(f"--listen {address!r} is not an IP address.",
                        f"Use {LOOPBACK} (this machine only, the default), 0.0.0.0 (every"
                        " interface: other hosts can reach the server) or one interface's"
                        " address.") from e
    return address


def client_host(address: str) -> str:
    """The host a client on this machine uses to reach a server listening on ``address``."""
    return LOOPBACK if address in ("0.0.0.0", "::", LOOPBACK) else address


def _key_dir() -> Path:
    return cache_dir() / "control"


def key_path(port: int) -> Path:
    return _key_dir() / f"{port}.key"


def write_key(key: str, ports: tuple[int, ...]) -> Path:
    """Store ``key`` under each of the server's ports, readable by this user only; the path of
    the first (the HTTP port's)."""
    folder = _key_dir()
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    for port in ports:
        path = key_path(port)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key + "\n")
        os.replace(tmp, path)
    return key_path(ports[0])


def remove_key(key: str, ports: tuple[int, ...]) -> None:
    """Remove the key files of a stopped server (only those still holding its key)."""
    for port in ports:
        path = key_path(port)
        try:
            if path.read_text().strip() == key:
                path.unlink()
        except OSError:
            pass


GRPC_PREFIX = "triton-grpc-protocol-"  # Triton reads a gRPC restriction's header under it


def headers(key: str, protocol: str) -> dict[str, str]:
    """The request header that carries ``key`` over ``protocol`` (http or grpc)."""
    return {(GRPC_PREFIX + HEADER) if protocol == "grpc" else HEADER: key}


def headers_for(url: str, protocol: str) -> dict[str, str]:
    """The control header for a server at ``url`` (host:port) that gen-repo started on this
    machine as this user; empty when there is no key for its port."""
    port = url.rsplit(":", 1)[-1]
    if not port.isdigit():
        return {}
    try:
        key = key_path(int(port)).read_text().strip()
    except OSError:
        return {}
    return headers(key, protocol) if key else {}
