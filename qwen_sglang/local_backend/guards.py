"""What both local backends (embeddings and the reranker) put between the network and their models.

- `Guard`: pure ASGI middleware: the Host header (DNS rebinding), the API key (``/health`` and
  ``/ready`` stay open, as SGLang's), ``Content-Type: application/json`` on POST, and a 500 JSON
  answer for a crash instead of a dropped keep-alive connection;
- `read_body` and `parse_json`: a body refused from ``Content-Length`` or as soon as it grows too
  large, JSON whose strings, containers and numbers are counted before they all exist;
- `HTTPError`: a 4xx/5xx answered in SGLang's flat JSON error body (`error_body`);
- `serve_app`: bind (a taken port is a clear error), say where it serves, run uvicorn with
  connections closed when their headers do not arrive in time, print the ready line once the
  model is warm, and stop the model worker on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hmac
import ipaddress
import json
import logging
import socket
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from qwen_sglang._version import __version__
from qwen_sglang.errors import ServerStartError
from qwen_sglang.servers.ports import port_in_use_message, print_ready_line, warn_if_public

__all__ = [
    "Guard",
    "GuardedConfig",
    "HTTPError",
    "Runner",
    "bind",
    "check_text",
    "error_body",
    "error_response",
    "guarded_protocol",
    "host_allowed",
    "new_app",
    "parse_json",
    "read_body",
    "send_json",
    "serve_app",
    "too_large",
]

logger = logging.getLogger("qwen_sglang.local_backend")

#: Paths that need no API key (readiness probes, as SGLang's).
OPEN_PATHS = ("/health", "/ready")


class GuardedConfig(Protocol):
    """What the guards read from a backend's configuration."""

    model: str
    host: str
    port: int
    api_key: str | None
    allowed_hosts: tuple[str, ...]
    max_request_bytes: int
    header_timeout: float
    body_timeout: float
    shutdown_timeout: int
    log_level: str


class Runner(Protocol):
    """What `new_app` and `serve_app` need of a backend's model worker."""

    ready: threading.Event
    failed: BaseException | None

    def start(self) -> None: ...

    def stop(self) -> None: ...


class HTTPError(Exception):
    def __init__(self, message: str, status: int = 400, kind: str = "BadRequestError") -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind


def too_large(message: str) -> HTTPError:
    return HTTPError(message, 413, "RequestTooLargeError")


def check_text(text: str, where: str) -> None:
    """Lone surrogates (``"\\ud800"`` is valid JSON) cannot be tokenised: 400, not a crash."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise HTTPError(
            f"{where} is not valid Unicode: lone surrogate {text[exc.start]!r} at position {exc.start}"
        ) from None


#: Most JSON strings, and most arrays and objects, in one body: each becomes a Python object of
#: some 60 bytes, so a body of millions of tiny ones (``[[],[],...]``) would take 25x its size.
_MAX_JSON_VALUES = 1 << 16


class _NumberBudget:
    """``parse_int``/``parse_float`` for json.loads: stops a body of millions of numbers before they all exist."""

    def __init__(self, limit: int) -> None:
        self.left = limit

    def _spend(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise too_large("Request too large: more numbers than the token limit of one request")

    def int(self, text: str) -> int:
        self._spend()
        return int(text)

    def float(self, text: str) -> float:
        self._spend()
        return float(text)


def _check_shape(raw: bytes, limit: int) -> None:
    """413 for a body that holds more than ``limit`` JSON strings, or arrays and objects, counted
    at memchr speed before json.loads builds them (numbers are counted while it parses)."""
    plain = raw.replace(b"\\\\", b"").replace(b'\\"', b"")  # escaped backslashes, then escaped quotes
    if plain.count(b'"') > 2 * limit:
        raise too_large(f"Request too large: more than {limit} JSON strings")
    outside = plain.split(b'"')[::2]  # what is not inside a string
    if sum(part.count(b"[") + part.count(b"{") for part in outside) > limit:
        raise too_large(f"Request too large: more than {limit} JSON arrays and objects")


def parse_json(raw: bytes, max_numbers: int) -> dict[str, Any]:
    _check_shape(raw, _MAX_JSON_VALUES)
    budget = _NumberBudget(max_numbers)
    try:
        data = json.loads(raw, parse_int=budget.int, parse_float=budget.float)
    except RecursionError:
        raise HTTPError("Request body is not valid JSON: nested too deeply") from None
    except ValueError as exc:
        raise HTTPError(f"Request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise HTTPError("Request body must be a JSON object")
    return data


def host_allowed(host: str, config: GuardedConfig) -> bool:
    """Host names a DNS-rebinding page cannot send: localhost, IP literals, the bound host, the allowed ones."""
    if "*" in config.allowed_hosts:
        return True
    name = host.strip().lower()
    if name.startswith("["):  # [::1]:port
        name = name[1 : name.find("]")] if "]" in name else name
    elif name.count(":") == 1:
        name = name.rsplit(":", 1)[0]
    name = name.rstrip(".")
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        pass
    allowed = {"localhost", config.host.lower(), *(h.lower().rstrip(".") for h in config.allowed_hosts)}
    return name in allowed


def error_response(message: str, status: int = 400, kind: str = "BadRequestError") -> JSONResponse:
    """SGLang's flat error body as an answer (``Retry-After: 1`` with a 503)."""
    headers = {"Retry-After": "1"} if status == 503 else None
    return JSONResponse(error_body(message, status, kind), status_code=status, headers=headers)


def new_app(title: str, config: GuardedConfig, runner: Runner) -> FastAPI:
    """A FastAPI application with what both backends share: the model worker started and stopped
    with it, the `Guard`, `HTTPError` answered in SGLang's body, ``/health`` and ``/ready`` (503
    until the model is loaded and warm)."""

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        runner.start()
        yield
        runner.stop()

    app = FastAPI(title=title, version=__version__, lifespan=lifespan)
    app.state.runner = runner
    app.add_middleware(Guard, config=config)

    @app.exception_handler(HTTPError)
    async def http_error(request: Request, exc: HTTPError) -> JSONResponse:
        return error_response(str(exc), exc.status, exc.kind)

    @app.get("/health")
    @app.get("/ready")
    async def health() -> Response:
        return Response(status_code=200 if runner.ready.is_set() and runner.failed is None else 503)

    return app


def error_body(message: str, status: int, kind: str) -> dict[str, Any]:
    return {"object": "error", "message": message, "type": kind, "param": None, "code": status}


async def send_json(send: Any, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body, separators=(",", ":")).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class Guard:
    """Pure ASGI middleware around the routes: Host, API key, Content-Type, and crashes.

    An unexpected exception becomes a 500 JSON answer here, before Starlette's outermost error
    middleware, which would re-raise it and make uvicorn close the keep-alive connection.
    """

    def __init__(self, app: Any, config: GuardedConfig) -> None:
        self.app = app
        self.config = config
        self.bearer = f"Bearer {config.api_key}".encode() if config.api_key else None

    def _refusal(self, scope: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
        headers = dict(scope["headers"])
        host = headers.get(b"host")
        if host is not None and not host_allowed(host.decode("latin-1"), self.config):
            message = (
                f"Invalid Host header {host.decode('latin-1')!r}: this server answers to localhost, IP addresses "
                f"and {self.config.host}; add a name with --allowed-hosts (allowed_hosts)"
            )
            return 400, error_body(message, 400, "BadRequestError")
        needs_key = self.bearer is not None and not scope["path"].startswith(OPEN_PATHS)
        if needs_key and not hmac.compare_digest(headers.get(b"authorization", b""), self.bearer or b""):
            return 401, {"error": "Unauthorized"}
        if scope["method"] == "POST":
            media = headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
            if media != b"application/json":
                message = (
                    "Unsupported Media Type: Only 'application/json' is allowed (send Content-Type: application/json)"
                )
                return 400, error_body(message, 400, "BadRequestError")
        return None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope)
        if refusal is not None:
            await send_json(send, *refusal)
            return
        started = False

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except asyncio.CancelledError:  # SIGTERM's grace period ended while this request ran
            if not started:
                with contextlib.suppress(Exception):
                    await send_json(
                        send, 503, error_body("The server is shutting down", 503, "ServiceUnavailableError")
                    )
            raise
        except Exception:
            logger.exception("error while answering %s %s", scope["method"], scope["path"])
            if started:  # a partial answer: only closing the connection can end it
                raise
            await send_json(send, 500, error_body("Internal server error", 500, "InternalServerError"))


async def read_body(request: Request, config: GuardedConfig) -> bytes:
    """The body, refused (413) from ``Content-Length`` before reading, or as soon as it grows too large."""
    limit = config.max_request_bytes
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise too_large(f"Request body too large: {declared} bytes, more than {limit}; send fewer inputs per request")
    chunks: list[bytes] = []
    size = 0

    async def read() -> None:
        nonlocal size
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large(f"Request body too large: more than {limit} bytes; send fewer inputs per request")
            chunks.append(chunk)

    try:
        await asyncio.wait_for(read(), config.body_timeout)
    except TimeoutError:
        raise HTTPError(f"Request body not received within {config.body_timeout:g}s", 408) from None
    return b"".join(chunks)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: a free one); `ServerStartError` when taken."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise ServerStartError(f"cannot bind {host!r}: {exc.strerror}") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ServerStartError(port_in_use_message(host, port)) from None
        raise ServerStartError(f"cannot bind {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(False)
    return sock


def guarded_protocol(header_timeout: float) -> Any:
    """uvicorn's HTTP protocol, closing connections that send no complete request headers within
    ``header_timeout`` seconds of opening or of their previous answer (idle and slowloris clients).
    uvicorn's own keep-alive timeout stops at the first byte of a request."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    class GuardedHTTPProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
            self._header_timer = self.loop.call_later(header_timeout, self._expire, self.cycle)

        def _expire(self, armed_cycle: Any) -> None:
            if self.cycle is armed_cycle and not self.transport.is_closing():  # no new request began
                self.transport.close()

    return GuardedHTTPProtocol


def _make_server(config: GuardedConfig, app: Any, runner: Runner) -> Any:
    """A uvicorn server whose SIGTERM/SIGINT also stops the model worker at once: queued work
    fails with 503 instead of delaying the exit, and answers still running get ``shutdown_timeout``."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            runner.stop()
            super().handle_exit(sig, frame)

    return Server(
        uvicorn.Config(
            app,
            log_level=config.log_level,
            access_log=False,
            http=guarded_protocol(config.header_timeout),
            timeout_graceful_shutdown=config.shutdown_timeout,
        )
    )


def serve_app(config: GuardedConfig, app: Any, runner: Runner, *, what: str) -> int:
    """Run ``app`` (whose model worker is ``runner``) until interrupted; the process exit code.

    Warns about a public bind without a key, binds (``config.port`` 0: a free one, written back
    to ``config``; a taken port raises `ServerStartError` before anything is printed), says where
    it serves, prints SGLang's ready line once the model is loaded and warm, and exits 1 when the
    model cannot be loaded.
    """
    warn_if_public(config.host, bool(config.api_key), logger)
    sock = bind(config.host, config.port)
    config.port = int(sock.getsockname()[1])
    shown = f"[{config.host}]" if ":" in config.host else config.host
    print(f"serving {config.model} with the local {what} backend at http://{shown}:{config.port}/v1", flush=True)
    server = _make_server(config, app, runner)

    def watch() -> None:
        runner.ready.wait()
        if runner.failed is not None:
            server.should_exit = True
        else:
            print_ready_line()

    threading.Thread(target=watch, name="qwen-sglang-ready", daemon=True).start()
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    if runner.failed is not None:
        print(f"error: {runner.failed}", flush=True)
        return 1
    return 0 if server.started else 1
