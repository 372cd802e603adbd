"""The watchdog of a managed server: its process group dies with the Python process that owns it.

`qwen_sglang.servers.ManagedServer.start` runs this file as a script (``python -I watchdog.py
OWNER_PID GRACE``, standard library only, nothing of the package imported) *before* the server,
as the leader of a new process group; the server then joins that group. The watchdog:

- holds the group: while it lives the group id cannot be reused, so the owner can always signal
  the group, even after the server itself has exited and been reaped (``getpgid`` of a reaped pid
  fails, a remembered group id does not);
- ignores SIGTERM, SIGINT and SIGHUP, so a stop that signals the whole group reaches the server
  and its children first, and the final SIGKILL of the group ends the watchdog too;
- waits for the owner to exit (a pidfd on Linux: the *process*, not the thread that started the
  server, which is what ``PR_SET_PDEATHSIG`` would watch; elsewhere it polls ``getppid``), then
  stops the group as ``ManagedServer.stop`` does: SIGTERM, up to GRACE seconds for the members
  to exit, SIGKILL.

`group_members` is also used by the owner's own stop.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time

__all__ = ["group_members", "main", "stop_group", "wait_for_exit_of"]


def group_members(pgid: int) -> set[int] | None:
    """Pids of the live (not zombie) processes of group ``pgid``; None where /proc is missing."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    members: set[int] = set()
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:  # exited meanwhile
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 2 and fields[0] not in (b"Z", b"X") and int(fields[2]) == pgid:
            members.add(int(entry))
    return members


def stop_group(pgid: int, grace: float, *, keep: frozenset[int] = frozenset()) -> None:
    """SIGTERM group ``pgid``, wait up to ``grace`` s for its members (other than ``keep``), SIGKILL it."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        members = group_members(pgid)
        if members is not None and not members - keep:
            break
        time.sleep(0.05)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def wait_for_exit_of(owner: int) -> None:
    """Block until process ``owner``, this process's parent, has exited."""
    if os.getppid() != owner:
        return
    pidfd_open = getattr(os, "pidfd_open", None)
    fd = None
    if pidfd_open is not None:
        try:
            fd = pidfd_open(owner)
        except OSError:
            fd = None
    # Opened first, checked second: if the owner is still our parent now, the pidfd names it
    # (not another process that reused its pid).
    if fd is not None and os.getppid() == owner:
        select.select([fd], [], [])
        os.close(fd)
        return
    while os.getppid() == owner:
        time.sleep(0.25)


def main(argv: list[str]) -> int:
    owner, grace = int(argv[1]), float(argv[2])
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    pgid = os.getpgrp()
    if pgid != os.getpid():  # started by hand, not as a group leader: nothing to guard
        return 2
    wait_for_exit_of(owner)
    sys.stderr.write(f"qwen-sglang watchdog: process {owner} exited; stopping its server (group {pgid})\n")
    sys.stderr.flush()
    stop_group(pgid, grace, keep=frozenset({os.getpid()}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
