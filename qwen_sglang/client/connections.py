"""The client's HTTP connections: pooled per process, per address and pool size, and per event loop."""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from typing import Any

import httpx

from qwen_sglang.client.transport import new_async_client, new_sync_client
from qwen_sglang.errors import ConfigurationError

__all__ = ["Connections"]


class Connections:
    """The httpx clients of one `EmbeddingClient` (its own, or the ones it was given).

    Its own sync client is made for the current ``base_url`` (the environment's proxy depends
    on it) and pool size, and made again when either changes (the old one is closed with the
    client: calls in flight may still use it). Async clients are made per event loop: one bound
    to a closed loop (a second ``asyncio.run()``, a new Jupyter cell loop) would fail with
    "Event loop is closed". Connections belong to the process that opened them (`after_fork`).
    """

    def __init__(self, given: httpx.Client | None, given_async: httpx.AsyncClient | None) -> None:
        self._given = given
        self._given_async = given_async
        self.given = given is not None or given_async is not None
        self._lock = threading.Lock()
        self._sync: httpx.Client | None = None
        self._sync_key: tuple[str, int] | None = None
        self._retired: list[httpx.Client] = []
        #: Per event loop: its pool size and client, and the smaller ones it replaced (closed by aclose).
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[int, httpx.AsyncClient, list[Any]]]
        self._async = weakref.WeakKeyDictionary()
        self._pid = self._given_pid = os.getpid()

    def sync(self, base_url: str, size: int) -> httpx.Client:
        self._check_process()
        with self._lock:
            if self._given is not None:
                self._refuse_given_after_fork()
                return self._given
            if self._sync is None or self._sync_key != (base_url, size):
                if self._sync is not None:
                    self._retired.append(self._sync)
                self._sync, self._sync_key = new_sync_client(_limits(size), base_url), (base_url, size)
            return self._sync

    def async_(self, size: int) -> httpx.AsyncClient:
        self._check_process()
        if self._given_async is not None:
            self._refuse_given_after_fork()
            return self._given_async
        loop = asyncio.get_running_loop()
        known = self._async.get(loop)
        if known is None or known[0] != size:
            retired = [*known[2], known[1]] if known is not None else []
            known = (size, new_async_client(_limits(size)), retired)
            self._async[loop] = known
        return known[1]

    def close(self) -> None:
        self._check_process()
        with self._lock:
            for client in (self._sync, self._given, *self._retired):
                if client is not None:
                    client.close()
            self._sync = self._given = self._sync_key = None
            self._retired = []

    async def aclose(self) -> None:
        self._check_process()
        known = self._async.pop(asyncio.get_running_loop(), None)
        if known is not None:
            for client in (known[1], *known[2]):
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
        self._sync = self._sync_key = None
        self._retired = []
        self._async = weakref.WeakKeyDictionary()

    def _refuse_given_after_fork(self) -> None:
        if self._given_pid != os.getpid():
            raise ConfigurationError(
                "this EmbeddingClient was given an httpx client (http_client= / http_async_client=) before "
                "os.fork(): its pooled connections are shared with the parent process, which would read this "
                "process's answers. Make the EmbeddingClient (and the httpx client) in the child, or leave "
                "http_client out: the client's own connections are rebuilt in each process"
            )


def _limits(size: int) -> httpx.Limits:
    return httpx.Limits(max_connections=size + 4, max_keepalive_connections=size + 4)
