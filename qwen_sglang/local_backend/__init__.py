"""The local backend: an HTTP server that speaks SGLang's embedding API, on CPU.

SGLang's CPU backend needs Intel AMX/AVX-512, so laptops, CI runners and most cloud CPUs cannot
run it. This server runs the same model with sentence-transformers and PyTorch instead and
answers like SGLang: the same endpoints, request and response shapes, 400 messages and JSON error
body, ``/health`` readiness (503 until the model is loaded and warmed), Matryoshka truncation
(truncate, then L2-normalise) and base64 encoding.

Start it with ``qwen-sglang serve --backend local --model PATH_OR_NAME``. It binds 127.0.0.1
unless told otherwise. Concurrent requests are queued to one model worker that merges them into
shared forward passes (micro-batching), so results never mix and the CPU stays busy; a forward
pass holds at most ``max_batch_tokens`` tokens, so a large request never starves a small one.

Hostile input is refused before it costs much: bodies over ``max_request_bytes`` (checked on
``Content-Length``, then while streaming), more than ``max_request_tokens`` tokens, malformed
JSON, lone surrogates, non-JSON content types (a web page cannot post ``text/plain`` to it) and
Host headers other than ``localhost``, an IP address, the bound host or ``allowed_hosts`` (DNS
rebinding) get a 4xx; connections that send no request within ``header_timeout`` are closed;
work for a client that went away is dropped; SIGTERM stops it within seconds.

Needs the ``local`` extra: ``pip install 'qwen-sglang[local]'``.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import errno
import hmac
import ipaddress
import itertools
import json
import logging
import queue
import socket
import threading
import time
from concurrent.futures import Future
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool

from qwen_sglang._vectors import normalize_rows
from qwen_sglang._version import __version__
from qwen_sglang.errors import ModelNotAvailableError, ServerStartError
from qwen_sglang.servers import port_in_use_message
from qwen_sglang.servers.models_path import check_model_arg, is_hub_id, resolve_model_path

__all__ = [
    "LocalBackendConfig",
    "ModelRunner",
    "check_model_arg",
    "create_app",
    "is_hub_id",
    "resolve_model_path",
    "serve",
]

logger = logging.getLogger("qwen_sglang.local_backend")

READY_LINE = "The server is fired up and ready to roll!"


@dataclass
class LocalBackendConfig:
    """Options of the local backend (the CLI's ``serve --backend local`` flags)."""

    model: str
    host: str = "127.0.0.1"
    port: int = 30000
    served_model_name: str | None = None
    api_key: str | None = field(default=None, repr=False)
    matryoshka: bool = True
    context_length: int | None = None
    device: str = "cpu"
    max_batch_tokens: int = 16384
    """Most (padded) tokens in one forward pass."""
    batch_window: float = 0.05
    """Seconds to wait for more requests to merge into a forward pass."""
    max_inputs_per_request: int = 4096
    max_request_chars: int = 32_000_000
    max_request_tokens: int = 1 << 20
    """Most tokens in one request (text after tokenisation, or token ids): 413 beyond."""
    max_request_bytes: int = 32 << 20
    """Largest request body (``Content-Length`` checked before reading, then while streaming): 413 beyond."""
    allowed_hosts: tuple[str, ...] = ()
    """Host names accepted besides ``localhost``, IP addresses and ``host``; ``"*"`` accepts any."""
    header_timeout: float = 10.0
    """Seconds a connection may take to send a request's headers (idle or slow clients are closed)."""
    body_timeout: float = 60.0
    """Seconds a request may take to send its body: 408 beyond."""
    shutdown_timeout: int = 5
    """Seconds SIGTERM waits for answers in progress before cancelling them."""
    log_level: str = "info"


class ShuttingDownError(RuntimeError):
    """The server stopped before a request's forward passes ran."""


@dataclass(eq=False)
class _Job:
    """One request's token-id lists and where their vectors go."""

    batch: list[list[int]]
    future: Future[np.ndarray] = field(default_factory=Future)
    out: np.ndarray | None = None
    left: int = 0
    cancelled: bool = False
    """Set by the HTTP side when the client went away: its remaining inputs are dropped."""


#: A pending input: (token count, arrival order, job, index in the job).
_Item = tuple[int, int, _Job, int]


class ModelRunner:
    """Loads the model and runs queued embedding work in one worker thread (micro-batching).

    The worker keeps every pending input of every request in one list sorted by length and runs
    one forward pass at a time from its shortest inputs (at most ``max_batch_tokens`` padded
    tokens): concurrent requests share passes, a request that arrives while a large one runs is
    served after the current pass, inputs of a request whose client left are dropped, and `stop`
    takes effect between two passes.
    """

    def __init__(self, config: LocalBackendConfig) -> None:
        self.config = config
        self.ready = threading.Event()
        self.failed: BaseException | None = None
        self.model_path: str = config.model
        self.dim = 0
        self.context_length = 0
        self.vocab_size = 0
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._stopping = threading.Event()
        self._order = itertools.count()
        self._thread = threading.Thread(target=self._main, name="qwen-sglang-model", daemon=True)
        self.forward_passes = 0
        self.in_flight = 0  # embedding requests received and not yet answered

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Fail what is queued (`ShuttingDownError`) after the forward pass in progress; end the worker."""
        self._stopping.set()
        self._queue.put(None)

    # ------------------------------------------------------------------ model
    def _load(self) -> None:
        path = resolve_model_path(self.config.model)
        self.model_path = str(path)
        logger.info("loading %s on %s", path, self.config.device)
        import torch
        from sentence_transformers import SentenceTransformer

        self._torch = torch
        self.model = SentenceTransformer(str(path), device=self.config.device)
        self.model.eval()
        self.tokenizer = self.model.tokenizer
        dim = self.model.get_embedding_dimension()
        if not dim:
            raise ModelNotAvailableError(f"{path} does not produce sentence embeddings (no pooling module)")
        self.dim = int(dim)
        hf_config = getattr(self.model[0], "auto_model", None)
        hf_config = getattr(hf_config, "config", None)
        ctx = self.config.context_length or getattr(hf_config, "max_position_embeddings", None)
        self.context_length = int(ctx or self.model.max_seq_length or 512)
        self.vocab_size = int(getattr(hf_config, "vocab_size", None) or len(self.tokenizer))
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.eos_token_id or 0
        self.left_pad = getattr(self.tokenizer, "padding_side", "right") == "left"
        self.embed_ids([self.tokenize(["warm up"], True)[0]])  # first forward pass
        logger.info("model ready: %d-d, context %d tokens", self.dim, self.context_length)

    def tokenize(self, texts: list[str], add_special_tokens: bool) -> list[list[int]]:
        if not texts:
            return []
        enc = self.tokenizer(texts, add_special_tokens=add_special_tokens, truncation=False, verbose=False)
        return [list(ids) for ids in enc["input_ids"]]

    def _chunk_end(self, lengths: list[int]) -> int:
        """How many of these (ascending) lengths fit one forward pass of ``max_batch_tokens``."""
        end = 1
        while end < len(lengths) and lengths[end] * (end + 1) <= self.config.max_batch_tokens:
            end += 1
        return end

    def forward(self, chunk: list[list[int]]) -> np.ndarray:
        """One forward pass over token-id lists (padded to the longest): L2-normalised vectors."""
        torch = self._torch
        width = max(len(ids) for ids in chunk)
        input_ids = torch.full((len(chunk), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, ids in enumerate(chunk):
            lo = width - len(ids) if self.left_pad else 0
            input_ids[row, lo : lo + len(ids)] = torch.tensor(ids, dtype=torch.long)
            mask[row, lo : lo + len(ids)] = 1
        with torch.inference_mode():
            features = self.model({"input_ids": input_ids, "attention_mask": mask})
            emb = features["sentence_embedding"].float()
            emb = torch.nn.functional.normalize(emb, p=2, dim=1)
        self.forward_passes += 1
        out: np.ndarray = emb.cpu().numpy()
        return out

    def embed_ids(self, batch: list[list[int]]) -> np.ndarray:
        """Embed token-id lists in this thread (sorted by length into passes of bounded size)."""
        out = np.empty((len(batch), self.dim), dtype=np.float32)
        order = sorted(range(len(batch)), key=lambda i: len(batch[i]))
        start = 0
        while start < len(order):
            end = start + self._chunk_end([len(batch[i]) for i in order[start:]])
            out[order[start:end]] = self.forward([batch[i] for i in order[start:end]])
            start = end
        return out

    # ------------------------------------------------------------------ worker
    def submit(self, batch: list[list[int]]) -> _Job:
        """Queue a request's token-id lists; its ``future`` gets their vectors in order."""
        job = _Job(batch, left=len(batch))
        self._queue.put(job)
        return job

    def _admit(self, job: _Job, pending: list[_Item]) -> None:
        order = next(self._order)
        for i, ids in enumerate(job.batch):
            bisect.insort(pending, (len(ids), order, job, i), key=lambda item: item[:2])

    def _gather(self, pending: list[_Item], jobs: int) -> None:
        """Admit what is queued. Requests already received but still being tokenised are waited
        for (up to ``batch_window``) when the worker was idle (``jobs`` admitted since), so
        concurrent requests pad like one; a lone client never waits."""
        deadline = time.monotonic() + self.config.batch_window
        tokens = sum(item[0] for item in pending)
        while True:
            expecting = 0 < jobs < self.in_flight and tokens < self.config.max_batch_tokens * 4
            wait = max(0.0, deadline - time.monotonic()) if expecting else 0.0
            try:
                job = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
            except queue.Empty:
                return
            if job is None:
                return
            self._admit(job, pending)
            if jobs:
                jobs += 1
            tokens += sum(len(ids) for ids in job.batch)

    def _main(self) -> None:
        try:
            self._load()
        except BaseException as exc:  # reported by /health and the serve command
            self.failed = exc
            logger.error("could not load the model: %s", exc)
            self.ready.set()
            return
        self.ready.set()
        pending: list[_Item] = []
        while not self._stopping.is_set():
            if not pending:
                job = self._queue.get()
                if job is None:
                    continue
                self._admit(job, pending)
                self._gather(pending, jobs=1)
            else:
                self._gather(pending, jobs=0)
            pending = self._drop_cancelled(pending)
            if pending and not self._stopping.is_set():
                pending = self._run_pass(pending)
        stopped = ShuttingDownError("The server is shutting down")
        left = [item[2] for item in pending]
        while True:
            try:
                queued = self._queue.get_nowait()
            except queue.Empty:
                break
            left += [queued] if queued is not None else []
        for job in left:
            if not job.future.done() and not job.cancelled:
                job.future.set_exception(stopped)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @staticmethod
    def _drop_cancelled(pending: list[_Item]) -> list[_Item]:
        gone = {id(job): job for _, _, job, _ in pending if job.cancelled}
        if not gone:
            return pending
        for job in gone.values():
            logger.info("client went away: dropped %d of its %d inputs", job.left, len(job.batch))
        return [item for item in pending if not item[2].cancelled]

    def _run_pass(self, pending: list[_Item]) -> list[_Item]:
        """One forward pass over the shortest pending inputs; returns what is left pending."""
        end = self._chunk_end([item[0] for item in pending[: self.config.max_batch_tokens]])
        chunk, rest = pending[:end], pending[end:]
        try:
            vectors = self.forward([job.batch[i] for _, _, job, i in chunk])
        except Exception as exc:
            failed = {id(job): job for _, _, job, _ in chunk}
            for job in failed.values():
                if not job.future.done():
                    job.future.set_exception(exc)
            return [item for item in rest if id(item[2]) not in failed]
        for row, (_, _, job, i) in enumerate(chunk):
            if job.out is None:
                job.out = np.empty((len(job.batch), self.dim), dtype=np.float32)
            job.out[i] = vectors[row]
            job.left -= 1
            if job.left == 0 and not job.future.done():
                job.future.set_result(job.out)
        return rest


class _BadRequestError(Exception):
    def __init__(self, message: str, status: int = 400, kind: str = "BadRequestError") -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind


def _too_large(message: str) -> _BadRequestError:
    return _BadRequestError(message, 413, "RequestTooLargeError")


def _check_text(text: str, where: str) -> None:
    """Lone surrogates (``"\\ud800"`` is valid JSON) cannot be tokenised: 400, not a crash."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _BadRequestError(
            f"{where} is not valid Unicode: lone surrogate {text[exc.start]!r} at position {exc.start}"
        ) from None


def _is_ids(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in value)


def _parse_inputs(raw: Any) -> tuple[list[str | list[int]], bool]:
    """Normalise ``input`` like SGLang: str | list[str] | list[int] | list[list[int]]."""
    if raw is None:
        raise _BadRequestError("Input cannot be empty")
    if isinstance(raw, str):
        if not raw.strip():
            raise _BadRequestError("Input cannot be empty")
        _check_text(raw, "Input")
        return [raw], True
    if not isinstance(raw, list):
        raise _BadRequestError(f"Invalid input type: {type(raw).__name__}")
    if not raw:
        raise _BadRequestError("Input cannot be empty")
    if _is_ids(raw):
        return [list(raw)], False
    items: list[str | list[int]] = []
    for i, x in enumerate(raw):
        if isinstance(x, str):
            if not x.strip():
                raise _BadRequestError(f"Input at index {i} cannot be empty or whitespace only")
            _check_text(x, f"Input at index {i}")
            items.append(x)
        elif _is_ids(x):
            if not x:
                raise _BadRequestError(f"Input at index {i} cannot be empty or whitespace only")
            items.append(list(x))
        else:
            raise _BadRequestError(f"Input at index {i} has an invalid type: {type(x).__name__}")
    kinds = {isinstance(x, str) for x in items}
    if len(kinds) > 1:
        raise _BadRequestError("Input cannot mix text and token ids")
    return items, isinstance(items[0], str)


_BOOL = TypeAdapter(bool)


def _flag(data: dict[str, Any], name: str, default: bool) -> bool:
    """A boolean field read as SGLang's pydantic models read it (``"false"`` is False); 400 otherwise."""
    if name not in data:
        return default
    try:
        return _BOOL.validate_python(data[name])
    except ValidationError:
        raise _BadRequestError(f"{name} must be a boolean, got {data[name]!r}") from None


def _encoding_format(data: dict[str, Any]) -> str:
    fmt = data.get("encoding_format", "float")
    if not isinstance(fmt, str) or fmt not in ("float", "base64"):
        raise _BadRequestError(f"encoding_format must be either 'float' or 'base64', got {fmt!r}")
    return fmt


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
            raise _too_large("Request too large: more numbers than the token limit of one request")

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
        raise _too_large(f"Request too large: more than {limit} JSON strings")
    outside = plain.split(b'"')[::2]  # what is not inside a string
    if sum(part.count(b"[") + part.count(b"{") for part in outside) > limit:
        raise _too_large(f"Request too large: more than {limit} JSON arrays and objects")


def _parse_json(raw: bytes, max_numbers: int) -> dict[str, Any]:
    _check_shape(raw, _MAX_JSON_VALUES)
    budget = _NumberBudget(max_numbers)
    try:
        data = json.loads(raw, parse_int=budget.int, parse_float=budget.float)
    except RecursionError:
        raise _BadRequestError("Request body is not valid JSON: nested too deeply") from None
    except ValueError as exc:
        raise _BadRequestError(f"Request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise _BadRequestError("Request body must be a JSON object")
    return data


def _host_allowed(host: str, config: LocalBackendConfig) -> bool:
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


def _error_body(message: str, status: int, kind: str) -> dict[str, Any]:
    return {"object": "error", "message": message, "type": kind, "param": None, "code": status}


async def _send_json(send: Any, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body, separators=(",", ":")).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class _Guard:
    """Pure ASGI middleware around the routes: Host, API key, Content-Type, and crashes.

    An unexpected exception becomes a 500 JSON answer here, before Starlette's outermost error
    middleware, which would re-raise it and make uvicorn close the keep-alive connection.
    """

    def __init__(self, app: Any, config: LocalBackendConfig) -> None:
        self.app = app
        self.config = config
        self.bearer = f"Bearer {config.api_key}".encode() if config.api_key else None

    def _refusal(self, scope: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
        headers = dict(scope["headers"])
        host = headers.get(b"host")
        if host is not None and not _host_allowed(host.decode("latin-1"), self.config):
            message = (
                f"Invalid Host header {host.decode('latin-1')!r}: this server answers to localhost, IP addresses "
                f"and {self.config.host}; add a name with --allowed-hosts (allowed_hosts)"
            )
            return 400, _error_body(message, 400, "BadRequestError")
        needs_key = self.bearer is not None and not scope["path"].startswith("/health")
        if needs_key and not hmac.compare_digest(headers.get(b"authorization", b""), self.bearer or b""):
            return 401, {"error": "Unauthorized"}
        if scope["method"] == "POST":
            media = headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
            if media != b"application/json":
                message = (
                    "Unsupported Media Type: Only 'application/json' is allowed (send Content-Type: application/json)"
                )
                return 400, _error_body(message, 400, "BadRequestError")
        return None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope)
        if refusal is not None:
            await _send_json(send, *refusal)
            return
        started = False

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            logger.exception("error while answering %s %s", scope["method"], scope["path"])
            if started:  # a partial answer: only closing the connection can end it
                raise
            await _send_json(send, 500, _error_body("Internal server error", 500, "InternalServerError"))


async def _read_body(request: Request, config: LocalBackendConfig) -> bytes:
    """The body, refused (413) from ``Content-Length`` before reading, or as soon as it grows too large."""
    limit = config.max_request_bytes
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise _too_large(f"Request body too large: {declared} bytes, more than {limit}; send fewer inputs per request")
    chunks: list[bytes] = []
    size = 0

    async def read() -> None:
        nonlocal size
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(f"Request body too large: more than {limit} bytes; send fewer inputs per request")
            chunks.append(chunk)

    try:
        await asyncio.wait_for(read(), config.body_timeout)
    except TimeoutError:
        raise _BadRequestError(f"Request body not received within {config.body_timeout:g}s", 408) from None
    return b"".join(chunks)


async def _until_done_or_gone(job: _Job, request: Request) -> np.ndarray | None:
    """The job's vectors, or None when the client disconnected first (the job is then dropped)."""

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    result: asyncio.Future[np.ndarray] = asyncio.wrap_future(job.future)
    gone: asyncio.Future[None] = asyncio.ensure_future(disconnected())
    waiters: set[asyncio.Future[Any]] = {result, gone}
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:  # server shutdown cancelled this answer
        job.cancelled = True
        raise
    finally:
        gone.cancel()
    if not result.done():
        job.cancelled = True
        return None
    return result.result()


def create_app(config: LocalBackendConfig, runner: ModelRunner | None = None) -> Any:
    """Build the FastAPI application (the model loads in the background once it starts)."""
    runner = runner or ModelRunner(config)
    served = config.served_model_name

    def error(message: str, status: int = 400, kind: str = "BadRequestError", **headers: str) -> Any:
        return JSONResponse(_error_body(message, status, kind), status_code=status, headers=headers or None)

    def not_ready() -> Any:
        if runner.failed is not None:
            return error(f"The model failed to load: {runner.failed}", 500, "InternalServerError")
        return error("The server is still loading the model", 503, "ServiceUnavailableError", **{"Retry-After": "1"})

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        runner.start()
        yield
        runner.stop()

    app = FastAPI(title="qwen-sglang local backend", version=__version__, lifespan=lifespan)
    app.state.runner = runner

    app.add_middleware(_Guard, config=config)

    async def body_of(request: Request) -> dict[str, Any]:
        return _parse_json(await _read_body(request, config), config.max_request_tokens + 64)

    def model_name() -> str:
        return served or runner.model_path

    @app.exception_handler(_BadRequestError)
    async def bad_request(request: Request, exc: _BadRequestError) -> Any:
        return error(str(exc), exc.status, exc.kind)

    @app.get("/health")
    async def health() -> Any:
        ok = runner.ready.is_set() and runner.failed is None
        return Response(status_code=200 if ok else 503)

    @app.get("/v1/models")
    async def models() -> Any:
        entry = {
            "id": model_name(),
            "object": "model",
            "created": int(time.time()),
            "owned_by": "sglang",
            "root": model_name(),
            "max_model_len": runner.context_length or None,
        }
        return {"object": "list", "data": [entry]}

    described: dict[str, Any] = {}

    def info() -> Any:
        # SGLang 0.5.17's fields (model_type and architectures from the model's HF config), the
        # native width, and the model's sentence-transformers prompts: what a client needs to
        # know which model this is and how its queries are written. 503 until the model is
        # loaded (before that neither the resolved path nor the config is known).
        if not runner.ready.is_set() or runner.failed is not None:
            return not_ready()
        if not described:
            hf_config: dict[str, Any] = {}
            for candidate in ("config.json", "0_Transformer/config.json"):
                try:
                    loaded = json.loads((Path(runner.model_path) / candidate).read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    continue
                hf_config = loaded if isinstance(loaded, dict) else {}
                break
            architectures = hf_config.get("architectures")
            described.update(
                {
                    "model_path": runner.model_path,
                    "tokenizer_path": runner.model_path,
                    "is_generation": False,
                    "preferred_sampling_params": None,
                    "weight_version": "default",
                    "has_image_understanding": False,
                    "has_audio_understanding": False,
                    "model_type": hf_config.get("model_type"),
                    "architectures": architectures if isinstance(architectures, list) else None,
                    "embedding": {
                        "dimension": runner.dim or None,
                        "supports_dimensions": config.matryoshka,
                        "matryoshka_dimensions": None,
                        "normalize": True,
                    },
                    "sentence_transformers": {
                        "prompts": dict(runner.model.prompts),
                        "default_prompt_name": runner.model.default_prompt_name,
                    },
                }
            )
        return described

    app.get("/model_info")(info)
    app.get("/get_model_info")(info)

    def server_info() -> dict[str, Any]:
        override = {"is_matryoshka": True} if config.matryoshka else {}
        return {
            "version": f"qwen-sglang-local {__version__}",
            "backend": "local",
            "model_path": runner.model_path,
            "served_model_name": model_name(),
            "is_embedding": True,
            "context_length": runner.context_length or None,
            "json_model_override_args": json.dumps(override),
            "device": config.device,
            "supports_base64": True,
            "host": config.host,
            "port": config.port,
            # The request shape this backend is fastest with, in the client's setting names: a
            # padded forward pass over length-sorted texts wastes least with a few large
            # requests, and small concurrent ones compete with it for the same cores
            # (docs/benchmarks.md). Clients use it unless their settings say otherwise. Their
            # token budget is an estimate from UTF-8 length: a request it lets over this
            # server's cap (digit-heavy text) gets a 413, which the client answers by splitting.
            "client_defaults": {
                "batch_size": config.max_inputs_per_request,
                "max_batch_tokens": config.max_request_tokens,
                "max_concurrency": 1,
            },
        }

    app.get("/server_info")(server_info)
    app.get("/get_server_info")(server_info)

    async def tokenize(request: Request) -> Any:
        data = await body_of(request)
        if not runner.ready.is_set() or runner.failed is not None:
            return not_ready()
        return await _tokenize(data, config, runner)

    app.post("/v1/tokenize")(tokenize)
    app.post("/tokenize")(tokenize)

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> Any:
        data = await body_of(request)
        if not runner.ready.is_set() or runner.failed is not None:
            return not_ready()
        if runner.stopping:
            return error("The server is shutting down", 503, "ServiceUnavailableError")
        runner.in_flight += 1  # only the event loop thread changes it
        try:
            vectors, tokens, fmt = await _embed(data, request, config, runner)
        except ShuttingDownError as exc:
            return error(str(exc), 503, "ServiceUnavailableError")
        finally:
            runner.in_flight -= 1
        if vectors is None:  # the client went away; nobody reads this
            return Response(status_code=499)
        return _embedding_response(vectors, tokens, fmt, runner.model_path)

    return app


async def _tokenize(data: dict[str, Any], config: LocalBackendConfig, runner: ModelRunner) -> dict[str, Any]:
    """``/v1/tokenize``: ``prompt`` a string or a list of strings (``[]`` gives empty lists, as SGLang)."""
    prompt = data.get("prompt")
    single = isinstance(prompt, str)
    prompts = [prompt] if single else prompt
    if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
        raise _BadRequestError("prompt must be a string or a list of strings")
    if sum(len(p) for p in prompts) > config.max_request_chars:
        raise _too_large(f"Request too large: more than {config.max_request_chars} characters")
    for i, text in enumerate(prompts):
        _check_text(text, "prompt" if single else f"prompt at index {i}")
    add_special = _flag(data, "add_special_tokens", True)
    tokens = await run_in_threadpool(runner.tokenize, prompts, add_special)
    counts = [len(t) for t in tokens]
    return {
        "tokens": tokens[0] if single else tokens,
        "count": counts[0] if single else counts,
        "max_model_len": runner.context_length,
    }


def _check_dimensions(dims: Any, config: LocalBackendConfig, runner: ModelRunner) -> None:
    if not config.matryoshka:
        raise _BadRequestError(
            f"Model '{runner.model_path}' does not support matryoshka representation, "
            "changing output dimensions will lead to poor results."
        )
    if isinstance(dims, bool) or not isinstance(dims, int):
        raise _BadRequestError("dimensions must be an integer")
    if dims < 1:
        raise _BadRequestError("Requested dimensions must be greater than 0")
    if dims > runner.dim:
        raise _BadRequestError(f"Provided dimensions are greater than max embedding dimension: {runner.dim}")


async def _token_ids(
    items: list[str | list[int]], is_text: bool, config: LocalBackendConfig, runner: ModelRunner
) -> list[list[int]]:
    """The inputs as token ids, within the request's token limit and the model's context and vocabulary."""
    if is_text:
        if sum(len(x) for x in items) > config.max_request_chars:
            raise _too_large(f"Request too large: more than {config.max_request_chars} characters")
        ids_list = await run_in_threadpool(runner.tokenize, [str(x) for x in items], True)
    else:
        ids_list = [x for x in items if isinstance(x, list)]
    total = sum(len(ids) for ids in ids_list)
    if total > config.max_request_tokens:
        raise _too_large(
            f"Request too large: {total} tokens, more than {config.max_request_tokens} in one request; "
            "send fewer inputs per request"
        )
    for ids in ids_list:
        if len(ids) > runner.context_length:
            raise _BadRequestError(
                f"The input ({len(ids)} tokens) is longer than the model's context length "
                f"({runner.context_length} tokens)."
            )
        if not is_text and (min(ids) < 0 or max(ids) >= runner.vocab_size):
            raise _BadRequestError(f"Token id out of range [0, {runner.vocab_size})")
    return ids_list


async def _embed(
    data: dict[str, Any], request: Request, config: LocalBackendConfig, runner: ModelRunner
) -> tuple[np.ndarray | None, int, str]:
    """Validate an embeddings request, run it; (vectors or None if the client left, tokens, format)."""
    items, is_text = _parse_inputs(data.get("input"))
    if len(items) > config.max_inputs_per_request:
        raise _too_large(f"Too many inputs in one request: {len(items)} > {config.max_inputs_per_request}")
    fmt = _encoding_format(data)
    dims = data.get("dimensions")
    if dims is not None:
        _check_dimensions(dims, config, runner)
    ids_list = await _token_ids(items, is_text, config, runner)
    vectors = await _until_done_or_gone(runner.submit(ids_list), request)
    if vectors is not None and dims is not None and dims < vectors.shape[1]:
        vectors = normalize_rows(vectors[:, :dims].copy())
    return vectors, sum(len(ids) for ids in ids_list), fmt


def _embedding_response(vectors: np.ndarray, n_tokens: int, fmt: str, model_path: str) -> dict[str, Any]:
    data_out: list[dict[str, Any]] = []
    for i, vec in enumerate(vectors):
        emb: Any = base64.b64encode(vec.astype("<f4").tobytes()).decode("ascii") if fmt == "base64" else vec.tolist()
        data_out.append({"object": "embedding", "embedding": emb, "index": i})
    return {
        "object": "list",
        "data": data_out,
        "model": model_path,
        "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens, "completion_tokens": 0},
    }


def _bind(host: str, port: int) -> socket.socket:
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


def _guarded_protocol(header_timeout: float) -> Any:
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


def _make_server(config: LocalBackendConfig, app: Any, runner: ModelRunner) -> Any:
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
            http=_guarded_protocol(config.header_timeout),
            timeout_graceful_shutdown=config.shutdown_timeout,
        )
    )


def serve(config: LocalBackendConfig) -> int:
    """Run the local backend until interrupted. Returns the process exit code.

    ``config.port`` 0 binds a free port (printed, and set in ``config``). Raises `ServerStartError`
    (port taken) and `ModelNotAvailableError` (no such model) before anything is printed.
    """
    if config.host not in ("127.0.0.1", "localhost", "::1") and not config.api_key:
        logger.warning(
            "binding %s without an API key: anyone who can reach this port can use the server",
            config.host,
        )
    check_model_arg(config.model)
    sock = _bind(config.host, config.port)
    config.port = int(sock.getsockname()[1])
    shown = f"[{config.host}]" if ":" in config.host else config.host
    print(f"serving {config.model} with the local backend at http://{shown}:{config.port}/v1", flush=True)
    runner = ModelRunner(config)
    server = _make_server(config, create_app(config, runner), runner)

    def watch() -> None:
        runner.ready.wait()
        if runner.failed is not None:
            server.should_exit = True
        else:
            print(READY_LINE, flush=True)

    threading.Thread(target=watch, name="qwen-sglang-ready", daemon=True).start()
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    if runner.failed is not None:
        print(f"error: {runner.failed}", flush=True)
        return 1
    return 0 if server.started else 1
