"""One request with its retries: what is retried, how long it waits, and when it gives up."""

from __future__ import annotations

import logging
import random
import time
from typing import Any

from qwen_sglang.client.answers import (
    RETRY_STATUS,
    answer_json,
    refuses_priority,
    retry_after,
    status_error,
    transport_error,
    with_note,
)
from qwen_sglang.client.endpoints import Endpoint, Endpoints
from qwen_sglang.client.ops import Flow, Lane, Send, Sleep
from qwen_sglang.client.roles import EMBEDDING, ClientRole
from qwen_sglang.client.transport import Answer
from qwen_sglang.errors import AllEndpointsDownError, APIConnectionError, QwenSGLangError
from qwen_sglang.settings import QwenSGLangSettings

__all__ = ["backoff", "request_flow", "retry_deadline"]

logger = logging.getLogger("qwen_sglang")

_BACKOFF_BASE = 0.5
_BACKOFF_MAX = 8.0
_RETRY_AFTER_MAX = 60.0  # the longest Retry-After honoured when there is no deadline (timeout=None)
_DOWN = frozenset({502, 503, 504})  # the server (or the proxy before it) cannot serve now: try another


def request_flow(
    s: QwenSGLangSettings,
    endpoints: Endpoints,
    method: str,
    path: str,
    payload: Any = None,
    *,
    root: bool = False,
    max_bytes: int | None = None,
    lane: Lane = "bulk",
    role: ClientRole = EMBEDDING,
) -> Flow[Any]:
    """Send one request with retries; return the decoded JSON body.

    Each attempt goes to the endpoint `Endpoints.acquire` picks. Timeouts, connection errors
    and `RETRY_STATUS` answers are retried up to ``max_retries`` times, after the server's
    Retry-After or an exponential `backoff`; where the endpoint itself failed (unreachable,
    502/503/504) and another one is up, the request goes there at once, without a pause or a
    retry counted. Each attempt ends within ``timeout``; all of them, with the pauses between
    them, by the retry deadline (`retry_deadline`): a wait that would end past it is not taken.
    An answer larger than ``max_bytes`` (default: from the request's size) is refused, not retried.
    A connection error names the ``role``'s server and how to start one.
    """
    overall = retry_deadline(s.timeout, s.max_retries)
    attempt = 0
    failed: frozenset[Endpoint] = frozenset()  # endpoints that failed this request since its last pause
    while True:
        endpoint = endpoints.acquire(failed)
        url = (endpoint.root if root else endpoint.url) + path
        deadline = None if s.timeout is None else time.monotonic() + s.timeout
        if deadline is not None and overall is not None:
            deadline = min(deadline, overall)
        try:
            result = yield Send(method, url, payload, deadline=deadline, max_bytes=max_bytes, lane=lane)
        finally:
            endpoints.release(endpoint)
        assert result is not None
        if isinstance(result, Answer) and result.status_code < 300:
            endpoints.succeeded(endpoint)
            return answer_json(result, url)
        error, retry, wait = _failure(s, endpoint, url, result, role)
        if refuses_priority(error):  # the request's fault: the caller sends it again without
            endpoints.succeeded(endpoint)
            raise error
        if isinstance(error, APIConnectionError) or (isinstance(result, Answer) and result.status_code in _DOWN):
            endpoints.failed(endpoint, str(error).split(". ")[0], wait)
            if retry and endpoints.another_up(failed | {endpoint}):
                logger.info("%s %s failed (%s): sending it to another server", method, url, error)
                failed |= {endpoint}
                continue
        elif isinstance(result, Answer):
            endpoints.succeeded(endpoint)  # it answered: it is up
        if not retry or attempt >= s.max_retries:
            raise _final(s, endpoints, error)
        delay = wait if wait is not None else backoff(attempt)
        if overall is None:
            delay = min(delay, _RETRY_AFTER_MAX)
        elif time.monotonic() + delay >= overall:
            asked = f"the server asked to wait {delay:.0f} s (Retry-After)" if wait is not None else "the backoff"
            left = max(overall - time.monotonic(), 0.0)
            note = (
                f"(not retried: {asked}, past the retry deadline, {left:.1f} s from now; it follows from "
                "timeout and max_retries)"
            )
            raise _final(s, endpoints, with_note(error, note))
        logger.info("retrying %s %s in %.2fs after: %s", method, url, delay, error)
        attempt += 1
        failed = frozenset()
        yield Sleep(delay)


def _failure(
    s: QwenSGLangSettings, endpoint: Endpoint, url: str, result: Any, role: ClientRole
) -> tuple[Exception, bool, float | None]:
    """The typed error of a failed attempt, whether it is worth a retry, and the wait the server
    asked for. An answer refused as it arrived (too large) is raised, never retried."""
    if isinstance(result, Answer):
        return status_error(result, url, endpoint.url), result.status_code in RETRY_STATUS, retry_after(result)
    if isinstance(result, QwenSGLangError):
        raise result
    return transport_error(result, url, s.model, s.timeout, role), True, None


def _final(s: QwenSGLangSettings, endpoints: Endpoints, error: Exception) -> Exception:
    """The error a request ends with: for several servers all down, one that names each."""
    if len(endpoints) > 1 and isinstance(error, APIConnectionError) and endpoints.all_down():
        return AllEndpointsDownError(
            f"none of the {len(endpoints)} servers of base_url could be reached or serve the request: "
            f"{endpoints.report()}. Are they running? Check them with `qwen-sglang doctor --base-url URL`",
            url=error.url,
        )
    return explain_dead_server(s, error)


def backoff(attempt: int) -> float:
    """Exponential backoff with full jitter in [base*2^n / 2, base*2^n], capped."""
    ceiling = min(_BACKOFF_MAX, _BACKOFF_BASE * 2.0**attempt)
    return ceiling / 2 + random.random() * ceiling / 2


def retry_deadline(timeout: float | None, max_retries: int) -> float | None:
    """When one request, with all its retries and pauses, must be over (``time.monotonic()``):
    every attempt may take ``timeout`` and every pause the longest backoff (8 s);
    ``None`` without a timeout."""
    if timeout is None:
        return None
    return time.monotonic() + (max_retries + 1) * timeout + max_retries * _BACKOFF_MAX


def explain_dead_server(settings: QwenSGLangSettings, error: Exception) -> Exception:
    """A connection error to a managed server (``settings.server``) that has exited says so,
    with its exit code and log tail."""
    server = settings.server
    if not isinstance(error, APIConnectionError) or server is None:
        return error
    code = server.returncode
    if code is None:
        return error
    pid = f" (pid {server.pid})" if server.pid is not None else ""
    return APIConnectionError(
        f"the managed {server.backend} server at {server.base_url}{pid} exited with code {code}; last lines "
        f"of its log:\n{server.logs_tail(20)}",
        url=error.url,
    )
