"""The servers one client spreads its requests over (``base_url`` with several URLs), and what
it knows of their health (no IO: `qwen_sglang.client.retries.request_flow` asks and reports).

Each request attempt takes the endpoint with the fewest requests in flight (ties: the one picked
longest ago, so equal servers take turns), among those not marked down. An endpoint is marked down when it
cannot be reached or answers 502/503/504: for 1 s, doubling with each failure in a row up to 30 s
(or as long as its Retry-After asks, within that bound). Once that time has passed it is probed
again by one request at a time; an answer marks it up. When every endpoint is down, the one due
back first is tried (a lone server keeps being retried as before).

The lock rule of `qwen_sglang.client.state` holds: `Endpoints` changes only under its own lock,
for a few lines, never across a request.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from qwen_sglang._urls import root_url

__all__ = ["Endpoint", "Endpoints"]

_DOWN_FIRST = 1.0
_DOWN_MAX = 30.0


@dataclass(eq=False)
class Endpoint:
    """One server: its URL, and what the client saw of it."""

    url: str
    root: str = ""
    in_flight: int = 0
    failures: int = 0  # failed attempts in a row (0: up)
    down_until: float = 0.0  # ``time.monotonic()`` before which it gets no request (unless all are down)
    last_error: str = ""
    turn: int = 0  # when it was last picked (equal load: the longest unpicked goes next)

    def __post_init__(self) -> None:
        self.root = root_url(self.url)


class Endpoints:
    """The endpoints of one client, with their load and health, shared by all its calls."""

    def __init__(self, urls: tuple[str, ...]) -> None:
        self._lock = threading.Lock()
        self.all = tuple(Endpoint(url) for url in urls)
        self._turns = 0

    def __len__(self) -> int:
        return len(self.all)

    def acquire(self, avoid: frozenset[Endpoint] = frozenset()) -> Endpoint:
        """The endpoint for the next attempt, counted in flight until `release`: the least busy
        of those up (not in ``avoid``, which already failed this request), else the one due back
        first."""
        now = time.monotonic()
        with self._lock:
            ready = [e for e in self.all if e not in avoid and _ready(e, now)]
            if ready:  # the least busy; among those, the one that waited longest
                chosen = min(ready, key=lambda e: (e.in_flight, e.turn))
            else:
                chosen = min(self.all, key=lambda e: (e in avoid, e.down_until, e.in_flight))
            self._turns += 1
            chosen.turn = self._turns
            chosen.in_flight += 1
            return chosen

    def release(self, endpoint: Endpoint) -> None:
        with self._lock:
            endpoint.in_flight -= 1

    def succeeded(self, endpoint: Endpoint) -> None:
        """It answered: it is up."""
        with self._lock:
            endpoint.failures = 0
            endpoint.down_until = 0.0

    def failed(self, endpoint: Endpoint, error: str, wait: float | None = None) -> None:
        """It could not be reached or said it cannot serve: down for a while (``wait``: the
        server's Retry-After, bounded)."""
        with self._lock:
            endpoint.failures += 1
            pause = min(_DOWN_MAX, _DOWN_FIRST * 2.0 ** (endpoint.failures - 1))
            if wait is not None:
                pause = min(max(wait, pause), _DOWN_MAX)
            endpoint.down_until = time.monotonic() + pause
            endpoint.last_error = error

    def another_up(self, avoid: frozenset[Endpoint]) -> bool:
        """Whether an endpoint not in ``avoid`` can take a request now."""
        now = time.monotonic()
        with self._lock:
            return any(e not in avoid and _ready(e, now) for e in self.all)

    def all_down(self) -> bool:
        """Whether every endpoint failed its last attempt."""
        with self._lock:
            return all(e.failures > 0 for e in self.all)

    def report(self) -> str:
        """Each endpoint with the last error seen there (for an error message)."""
        with self._lock:
            return "; ".join(f"{e.url}: {e.last_error or 'no answer'}" for e in self.all)

    def after_fork(self) -> None:
        """In a forked child: nothing is in flight there, and a lock held by a thread of the
        parent would never be released."""
        self._lock = threading.Lock()
        for endpoint in self.all:
            endpoint.in_flight = 0


def _ready(endpoint: Endpoint, now: float) -> bool:
    """Up, or down but due for a probe (one request at a time)."""
    if endpoint.failures == 0:
        return True
    return endpoint.down_until <= now and endpoint.in_flight == 0
