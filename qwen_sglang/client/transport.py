"""One HTTP exchange, bounded in time and in size: the only IO of `qwen_sglang.client`.

``timeout`` bounds a whole exchange (connect, send, the answer's headers and all of its body),
not each socket read: a server dripping a byte every half second must not hold a caller for
minutes. The async path wraps the exchange in ``asyncio.timeout``. The sync path cannot cancel a
blocking read, so its connections run on a network backend that gives every socket operation only
the time left until the calling request's deadline (`_DeadlineBackend`): a server dripping the
*headers* is cut off as surely as one dripping the body.

The answer body is read as it arrives and refused once larger than the request can need (the
caller's ``limit``); gzip and deflate are decoded here, at most ``limit`` bytes at a time, so a
compressed bomb never expands in memory (httpx would expand a whole network read at once, and
decodes zstd or brotli too when those packages are installed).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
import urllib.request
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

from qwen_sglang.errors import MalformedResponseError

__all__ = ["ACCEPT_ENCODING", "Answer", "aexchange", "exchange", "new_async_client", "new_sync_client"]

#: What the client asks for and decodes itself (bounded); any other content coding is refused.
ACCEPT_ENCODING = "gzip, deflate"

#: The deadline (``time.monotonic()``) of the request this thread is making, for the sync backend.
_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("qwen_sglang_deadline", default=None)


@dataclass(frozen=True)
class Answer:
    """An HTTP answer read whole: its status, headers and decoded body."""

    status_code: int
    headers: httpx.Headers
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


class _Body:
    """Collects a body as it arrives, decoding gzip/deflate; refuses more than ``limit`` bytes."""

    def __init__(self, response: httpx.Response, limit: int) -> None:
        self._url = str(response.request.url)
        self._limit = limit
        self._parts: list[bytes] = []
        self._size = 0
        coding = response.headers.get("content-encoding", "").strip().lower()
        self._zlib: Any = None
        if coding in ("gzip", "x-gzip", "deflate"):
            self._zlib = zlib.decompressobj(zlib.MAX_WBITS | 32)  # a gzip or zlib header
        elif coding not in ("", "identity"):
            raise MalformedResponseError(
                f"{self._url} answered with Content-Encoding {coding!r}, which the client did not ask for "
                f"(it accepts {ACCEPT_ENCODING}): is a proxy between the client and the server rewriting answers?",
                url=self._url,
            )
        self._status = response.status_code
        self._headers = response.headers

    def take_decoded(self, content: bytes) -> None:
        """A body the transport already holds decoded (an in-memory test transport)."""
        self._zlib = None
        self._add(content)

    def feed(self, raw: bytes) -> None:
        if self._zlib is None:
            self._add(raw)
            return
        data = raw
        while data and not self._zlib.eof:
            try:
                self._add(self._zlib.decompress(data, self._limit - self._size + 1))
            except zlib.error as exc:
                raise MalformedResponseError(
                    f"{self._url} sent a compressed body that does not decode ({exc})", url=self._url
                ) from None
            data = self._zlib.unconsumed_tail

    def _add(self, part: bytes) -> None:
        self._size += len(part)
        if self._size > self._limit:
            raise MalformedResponseError(
                f"the answer from {self._url} is larger than {self._limit:,} bytes (decoded), more than this "
                "request can need: refused before reading further (is something between the client and the "
                "server sending another answer?)",
                url=self._url,
            )
        if part:
            self._parts.append(part)

    def answer(self) -> Answer:
        if self._zlib is not None:
            self._add(self._zlib.flush())
            if not self._zlib.eof:
                raise MalformedResponseError(f"{self._url} sent a compressed body that ends early", url=self._url)
        return Answer(self._status, self._headers, b"".join(self._parts))


def _past(deadline: float | None, request: httpx.Request) -> None:
    if deadline is not None and time.monotonic() >= deadline:
        raise httpx.ReadTimeout("the request's deadline passed", request=request)


def exchange(http: httpx.Client, request: httpx.Request, limit: int, deadline: float | None) -> Answer:
    """Send ``request`` and read its answer whole, by ``deadline`` (monotonic) and within ``limit`` bytes."""
    token = _DEADLINE.set(deadline)
    try:
        response = http.send(request, stream=True)
        try:
            body = _Body(response, limit)
            if response.is_stream_consumed:  # a transport that answered from memory (tests)
                body.take_decoded(response.content)
            else:
                for chunk in response.iter_raw():
                    body.feed(chunk)
                    _past(deadline, request)  # transports given by the caller read without the backend
            return body.answer()
        finally:
            response.close()
    finally:
        _DEADLINE.reset(token)


async def aexchange(http: httpx.AsyncClient, request: httpx.Request, limit: int, deadline: float | None) -> Answer:
    """Async `exchange` (the whole exchange runs under ``asyncio.timeout``)."""
    left = None if deadline is None else max(0.0, deadline - time.monotonic())
    try:
        async with asyncio.timeout(left):
            response = await http.send(request, stream=True)
            try:
                body = _Body(response, limit)
                if response.is_stream_consumed:
                    body.take_decoded(response.content)
                else:
                    async for chunk in response.aiter_raw():
                        body.feed(chunk)
                return body.answer()
            finally:
                await response.aclose()
    except TimeoutError:
        raise httpx.ReadTimeout("the request's deadline passed", request=request) from None


# --------------------------------------------------------------------------------------------
# The sync network backend: every socket operation ends by the request's deadline
# --------------------------------------------------------------------------------------------
def _time_left(timeout: float | None, expired: type[Exception]) -> float | None:
    deadline = _DEADLINE.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise expired("the request's deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    _PIECE = 64 * 1024  # writes are split so that the deadline is checked between pieces

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _time_left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        for start in range(0, len(buffer), self._PIECE):
            self._stream.write(buffer[start : start + self._PIECE], _time_left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        left = _time_left(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, left))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self) -> None:
        self._backend = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        left = _time_left(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._backend.connect_tcp(host, port, left, local_address, socket_options))

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:  # pragma: no cover - the client speaks TCP
        left = _time_left(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._backend.connect_unix_socket(path, left, socket_options))

    def sleep(self, seconds: float) -> None:  # pragma: no cover - httpcore sleeps only between its own retries
        self._backend.sleep(seconds)


#: httpcore's errors as httpx's (what the client and its callers catch), most specific first.
_ERRORS: tuple[tuple[type[Exception], type[httpx.HTTPError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.ProxyError, httpx.ProxyError),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.ProtocolError, httpx.ProtocolError),
)


@contextlib.contextmanager
def _as_httpx_errors() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        for core, mapped in _ERRORS:
            if isinstance(exc, core):
                raise mapped(str(exc) or type(exc).__name__) from exc
        raise


class _CoreBody(httpx.SyncByteStream):
    def __init__(self, stream: Iterable[bytes]) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        with _as_httpx_errors():
            yield from self._stream

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            with _as_httpx_errors():
                close()


class _DeadlineTransport(httpx.BaseTransport):
    """httpx's default HTTP/1.1 transport (TLS verified as httpx does) on `_DeadlineBackend`."""

    def __init__(self, limits: httpx.Limits) -> None:
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_DeadlineBackend(),
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.SyncByteStream)
        url = request.url
        core = httpcore.Request(
            method=request.method,
            url=httpcore.URL(scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _as_httpx_errors():
            response = self._pool.handle_request(core)
        assert isinstance(response.stream, Iterable)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_CoreBody(response.stream),
            extensions=response.extensions,
        )

    def close(self) -> None:
        self._pool.close()


def _proxied(url: str) -> bool:
    """Whether the environment routes ``url`` through a proxy (``HTTP(S)_PROXY``, ``NO_PROXY``)."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies()
    if not (proxies.get(parts.scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(parts.hostname or "")


def new_sync_client(limits: httpx.Limits, *urls: str) -> httpx.Client:
    """An httpx client for ``urls`` whose every socket operation ends by the calling request's
    deadline. Where the environment sends one of them through a proxy, httpx's own transports
    take it (httpx ignores environment proxies when given a transport): the body is then still
    bounded by the deadline, the headers by ``timeout`` per read."""
    if any(_proxied(url) for url in urls):
        return httpx.Client(limits=limits)
    return httpx.Client(transport=_DeadlineTransport(limits), limits=limits)


def new_async_client(limits: httpx.Limits) -> httpx.AsyncClient:
    """An httpx async client (`aexchange` bounds each exchange with ``asyncio.timeout``)."""
    return httpx.AsyncClient(limits=limits)
