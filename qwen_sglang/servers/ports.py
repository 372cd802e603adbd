"""Where a server listens, and the two lines every server of this package says about it.

Shared by the managed launchers, the local backends (embedding and reranker) and
``qwen-sglang serve``: a free port, whether one is taken (and the error that names the way out),
the warning for a public bind without a key, and SGLang's ready line.
"""

from __future__ import annotations

import logging
import re
import socket

from qwen_sglang.errors import ServerStartError

__all__ = [
    "PORT_TAKEN",
    "port_taken",
    "LOCAL_HOSTS",
    "MAX_SGLANG_PORT",
    "READY_LINE",
    "free_port",
    "port_in_use",
    "port_in_use_message",
    "print_ready_line",
    "warn_if_public",
]

#: Bind addresses only this machine can reach.
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")

#: What SGLang prints once it serves; every backend here prints it too (`print_ready_line`), so
#: scripts that wait for it work with both.
READY_LINE = "The server is fired up and ready to roll!"

#: SGLang derives a gRPC port as ``port + 10000`` and refuses to start when that exceeds 65535
#: (seen with 0.5.15: "SGLANG_GRPC_PORT (67049) must be between 1 and 65535").
MAX_SGLANG_PORT = 55535


def warn_if_public(host: str, has_key: bool, log: logging.Logger) -> None:
    """Log a warning when ``host`` is reachable from other machines and no API key protects it."""
    if host not in LOCAL_HOSTS and not has_key:
        log.warning("binding %s without an API key: anyone who can reach this port can use the server", host)


def print_ready_line() -> None:
    """Print `READY_LINE` on stdout, flushed (what launchers and scripts wait for)."""
    print(READY_LINE, flush=True)


#: A server log saying its port was taken: SGLang's (uvicorn's) "address already in use" /
#: errno 98, and the local backend's own `port_in_use_message`.
PORT_TAKEN = r"address already in use|errno 98|is already in use \(another server\?\)"


def port_taken(log: str) -> bool:
    """Whether a server's log says it could not bind its port (any backend's wording)."""
    return re.search(PORT_TAKEN, log.lower()) is not None


def port_in_use_message(host: str, port: int) -> str:
    """The error for a busy port, with the two ways out."""
    return (
        f"port {port} on {host} is already in use (another server?): choose another port, or let a "
        "free one be picked (--port 0 on the command line, no port= in Python)"
    )


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def free_port(host: str = "127.0.0.1", *, max_port: int = 65535) -> int:
    """A TCP port that is free on ``host`` right now (and not above ``max_port``)."""
    for _ in range(200):
        with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port <= max_port:
            return port
    for port in range(20000, max_port):  # pragma: no cover - the OS kept giving high ports
        if not port_in_use(host, port):
            return port
    raise ServerStartError(f"no free port at or below {max_port} on {host}")  # pragma: no cover


def port_in_use(host: str, port: int) -> bool:
    """Whether a server could not bind ``port``. SO_REUSEADDR as uvicorn and SGLang set it, so a
    port in TIME_WAIT after a stopped server counts as free while a listening one does not."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False
