"""The server options every benchmark shares: ``--base-url URL`` or ``--serve MODEL``."""

from __future__ import annotations

import argparse
import contextlib
import os
from typing import Any


def add_server_args(parser: argparse.ArgumentParser) -> None:
    """``--base-url`` | ``--serve MODEL`` (exactly one), ``--backend`` and ``--model``."""
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--base-url", help="an embedding server that is already running")
    src.add_argument("--serve", metavar="MODEL", help="start a managed server for this model")
    parser.add_argument("--backend", choices=["local", "sglang"], default="local", help="for --serve")
    parser.add_argument("--model", default=None, help="model name to send (default: the served name)")


#: The pid of the server the last `open_server` started (``None`` for ``--base-url``).
started_pid: int | None = None


def process_cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of a process so far (Linux ``/proc``), or ``None``."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_server(stack: contextlib.ExitStack, args: argparse.Namespace, **options: Any) -> tuple[str, str | None]:
    """Start the ``--serve`` server inside ``stack`` (or take ``--base-url``); return its URL and
    the model name to send (``None`` with ``--base-url`` and no ``--model``: our clients learn
    it; others send ``"default"``). ``options`` go to ``launch_server``."""
    if args.serve:
        from qwen_sglang.servers import launch_server

        server = stack.enter_context(launch_server(args.serve, backend=args.backend, **options))
        global started_pid
        started_pid = server.pid
        return server.base_url, args.model or server.model
    return args.base_url.rstrip("/"), args.model
