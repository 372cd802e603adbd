"""The client's HTTP connections: pooled per process, per address and pool size, and per event loop."""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from dataclasses import dataclass, field

import httpx

from qwen_sglang.client.ops import Lane
from qwen_sglang.client.transport import new_async_client, new_sync_client
from qwen_sglang.errors import ConfigurationError

__all__ = ["Connections"]


class Connections:
    """The httpx clients of one `EmbeddingClient` (its own, or the ones it was given).

    Its own clients come in two lanes (`qwen_sglang.client.ops.Lane`): bulk requests share one
    pool, single queries have another, so a query never waits for a connection behind bulk work.
    A sync client is made for the current ``base_url`` (the environment's proxy depends on it)
    and pool size, and made again when either changes (the old one is closed with the client:
    calls in flight may still use it). Async clients are made per event loop: one bound to a
    closed loop (a second ``asyncio.run()``, a new Jupyter cell loop) would fail with "Event loop
    is closed". Connections belong to the process that opened them (`after_fork`). Given httpx
    clients serve both lanes.
    """

    def __init__(self, given: httpx.Client | None, given_async: httpx.AsyncClient | None, owner: str) -> None:
        #: The class the user holds, as messages name it.
        self.owner = owner
        self._given = given
        self._given_async = given_async
        self.given = given is not None or given_async is not None
        self._lock = threading.Lock()
        #: Per lane: the client and what it was made for (``base_url``, pool size).
        self._sync: dict[Lane, tuple[tuple[str, int], httpx.Client]] = {}
        self._retired: list[httpx.Client] = []
        #: Per event loop and lane: the pool size and client; the ones replaced (closed by aclose).
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopClients]
        self._async = weakref.WeakKeyDictionary()
        self._pid = self._given_pid = os.getpid()

    def sync(self, base_url: str, size: int, lane: Lane) -> httpx.Client:
        self._check_process()
        with self._lock:
            if self._given is not None:
                self._refuse_given_after_fork()
                return self._given
            known = self._sync.get(lane)
            if known is None or known[0] != (base_url, size):
                if known is not None:
                    self._retired.append(known[1])
                known = ((base_url, size), new_sync_client(_limits(size), *base_url.split(",")))
                self._sync[lane] = known
            return known[1]

    def async_(self, size: int, lane: Lane) -> httpx.AsyncClient:
        self._check_process()
        if self._given_async is not None:
            self._refuse_given_after_fork()
            return self._given_async
        loop = asyncio.get_running_loop()
        clients = self._async.get(loop)
        if clients is None:
            clients = self._async[loop] = _LoopClients()
        known = clients.lanes.get(lane)
        if known is None or known[0] != size:
            if known is not None:
                clients.retired.append(known[1])
            known = clients.lanes[lane] = (size, new_async_client(_limits(size)))
        return known[1]

    def close(self) -> None:
        self._check_process()
        with self._lock:
            for client in (*(c for _, c in self._sync.values()), self._given, *self._retired):
                if client is not None:
                    client.close()
            self._given = None
            self._sync = {}
            self._retired = []

    async def aclose(self) -> None:
        self._check_process()
        clients = self._async.pop(asyncio.get_running_loop(), None)
        if clients is not None:
            for client in (*(c for _, c in clients.lanes.values()), *clients.retired):
                await client.aclose()

    def _check_process(self) -> None:
        # The fork hook has normally run already; this catches forks it did not see.
        if self._pid != os.getpid():
            self.after_fork()

    def after_fork(self) -> None:
        """In a forked child: forget the parent's connections and locks.

        A pooled keep-alive connection is one socket shared by both processes after a fork: both
        would write requests on it and read each other's answers. The child drops the pools
        without closing them (closing could end the parent's TLS session) and makes its own on
        first use; the lock is new too (one held by a parent thread would never be released here).
        """
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._sync = {}
        self._retired = []
        self._async = weakref.WeakKeyDictionary()

    def _refuse_given_after_fork(self) -> None:
        if self._given_pid != os.getpid():
            raise ConfigurationError(
                f"this {self.owner} was given an httpx client (http_client= / http_async_client=) before "
                "os.fork(): its pooled connections are shared with the parent process, which would read this "
                f"process's answers. Make the {self.owner} (and the httpx client) in the child, or leave "
                "http_client out: the client's own connections are rebuilt in each process"
            )


@dataclass
class _LoopClients:
    """The async clients of one event loop."""

    lanes: dict[Lane, tuple[int, httpx.AsyncClient]] = field(default_factory=dict)
    retired: list[httpx.AsyncClient] = field(default_factory=list)


def _limits(size: int) -> httpx.Limits:
    return httpx.Limits(max_connections=size + 4, max_keepalive_connections=size + 4)
