"""The shells' IO: drive a flow's ops over pooled HTTP connections, sync or async, and fan out.

`Driver` is what every client of the package (`qwen_sglang.EmbeddingClient`,
`qwen_sglang.RerankClient`) drives its engine's flows with: `Driver.run` answers each op with
``httpx.Client`` and ``time.sleep``, `Driver.arun` with ``httpx.AsyncClient`` and
``asyncio.sleep``; `Driver.gather` and `Driver.agather` run several flows at most ``limit`` at a
time (a thread pool, or tasks under a semaphore), handing each result over as it arrives and
raising the first failure as soon as it is seen. Connections are pooled per process, per address
and size, and per event loop (`Connections`).
"""

from __future__ import annotations

import asyncio
import base64
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Any, TypeVar

import httpx

from qwen_sglang._version import __version__
from qwen_sglang.client.ops import Flow, Result, Send, Sleep
from qwen_sglang.client.transport import ACCEPT_ENCODING, aexchange, exchange, new_async_client, new_sync_client
from qwen_sglang.errors import ConfigurationError, MalformedResponseError
from qwen_sglang.settings import QwenSGLangSettings

__all__ = ["Connections", "Driver", "request_headers"]

T = TypeVar("T")

_DEFAULT_ANSWER = 32 << 20  # requests that do not say what they need: this plus 16x the request


def request_headers(s: QwenSGLangSettings) -> dict[str, str]:
    """The headers of one request, the credentials among them (made per request)."""
    headers = {"User-Agent": f"qwen-sglang/{__version__}", "Accept-Encoding": ACCEPT_ENCODING}
    if s.default_headers:
        headers.update(s.default_headers)
    if s.api_key is not None:
        headers["Authorization"] = "Bearer " + s.api_key.get_secret_value()
    elif s.url_credentials is not None:
        basic = base64.b64encode(s.url_credentials.get_secret_value().encode("utf-8")).decode("ascii")
        headers["Authorization"] = "Basic " + basic
    return headers


class Driver:
    """Runs flows for one client: the only IO of the package's clients.

    Args:
        settings: Returns the client's current settings (read at every request: the address,
            the credentials and the timeout in force).
        pool_size: Returns how many connections to keep (the most requests in flight).
        http_client / http_async_client: Given httpx clients, used instead of the driver's own.
        owner: The class name errors mention (``"EmbeddingClient"``).
        on_fork: Called in a forked child, for the client's own locks (see `Connections.after_fork`).
    """

    def __init__(
        self,
        settings: Callable[[], QwenSGLangSettings],
        pool_size: Callable[[], int],
        http_client: httpx.Client | None = None,
        http_async_client: httpx.AsyncClient | None = None,
        *,
        owner: str = "client",
        on_fork: Callable[[], None] | None = None,
    ) -> None:
        self._settings = settings
        self._on_fork = on_fork
        self._pool_size = pool_size
        self.connections = Connections(http_client, http_async_client, owner)
        _LIVE_DRIVERS.add(self)

    @property
    def given(self) -> bool:
        """Whether httpx clients were given (such a client cannot be pickled)."""
        return self.connections.given

    def _request(self, http: httpx.Client | httpx.AsyncClient, op: Send) -> tuple[httpx.Request, int, float | None]:
        """The request of ``op``, its answer's size bound and its deadline. The Authorization
        header is made here, per request, from the settings' secret: no plain copy is kept."""
        left = None if op.deadline is None else max(op.deadline - time.monotonic(), 0.001)
        headers = request_headers(self._settings())
        request = http.build_request(op.method, op.url, json=op.payload, headers=headers, timeout=httpx.Timeout(left))
        limit = op.max_bytes if op.max_bytes is not None else _DEFAULT_ANSWER + 16 * len(request.content)
        return request, limit, op.deadline

    def run(self, flow: Flow[T]) -> T:
        """Drive ``flow`` to its end in this thread; return its value (or raise its error)."""
        result: Result = None
        while True:
            try:
                op = flow.send(result)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            if isinstance(op, Sleep):
                time.sleep(op.seconds)
                result = None
                continue
            http = self.connections.sync(self._settings().base_url, self._pool_size())
            try:
                result = exchange(http, *self._request(http, op))
            except (httpx.HTTPError, MalformedResponseError) as exc:
                result = exc

    async def arun(self, flow: Flow[T]) -> T:
        """Async `run`."""
        result: Result = None
        while True:
            try:
                op = flow.send(result)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            if isinstance(op, Sleep):
                await asyncio.sleep(op.seconds)
                result = None
                continue
            http = self.connections.async_(self._pool_size())
            try:
                result = await aexchange(http, *self._request(http, op))
            except (httpx.HTTPError, MalformedResponseError) as exc:
                result = exc

    def gather(self, flows: Sequence[Flow[T]], limit: int, done: Callable[[int, T], None]) -> None:
        """Run ``flows``, at most ``limit`` at a time (threads); ``done(k, value)`` as flow ``k``
        ends. The first failure is raised as soon as it is seen; flows not started are dropped."""
        workers = min(limit, len(flows))
        if workers <= 1:
            for k, flow in enumerate(flows):
                done(k, self.run(flow))
            return
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="qwen-sglang-client")
        try:
            futures = {pool.submit(self.run, flow): k for k, flow in enumerate(flows)}
            pending = set(futures)
            while pending:
                # FIRST_COMPLETED: progress advances as each request finishes, and the first
                # failure is raised as soon as it is seen (the rest are cancelled below).
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    done(futures[fut], fut.result())
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    async def agather(self, flows: Sequence[Flow[T]], limit: int, done: Callable[[int, T], None]) -> None:
        """Async `gather` (tasks under a semaphore; the first failure cancels the rest)."""
        semaphore = asyncio.Semaphore(limit)

        async def one(k: int, flow: Flow[T]) -> None:
            async with semaphore:
                value = await self.arun(flow)
            done(k, value)

        try:
            async with asyncio.TaskGroup() as group:
                for k, flow in enumerate(flows):
                    group.create_task(one(k, flow))
        except BaseExceptionGroup as eg:
            raise eg.exceptions[0] from None

    def close(self) -> None:
        """Close the sync connections (async ones close with their loop, or `aclose`)."""
        self.connections.close()

    async def aclose(self) -> None:
        """Close the async connections of the running event loop."""
        await self.connections.aclose()

    def after_fork(self) -> None:
        """In a forked child: new connections and locks (the parent's are not this process's)."""
        self.connections.after_fork()
        if self._on_fork is not None:
            self._on_fork()


# ============================================================================================
# Connections: pooled per process, per address and size, and per event loop
# ============================================================================================
class Connections:
    """The httpx clients of one client (its own, or the ones it was given).

    Its own sync client is made for the current ``base_url`` (the environment's proxy depends
    on it) and pool size, and made again when either changes (the old one is closed with the
    client: calls in flight may still use it). Async clients are made per event loop: one bound
    to a closed loop (a second ``asyncio.run()``, a new Jupyter cell loop) would fail with
    "Event loop is closed". Connections belong to the process that opened them (`after_fork`).
    """

    def __init__(self, given: httpx.Client | None, given_async: httpx.AsyncClient | None, owner: str) -> None:
        self._given = given
        self._given_async = given_async
        self._owner = owner
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
                f"this {self._owner} was given an httpx client (http_client= / http_async_client=) before "
                "os.fork(): its pooled connections are shared with the parent process, which would read this "
                f"process's answers. Make the {self._owner} (and the httpx client) in the child, or leave "
                "http_client out: the client's own connections are rebuilt in each process"
            )


def _limits(size: int) -> httpx.Limits:
    return httpx.Limits(max_connections=size + 4, max_keepalive_connections=size + 4)


# ============================================================================================
# Processes: connections belong to the process that opened them
# ============================================================================================
_LIVE_DRIVERS: weakref.WeakSet[Driver] = weakref.WeakSet()


def _forget_connections_after_fork() -> None:
    for driver in list(_LIVE_DRIVERS):
        driver.after_fork()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_forget_connections_after_fork)
