"""The three TCP ports a tritonserver listens on (HTTP, gRPC, metrics): checked, and found free.

    Ports(8000, 8001, 8002).check_free()   # PortInUseError naming the taken port and its flag
    free_ports(3)                           # three ports the kernel says are free right now
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from ..errors import PortInUseError, SpecError


@dataclass(frozen=True)
class Ports:
    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002

    FLAGS = {"http": "--http-port", "grpc": "--grpc-port", "metrics": "--metrics-port"}

    def items(self) -> list[tuple[str, int]]:
        return [("http", self.http), ("grpc", self.grpc), ("metrics", self.metrics)]

    def validate(self) -> None:
        for kind, port in self.items():
            if not 0 < port < 65536:
                raise SpecError(f"{self.FLAGS[kind]} {port} is not a TCP port.",
                                "Use a number between 1 and 65535, e.g. 8000.")
        values = [p for _, p in self.items()]
        if len(set(values)) != len(values):
            raise SpecError(f"the HTTP, gRPC and metrics ports must differ; got {values}.",
                            "Pass three different ports, e.g. --http-port 8000 --grpc-port 8001"
                            " --metrics-port 8002.")

    def check_free(self) -> None:
        """Raise PortInUseError naming the first port (and its flag) that is taken."""
        self.validate()
        for kind, port in self.items():
            if not port_is_free(port):
                raise PortInUseError(
                    f"port {port} (the {kind} port) is already in use, so tritonserver cannot"
                    " start on it.",
                    f"Stop whatever listens there (an earlier gen-repo serve? see"
                    f" `ss -ltnp 'sport = :{port}'`) or pass {self.FLAGS[kind]} with a free port.")


def port_is_free(port: int, host: str = "") -> bool:
    """True when a listening socket could bind ``port`` (like tritonserver does, SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_ports(n: int = 3) -> list[int]:
    """n distinct ports that are free right now (the kernel picks them)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()
