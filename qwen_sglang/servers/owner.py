"""What ties managed servers to the Python process that owns them: stopped on every exit path.

`adopt` registers a started server, `release` forgets a stopped one. Registered servers are
stopped by an ``atexit`` hook, and by SIGTERM of the owner through `_SigtermChain`; a forked child
(multiprocessing) inherits the registry but owns none of them, so it starts with an empty one. (An
owner that dies without running Python code, SIGKILL included, is covered by each server's
watchdog, ``qwen_sglang/servers/watchdog.py``.)
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import threading
import weakref
from typing import Any, Protocol

__all__ = ["adopt", "release", "stop_all"]


class _Stoppable(Protocol):
    def stop(self, timeout: float | None = None) -> None: ...


_RUNNING: weakref.WeakSet[_Stoppable] = weakref.WeakSet()


@atexit.register
def stop_all() -> None:
    """Stop every server this process started and has not stopped."""
    for server in list(_RUNNING):
        with contextlib.suppress(Exception):
            server.stop()


os.register_at_fork(after_in_child=_RUNNING.clear)


def adopt(server: _Stoppable) -> None:
    """Stop ``server`` when this process exits or gets SIGTERM (until `release`)."""
    _RUNNING.add(server)
    _SigtermChain.install()


def release(server: _Stoppable) -> None:
    """Forget a stopped ``server``; the SIGTERM handler goes once no server is left."""
    _RUNNING.discard(server)
    if not _RUNNING:
        _SigtermChain.uninstall()


class _SigtermChain:
    """SIGTERM of the owner runs the normal stop, without breaking the application's own handler.

    Installed (main thread only) when a server starts, over SIG_DFL or a Python handler; never
    over SIG_IGN or a handler set outside Python. On SIGTERM it calls the previous handler
    when there is one (the application decides; its exit path stops the servers through
    ``with`` or ``atexit``); over SIG_DFL it stops every running server, then dies of SIGTERM as
    the default would. Put back when the last server stops, unless something replaced it meanwhile.
    """

    previous: Any = None
    installed = False

    @classmethod
    def install(cls) -> None:
        if threading.current_thread() is not threading.main_thread() or cls.installed:
            return
        current = signal.getsignal(signal.SIGTERM)
        if current is signal.SIG_IGN or current is None:
            return
        cls.previous = current
        signal.signal(signal.SIGTERM, cls.handle)
        cls.installed = True

    @classmethod
    def uninstall(cls) -> None:
        if not cls.installed or threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) == cls.handle:
            signal.signal(signal.SIGTERM, cls.previous)
        cls.installed, cls.previous = False, None

    @classmethod
    def handle(cls, signum: int, frame: Any) -> None:
        previous = cls.previous
        if callable(previous):
            previous(signum, frame)
            return
        stop_all()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
