"""Small real server processes for lifecycle tests, and helpers to watch process groups.

`TreeServer` is a managed server whose child answers ``/health`` and, like SGLang, starts a child
of its own (a "scheduler"): the tests can check that a whole tree dies, in a second instead of
the local backend's model load. `run_owner` runs a separate Python process that owns a managed
server, so a test can kill the owner as a user's job would die.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from qwen_sglang.servers import ManagedServer

REPO = Path(__file__).resolve().parents[2]

_TREE = r"""
import http.server, subprocess, sys
scheduler = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print(f"scheduler pid {scheduler.pid}", flush=True)
if sys.argv[2] == "fail":
    raise SystemExit(3)

class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass

http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Health).serve_forever()
"""


class TreeServer(ManagedServer):
    """A server (``/health`` 200) with a child process; ``fail=True`` exits 3 after starting the child."""

    backend = "tree"

    def __init__(self, *, fail: bool = False, **options: object) -> None:
        super().__init__("/tree", startup_timeout=60, **options)  # type: ignore[arg-type]
        self.fail = fail

    def command(self) -> list[str]:
        return [sys.executable, "-c", _TREE, str(self.port), "fail" if self.fail else "serve"]

    def scheduler_pid(self) -> int:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for line in self.logs_tail(50).splitlines():
                if line.startswith("scheduler pid "):
                    return int(line.split()[-1])
            time.sleep(0.05)
        raise AssertionError("the tree server did not report its scheduler:\n" + self.logs_tail())


def _stat(pid: int | str) -> list[bytes] | None:
    """The fields of /proc/PID/stat after the command name (state, ppid, pgrp, ...)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    return stat[stat.rfind(b")") + 2 :].split()


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its reaper does not count)."""
    fields = _stat(pid)
    return fields is not None and fields[0] not in (b"Z", b"X")


def group_members(pgid: int) -> set[int]:
    """The running processes of group ``pgid`` (what ``ps -e -o pgid`` would list, zombies left out)."""
    members = set()
    for entry in os.listdir("/proc"):
        fields = _stat(entry) if entry.isdigit() else None
        if fields is not None and fields[0] not in (b"Z", b"X") and int(fields[2]) == pgid:
            members.add(int(entry))
    return members


def group_alive(pgid: int) -> bool:
    return bool(group_members(pgid))


def session_members(sid: int) -> set[int]:
    """The running processes of session ``sid`` (every process group a command started in it)."""
    members = set()
    for entry in os.listdir("/proc"):
        fields = _stat(entry) if entry.isdigit() else None
        if fields is not None and fields[0] not in (b"Z", b"X") and int(fields[3]) == sid:
            members.add(int(entry))
    return members


def wait_until(condition: object, seconds: float = 30.0) -> bool:
    """Poll ``condition()`` until true or ``seconds`` pass (a bound, not a measured time)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return bool(condition())  # type: ignore[operator]


def run_owner(script: str, *args: str) -> tuple[subprocess.Popen[str], dict[str, object]]:
    """Start ``python -c script`` in its own session; it prints one JSON line once its server is up."""
    proc = subprocess.Popen(
        [sys.executable, "-c", script, *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(timeout=30)
        raise AssertionError(f"the owner exited with {proc.returncode}:\n{proc.stderr.read() if proc.stderr else ''}")
    return proc, json.loads(line)
