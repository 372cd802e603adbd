"""The embedding client: one engine, driven by a sync and an async shell.

Every operation (a request with retries, a batch with its Matryoshka and encoding fallbacks, the
exact token counts for long texts) is written once, as a generator that *yields* what it needs
done (`_Send` an HTTP request, `_Sleep` before a retry) and receives the result.
`EmbeddingClient._run` drives such a generator with ``httpx.Client`` and ``time.sleep``;
`EmbeddingClient._arun` with ``httpx.AsyncClient`` and ``asyncio.sleep``. The planning of
batches and the assembly of results are plain functions shared by both, so the two paths cannot
drift apart. Only the fan-out differs: a thread pool for sync calls, tasks for async ones, both
bounded by ``max_concurrency``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import email.utils
import json
import logging
import math
import os
import random
import threading
import time
import weakref
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar
from urllib.parse import urljoin

import httpx
import numpy as np
from numpy.typing import NDArray

from qwen_sglang._progress import progress_bar
from qwen_sglang._urls import root_url
from qwen_sglang._vectors import normalize_rows
from qwen_sglang._version import __version__
from qwen_sglang.client.discovery import (
    ServerFacts,
    default_query_prompt,
    parse_facts,
    request_shape,
    same_model,
    served_preset,
)
from qwen_sglang.client.transport import ACCEPT_ENCODING, Answer, aexchange, exchange, new_async_client, new_sync_client
from qwen_sglang.errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    BadRequestError,
    ConfigurationError,
    InputTypeError,
    InvalidInputError,
    MalformedResponseError,
    ModelMismatchError,
    NotFoundError,
    QwenSGLangError,
    RequestTooLargeError,
    status_error_class,
)
from qwen_sglang.instructions import query_prompt
from qwen_sglang.presets import PRESETS, ModelPreset
from qwen_sglang.settings import DEFAULT_MODEL, QwenSGLangSettings, redact_url, validate_dimensions

_orjson_loads: Callable[[bytes], Any] | None
try:  # optional speed-up (a dependency on CPython); the standard library is the fallback
    from orjson import loads as _orjson_loads
except ImportError:  # pragma: no cover - PyPy, or installed without it
    _orjson_loads = None

__all__ = ["EmbeddingClient", "EmbeddingResult", "Kind", "ProgressCallback", "ServerFacts"]

logger = logging.getLogger("qwen_sglang")

Kind = Literal["query", "document"]
#: Called after each request of a call with ``(texts, prompt_tokens)`` that request completed
#: (a text split into windows counts once, when its last window is done).
ProgressCallback = Callable[[int, int], None]
T = TypeVar("T")
Vectors = NDArray[np.float32]

# 501 (Not Implemented) and 505 say the server will never do it: not worth a retry.
_RETRY_STATUS = frozenset({408, 409, 429}) | (frozenset(range(500, 600)) - {501, 505})
_BACKOFF_BASE = 0.5
_BACKOFF_MAX = 8.0
_RETRY_AFTER_MAX = 60.0  # the longest Retry-After honoured when there is no deadline (timeout=None)
_UNKNOWN_WIDTH = 8192  # widest vectors assumed while the model's width is unknown
# Bounds never assume narrower vectors than the widest preset's: a server of another model than
# the configured one must get its own error ("returned 4096-d vectors"), not "too large".
_WIDEST_PRESET = max(p.native_dim for p in PRESETS.values())
_BYTES_PER_VALUE = 32  # a JSON float with its separator, generously (base64 needs 5.4)
_ANSWER_BASE = 1 << 20  # room for everything in an answer that is not vectors
_DEFAULT_ANSWER = 32 << 20  # requests that do not say what they need: this plus 16x the request
_UNKNOWN_MAX_TOKENS = 512  # threshold for exact counting until the server's limit is known
#: Discovery answers that stop the client (the embedding request would fail the same way);
#: any other error status means "this server does not have that endpoint".
_DISCOVERY_FATAL = frozenset({401, 403}) | _RETRY_STATUS
_DISCOVERY_ANSWER = 1 << 20  # a discovery answer is a small JSON object (SGLang's /server_info: ~10 KB)


# --------------------------------------------------------------------------------------------
# What a flow asks its driver to do
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Send:
    method: str
    url: str
    payload: Any = None
    #: ``time.monotonic()`` by which the exchange must be over (``None``: ``timeout`` from now).
    deadline: float | None = None
    #: Most bytes of (decoded) answer body accepted (``None``: derived from the request's size).
    max_bytes: int | None = None


@dataclass(frozen=True)
class _Sleep:
    seconds: float


_Op = _Send | _Sleep
_Result = Answer | Exception | None
Flow = Generator[_Op, _Result, T]


@dataclass
class EmbeddingResult:
    """Vectors for one call, with the input positions they belong to.

    ``vectors[k]`` is the embedding of input ``indices[k]``. With ``empty_text="skip"`` skipped
    inputs have no row; otherwise ``indices`` is ``0..n-1``.
    """

    vectors: Vectors
    indices: NDArray[np.int64]
    prompt_tokens: int = 0

    def tolist(self) -> list[list[float]]:
        """Vectors as lists of Python floats (what LangChain and LlamaIndex expect)."""
        out: list[list[float]] = self.vectors.tolist()
        return out


@dataclass
class _Item:
    """One request input: a text, or token ids from the served model's own tokenizer."""

    target: int  # row of the output it contributes to
    text: str | None = None
    ids: list[int] | None = None
    weight: float = 1.0

    def cost(self) -> int:
        if self.ids is not None:
            return len(self.ids)
        assert self.text is not None
        return len(self.text.encode("utf-8", "surrogatepass")) // 3 + 2


@dataclass
class _State:
    """What the client learns from the server, once per client, shared by all calls."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    facts: ServerFacts | None = None  # the discovery answers (None: not asked yet)
    mismatch: ConfigurationError | None = None  # raised by every call once seen
    model: str | None = None  # the name requests carry
    preset: ModelPreset | None = None
    query_prompt: str | None = None  # what queries get when no task is given
    shape: dict[str, int] = field(default_factory=dict)  # batch_size, max_batch_tokens, max_concurrency
    noted_no_prompt: bool = False
    native_dim: int | None = None
    client_side_dims: bool = False
    use_float: bool = False
    max_model_len: int | None = None
    special_prefix: list[int] | None = None
    special_suffix: list[int] | None = None
    no_tokenize: bool = False
    prompt_tokens: int = 0
    requests: int = 0


def _settings_shape(s: QwenSGLangSettings) -> dict[str, int]:
    return {"batch_size": s.batch_size, "max_batch_tokens": s.max_batch_tokens, "max_concurrency": s.max_concurrency}


class EmbeddingClient:
    """Framework-free client for Qwen3-Embedding served by SGLang (or the local backend).

    Setup:
        ```bash
        pip install qwen-sglang
        qwen-sglang serve --model Qwen/Qwen3-Embedding-4B   # or any SGLang server
        ```

    Key init args:
        Any field of `qwen_sglang.QwenSGLangSettings` (``base_url``, ``model``,
        ``dimensions``, ``query_instruction``, ``batch_size``, ``max_concurrency``, ...), or a
        ready ``settings=`` object.

    Instantiate:
        ```python
        from qwen_sglang import EmbeddingClient

        client = EmbeddingClient(base_url="http://127.0.0.1:30000/v1", dimensions=1024)
        ```

    Embed:
        ```python
        docs = client.embed_documents(["SGLang serves Qwen3-Embedding."])
        query = client.embed_query("What serves Qwen3-Embedding?")
        ```

    Async:
        ```python
        docs = await client.aembed_documents(["SGLang serves Qwen3-Embedding."])
        ```
    """

    def __init__(
        self,
        settings: QwenSGLangSettings | None = None,
        *,
        http_client: httpx.Client | None = None,
        http_async_client: httpx.AsyncClient | None = None,
        **kwargs: Any,
    ) -> None:
        """Create a client from ``settings`` and/or settings fields as keyword arguments.

        ``http_client`` / ``http_async_client`` replace the internally created httpx clients
        (proxies, custom TLS, test transports). A given async client is used from one event
        loop only; by default the client makes one per loop.
        """
        if settings is not None and kwargs:
            given = settings.model_fields_set & set(QwenSGLangSettings.model_fields)
            fields = {name: getattr(settings, name) for name in given}
            settings = QwenSGLangSettings(**(fields | kwargs))
        self.settings = s = settings if settings is not None else QwenSGLangSettings(**kwargs)
        preset = s.preset
        self._state = _State(
            native_dim=preset.native_dim if preset else None,
            model=s.model,
            preset=preset,
            query_prompt=query_prompt(s.query_instruction) if "query_instruction" in s.explicit_fields else None,
            shape=_settings_shape(s),
        )
        self._given_client = http_client
        self._given_async_client = http_async_client
        self._sync_client: httpx.Client | None = None
        self._async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient]
        self._async_clients = weakref.WeakKeyDictionary()
        self._client_lock = threading.Lock()
        self._pid = self._given_pid = os.getpid()  # connections belong to one process (see _after_fork)
        _LIVE_CLIENTS.add(self)

    # ---------------------------------------------------------------- public properties
    @property
    def base_url(self) -> str:
        return self.settings.base_url

    @property
    def root_url(self) -> str:
        """The server root (``base_url`` without ``/v1``): where ``/health`` lives."""
        return root_url(self.settings.base_url)

    @property
    def model(self) -> str | None:
        """The model name requests carry: the configured one, else (after the first call) the
        one the server serves; ``None`` before the first call when none is configured."""
        return self._state.model

    @property
    def preset(self) -> ModelPreset | None:
        """The preset of the served model, by configured, served or path name (known before the
        first call only for a configured preset name)."""
        return self._state.preset

    @property
    def query_prompt(self) -> str | None:
        """What queries get before their text when no ``task`` is given: Qwen3's
        ``Instruct: {task}\\nQuery:`` for Qwen3-Embedding, the model's own query prompt, or
        ``None``. Settled at the first call unless ``query_instruction`` was set."""
        return self._state.query_prompt

    @property
    def request_shape(self) -> dict[str, int]:
        """``batch_size``, ``max_batch_tokens`` and ``max_concurrency`` as used: the settings
        given explicitly, else (after the first call) what the server advertised
        (``client_defaults`` in ``/server_info``: the local backend's few large requests), else
        the package defaults (the GPU shape, 32 texts x 8 in flight)."""
        return dict(self._state.shape)

    @property
    def server_facts(self) -> ServerFacts | None:
        """What the server said about itself at the first call (``None`` before it); see
        `discover`."""
        return self._state.facts

    @property
    def embedding_dim(self) -> int | None:
        """Width of the vectors this client returns: ``dimensions`` if set, else the native
        width of a preset model, else what the server returned (``None`` before the first
        call for unknown models)."""
        return self.settings.dimensions or self._state.native_dim

    @property
    def prompt_tokens(self) -> int:
        """Sum of ``usage.prompt_tokens`` reported by the server for this client."""
        return self._state.prompt_tokens

    @property
    def client_side_dimensions(self) -> bool:
        """``True`` once the client truncates vectors itself because the server cannot."""
        return self._state.client_side_dims

    # ---------------------------------------------------------------- public sync API
    def embed_documents(self, texts: Sequence[str], *, dimensions: int | None = None) -> list[list[float]]:
        """Embed documents (no instruction). Returns one list of floats per text."""
        return self._aligned(self.embed(texts, kind="document", dimensions=dimensions))

    def embed_query(self, text: str, *, task: str | None = None, dimensions: int | None = None) -> list[float]:
        """Embed one query with the Qwen3 instruction (``task`` overrides the default)."""
        return self._aligned(self.embed([text], kind="query", task=task, dimensions=dimensions))[0]

    def embed_queries(
        self, texts: Sequence[str], *, task: str | None = None, dimensions: int | None = None
    ) -> list[list[float]]:
        """Embed several queries with the Qwen3 instruction."""
        return self._aligned(self.embed(texts, kind="query", task=task, dimensions=dimensions))

    def embed(
        self,
        texts: Sequence[str],
        *,
        kind: Kind = "document",
        task: str | None = None,
        dimensions: int | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> EmbeddingResult:
        """Embed ``texts`` and return numpy vectors with their input indices.

        ``on_progress(texts, tokens)`` is called as each request finishes (bulk jobs use it to
        drive their own progress display); ``show_progress`` draws a bar advancing the same way.
        """
        job = self._job(texts, kind, task, dimensions, on_progress)
        if not job.rows:
            return job.finish()
        items = self._run(self._plan_flow(job))
        return self._fan_out_sync(job, items)

    # ---------------------------------------------------------------- public async API
    async def aembed_documents(self, texts: Sequence[str], *, dimensions: int | None = None) -> list[list[float]]:
        """Async `embed_documents`."""
        return self._aligned(await self.aembed(texts, kind="document", dimensions=dimensions))

    async def aembed_query(self, text: str, *, task: str | None = None, dimensions: int | None = None) -> list[float]:
        """Async `embed_query`."""
        result = await self.aembed([text], kind="query", task=task, dimensions=dimensions)
        return self._aligned(result)[0]

    async def aembed_queries(
        self, texts: Sequence[str], *, task: str | None = None, dimensions: int | None = None
    ) -> list[list[float]]:
        """Async `embed_queries`."""
        return self._aligned(await self.aembed(texts, kind="query", task=task, dimensions=dimensions))

    async def aembed(
        self,
        texts: Sequence[str],
        *,
        kind: Kind = "document",
        task: str | None = None,
        dimensions: int | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> EmbeddingResult:
        """Async `embed`."""
        job = self._job(texts, kind, task, dimensions, on_progress)
        if not job.rows:
            return job.finish()
        items = await self._arun(self._plan_flow(job))
        return await self._fan_out_async(job, items)

    # ---------------------------------------------------------------- discovery
    def discover(self) -> ServerFacts:
        """Ask the server what it serves, once per client (every call does this first).

        Fetches ``/v1/models``, ``/model_info`` (``/get_model_info`` on older SGLang) and
        ``/server_info``, keeps the answers (`server_facts`) and settles `model`, `preset`,
        `query_prompt`, the native width and the request shape. A configured model that is not
        the served one raises `qwen_sglang.errors.ModelMismatchError`, now and at every later
        call. A server that answers none of them keeps working with the configured model, or
        ``Qwen/Qwen3-Embedding-4B`` with a warning. Connection and authentication errors are
        raised like any call's, and the next call asks again.
        """
        return self._run(self._discover_flow())

    async def adiscover(self) -> ServerFacts:
        """Async `discover`."""
        return await self._arun(self._discover_flow())

    # ---------------------------------------------------------------- token counts
    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Exact token counts from the server's tokenizer, end token included."""
        return self._run(self._count_flow(_check_texts(texts)))

    async def acount_tokens(self, texts: Sequence[str]) -> list[int]:
        """Async `count_tokens`."""
        return await self._arun(self._count_flow(_check_texts(texts)))

    def tokenize(self, texts: Sequence[str], *, add_special_tokens: bool = True) -> list[list[int]]:
        """Token ids from the server's tokenizer (``/v1/tokenize``)."""
        return self._run(self._tokenize_flow(_check_texts(texts), add_special_tokens))

    # ---------------------------------------------------------------- lifecycle
    def close(self) -> None:
        """Close the HTTP connections of the sync client (async ones close with their loop)."""
        self._check_process()
        with self._client_lock:
            for client in (self._sync_client, self._given_client):
                if client is not None:
                    client.close()
            self._sync_client = self._given_client = None

    async def aclose(self) -> None:
        """Close the async HTTP client of the running event loop."""
        self._check_process()
        client = self._async_clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    def __enter__(self) -> EmbeddingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> EmbeddingClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        s = self.settings
        return f"EmbeddingClient(base_url={s.base_url!r}, model={s.model!r}, dimensions={s.dimensions})"

    def __reduce__(self) -> tuple[Any, ...]:
        """A pickled client is its settings (without secrets, see `QwenSGLangSettings`): the
        unpickled one opens its own connections and learns the server again."""
        if self._given_client is not None or self._given_async_client is not None:
            raise TypeError("an EmbeddingClient made with http_client= or http_async_client= cannot be pickled")
        return (type(self), (self.settings,))

    # ================================================================ drivers (the only IO)
    def _headers(self) -> dict[str, str]:
        """The headers of one request. The Authorization header is made here, per request, from
        the settings' secret: the client keeps no plain copy of it."""
        s = self.settings
        headers = {"User-Agent": f"qwen-sglang/{__version__}", "Accept-Encoding": ACCEPT_ENCODING}
        if s.default_headers:
            headers.update(s.default_headers)
        if s.api_key is not None:
            headers["Authorization"] = "Bearer " + s.api_key.get_secret_value()
        elif s.url_credentials is not None:
            basic = base64.b64encode(s.url_credentials.get_secret_value().encode("utf-8")).decode("ascii")
            headers["Authorization"] = "Basic " + basic
        return headers

    def _limits(self) -> httpx.Limits:
        n = self.settings.max_concurrency
        return httpx.Limits(max_connections=n + 4, max_keepalive_connections=n + 4)

    def _check_process(self) -> None:
        # The fork hook has normally run already; this catches forks it did not see.
        if self._pid != os.getpid():
            self._after_fork()

    def _after_fork(self) -> None:
        """In a forked child: forget the parent's connections and locks.

        A pooled keep-alive connection is one socket shared by both processes after a fork: both
        would write requests on it and read each other's answers. The child drops the pools
        without closing them (closing could end the parent's TLS session) and makes its own on
        first use; locks are new too (one held by a parent thread would never be released here).
        """
        self._pid = os.getpid()
        self._client_lock = threading.Lock()
        self._state.lock = threading.Lock()
        self._sync_client = None
        self._async_clients = weakref.WeakKeyDictionary()

    def _refuse_given_after_fork(self) -> None:
        raise ConfigurationError(
            "this EmbeddingClient was given an httpx client (http_client= / http_async_client=) before "
            "os.fork(): its pooled connections are shared with the parent process, which would read this "
            "process's answers. Make the EmbeddingClient (and the httpx client) in the child, or leave "
            "http_client out: the client's own connections are rebuilt in each process"
        )

    def _http(self) -> httpx.Client:
        self._check_process()
        with self._client_lock:
            if self._given_client is not None:
                if self._given_pid_differs():
                    self._refuse_given_after_fork()
                return self._given_client
            if self._sync_client is None:
                self._sync_client = new_sync_client(self._limits(), self.base_url)
            return self._sync_client

    def _ahttp(self) -> httpx.AsyncClient:
        # One AsyncClient per event loop: a client bound to a closed loop (a second
        # asyncio.run(), a new Jupyter cell loop) would fail with "Event loop is closed".
        self._check_process()
        if self._given_async_client is not None:
            if self._given_pid_differs():
                self._refuse_given_after_fork()
            return self._given_async_client
        loop = asyncio.get_running_loop()
        client = self._async_clients.get(loop)
        if client is None:
            client = new_async_client(self._limits())
            self._async_clients[loop] = client
        return client

    def _given_pid_differs(self) -> bool:
        return self._given_pid != os.getpid()

    def _request(self, http: httpx.Client | httpx.AsyncClient, op: _Send) -> tuple[httpx.Request, int, float | None]:
        """The request of ``op``, its answer's size bound and its deadline."""
        timeout = self.settings.timeout
        deadline = op.deadline
        if deadline is None and timeout is not None:
            deadline = time.monotonic() + timeout
        left = None if deadline is None else max(deadline - time.monotonic(), 0.001)
        request = http.build_request(
            op.method, op.url, json=op.payload, headers=self._headers(), timeout=httpx.Timeout(left)
        )
        limit = op.max_bytes if op.max_bytes is not None else _DEFAULT_ANSWER + 16 * len(request.content)
        return request, limit, deadline

    def _run(self, flow: Flow[T]) -> T:
        result: _Result = None
        while True:
            try:
                op = flow.send(result)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            if isinstance(op, _Sleep):
                time.sleep(op.seconds)
                result = None
                continue
            http = self._http()
            try:
                result = exchange(http, *self._request(http, op))
            except (httpx.HTTPError, MalformedResponseError) as exc:
                result = exc

    async def _arun(self, flow: Flow[T]) -> T:
        result: _Result = None
        while True:
            try:
                op = flow.send(result)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            if isinstance(op, _Sleep):
                await asyncio.sleep(op.seconds)
                result = None
                continue
            http = self._ahttp()
            try:
                result = await aexchange(http, *self._request(http, op))
            except (httpx.HTTPError, MalformedResponseError) as exc:
                result = exc

    # ================================================================ fan-out (bounded)
    def _fan_out_sync(self, job: _Job, items: list[_Item]) -> EmbeddingResult:
        batches = self._batches(items)
        job.start(items, self.settings.show_progress and len(batches) > 1)
        workers = min(self._state.shape["max_concurrency"], len(batches))
        try:
            if workers <= 1:
                for batch in batches:
                    job.add(batch, self._run(self._batch_flow(batch, job.dimensions)))
                return job.finish()
            pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="qwen-sglang-client")
            try:
                futures = {pool.submit(self._run, self._batch_flow(b, job.dimensions)): b for b in batches}
                pending = set(futures)
                while pending:
                    # FIRST_COMPLETED: progress advances as each request finishes, and the first
                    # failure is raised as soon as it is seen (the rest are cancelled below).
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in done:
                        job.add(futures[fut], fut.result())
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
            return job.finish()
        finally:
            job.stop()

    async def _fan_out_async(self, job: _Job, items: list[_Item]) -> EmbeddingResult:
        batches = self._batches(items)
        job.start(items, self.settings.show_progress and len(batches) > 1)
        limit = asyncio.Semaphore(self._state.shape["max_concurrency"])

        async def one(batch: list[_Item]) -> None:
            async with limit:
                answer = await self._arun(self._batch_flow(batch, job.dimensions))
            job.add(batch, answer)

        try:
            async with asyncio.TaskGroup() as group:  # the first failure cancels the rest
                for batch in batches:
                    group.create_task(one(batch))
        except BaseExceptionGroup as eg:
            raise eg.exceptions[0] from None
        finally:
            job.stop()
        return job.finish()

    def _batches(self, items: list[_Item]) -> list[list[_Item]]:
        """Group items into requests by count and token budget, never mixing texts and ids."""
        batches: list[list[_Item]] = []
        current: list[_Item] = []
        tokens = 0
        shape = self._state.shape
        for item in items:
            cost = item.cost()
            same_kind = not current or (current[0].ids is None) == (item.ids is None)
            if current and (
                not same_kind or len(current) >= shape["batch_size"] or tokens + cost > shape["max_batch_tokens"]
            ):
                batches.append(current)
                current, tokens = [], 0
            current.append(item)
            tokens += cost
        if current:
            batches.append(current)
        return batches

    # ================================================================ preparation (no IO)
    def _job(
        self,
        texts: Sequence[str],
        kind: Kind,
        task: str | None,
        dimensions: int | None,
        on_progress: ProgressCallback | None = None,
    ) -> _Job:
        if kind not in ("query", "document"):
            raise InputTypeError(f"kind must be 'query' or 'document', not {kind!r}")
        texts = _check_texts(texts)
        if task is not None and not isinstance(task, str):
            raise InputTypeError(f"task must be a str or None, not {type(task).__name__}")
        dims = validate_dimensions(dimensions, self._state.preset, self.settings.model)
        dims = dims if dims is not None else self.settings.dimensions
        policy = self.settings.empty_text
        rows: list[int] = []
        for i, text in enumerate(texts):
            if not text.strip():
                if policy == "raise":
                    raise InvalidInputError(
                        f"text at index {i} is empty or whitespace only; such texts are never "
                        "sent to the server (set empty_text='zero' or 'skip' to allow them)",
                        index=i,
                    )
                if policy == "skip":
                    logger.warning("skipping empty text at index %d", i)
                continue  # "zero": an all-zero output row; either way no request
            rows.append(i)
        keep_zero = policy == "zero"
        return _Job(
            n_inputs=len(texts),
            rows=rows,
            texts=[texts[i] for i in rows],
            task=task,
            kind=kind,
            dimensions=dims,
            out_indices=list(range(len(texts))) if keep_zero else rows,
            state=self._state,
            on_progress=on_progress,
        )

    def _prepare(self, job: _Job) -> None:
        """After discovery: check the width against the served model; apply the query prompt."""
        st = self._state
        dims = job.dimensions
        if dims is not None:
            validate_dimensions(dims, st.preset, st.model)
            if st.native_dim is not None and dims > st.native_dim:
                raise ConfigurationError(
                    f"dimensions={dims} is wider than the {st.native_dim}-d vectors of the served model "
                    f"{st.model} (its Matryoshka range is 1..{st.native_dim})"
                )
        if job.kind == "document":
            job.send = job.texts
            return
        prompt = query_prompt(job.task) if job.task is not None else st.query_prompt
        if prompt is None and job.task is None and "query_instruction" not in self.settings.explicit_fields:
            self._note_no_prompt()
        job.send = [prompt + text for text in job.texts] if prompt else job.texts

    def _note_no_prompt(self) -> None:
        st = self._state
        with st.lock:
            if st.noted_no_prompt:
                return
            st.noted_no_prompt = True
        logger.warning(
            "queries are embedded without an instruction: the served model %s is not known to use one "
            "(no Qwen3-Embedding name or architecture, no sentence-transformers query prompt). Set "
            "query_instruction='retrieval' (or a task of your own; the CLI's --task) to add Qwen3's, or "
            "query_instruction=None to silence this note",
            st.model,
        )

    def _max_tokens(self) -> int | None:
        s = self.settings
        limit = s.max_tokens
        preset = self._state.preset
        if limit is None and preset is not None:
            limit = preset.context_length
        if self._state.max_model_len is not None:
            limit = min(limit, self._state.max_model_len) if limit else self._state.max_model_len
        return limit

    # ================================================================ flows (logic, no IO)
    def _request_flow(
        self, method: str, path: str, payload: Any = None, *, root: bool = False, max_bytes: int | None = None
    ) -> Flow[Any]:
        """Send one request with retries; return the decoded JSON body.

        Each attempt ends within ``timeout``; all of them, with the pauses between them, by the
        retry deadline (`_retry_deadline`). A wait that would end past it is not taken. An
        answer larger than ``max_bytes`` (default: from the request's size) is refused.
        """
        s = self.settings
        url = (self.root_url if root else self.base_url) + path
        overall = _retry_deadline(s.timeout, s.max_retries)
        attempt = 0
        while True:
            deadline = None if s.timeout is None else time.monotonic() + s.timeout
            if deadline is not None and overall is not None:
                deadline = min(deadline, overall)
            result = yield _Send(method, url, payload, deadline=deadline, max_bytes=max_bytes)
            assert result is not None
            wait: float | None = None
            if isinstance(result, Answer):
                if result.status_code < 300:
                    return _answer_json(result, url)
                error: Exception = _status_error(result, url, self.base_url)
                retry = result.status_code in _RETRY_STATUS
                wait = _retry_after(result)
            elif isinstance(result, QwenSGLangError):  # an answer refused as it arrived: not retried
                raise result
            else:
                error = _transport_error(result, url, s.model or DEFAULT_MODEL, s.timeout)
                retry = True
            if not retry or attempt >= s.max_retries:
                raise self._explain_dead_server(error)
            delay = wait if wait is not None else _backoff(attempt)
            if overall is None:
                delay = min(delay, _RETRY_AFTER_MAX)
            elif time.monotonic() + delay >= overall:
                asked = f"the server asked to wait {delay:.0f} s (Retry-After)" if wait is not None else "the backoff"
                left = max(overall - time.monotonic(), 0.0)
                note = (
                    f"(not retried: {asked}, past the retry deadline, {left:.1f} s from now; it follows from "
                    "timeout and max_retries)"
                )
                raise self._explain_dead_server(_with_note(error, note))
            logger.info("retrying %s %s in %.2fs after: %s", method, url, delay, error)
            attempt += 1
            yield _Sleep(delay)

    def _explain_dead_server(self, error: Exception) -> Exception:
        """A connection error to a managed server that has exited says so, with its log tail."""
        server = self.settings.server
        if not isinstance(error, APIConnectionError) or server is None:
            return error
        proc = getattr(server, "_proc", None)
        if proc is None or proc.poll() is None:
            return error
        tail = server.logs_tail(20) if hasattr(server, "logs_tail") else ""
        return APIConnectionError(
            f"the managed {getattr(server, 'backend', '')} server at {self.base_url} (pid {proc.pid}) exited "
            f"with code {proc.returncode}; last lines of its log:\n{tail}",
            url=error.url,
        )

    def _probe_flow(self, path: str, *, root: bool = False) -> Flow[Any]:
        """GET a discovery endpoint: its JSON object, or ``None`` where the server has none."""
        try:
            body = yield from self._request_flow("GET", path, root=root, max_bytes=_DISCOVERY_ANSWER)
        except APIStatusError as exc:
            if exc.status_code in _DISCOVERY_FATAL:
                raise
            logger.debug("%s: %s", path, exc)
            return None
        except MalformedResponseError as exc:
            logger.debug("%s: %s", path, exc)
            return None
        return body if isinstance(body, dict) else None

    def _discover_flow(self) -> Flow[ServerFacts]:
        """Learn once what the server serves (`qwen_sglang.client.discovery`); raise a mismatch."""
        st = self._state
        if st.facts is None:
            models = yield from self._probe_flow("/models")
            info = yield from self._probe_flow("/model_info", root=True)
            if info is None:  # SGLang < 0.5.16
                info = yield from self._probe_flow("/get_model_info", root=True)
            server_info = yield from self._probe_flow("/server_info", root=True)
            self._adopt(parse_facts(models, info, server_info))
        if st.mismatch is not None:
            raise st.mismatch
        assert st.facts is not None
        return st.facts

    def _adopt(self, facts: ServerFacts) -> None:
        """Settle model, preset, width, query prompt and request shape from the answers."""
        s, st = self.settings, self._state
        configured = s.model
        mismatch: ConfigurationError | None = None
        if configured is not None and not same_model(configured, facts):
            mismatch = self._mismatch(configured, facts)
        elif configured is None and len(facts.served_names) > 1:  # Ollama, a proxy: no guessing
            mismatch = ConfigurationError(
                f"the server at {self.base_url} serves several models ({', '.join(facts.served_names)}): set "
                "the one to use with model=..., --model or QWEN_SGLANG_MODEL"
            )
        model = configured or facts.served_name or DEFAULT_MODEL
        served = (*facts.served_names, *facts.adapters)
        if configured and configured not in served and facts.served_names and ":" not in configured:
            model = facts.served_names[0]  # the same model, under the name the server serves
        preset = served_preset([model, configured, *facts.names()])
        if "query_instruction" in s.explicit_fields:
            prompt = query_prompt(s.query_instruction)
        else:
            prompt = default_query_prompt(facts, preset, s.query_instruction)
        with st.lock:
            if st.facts is not None:  # another call got there first
                return
            st.model, st.preset, st.query_prompt, st.mismatch = model, preset, prompt, mismatch
            st.native_dim = facts.native_dim or (preset.native_dim if preset else None) or st.native_dim
            st.shape = request_shape(facts.client_defaults, _settings_shape(s), s.explicit_fields)
            st.facts = facts
        if configured is None and not facts.known:
            logger.warning(
                "%s names no model (it answers neither /v1/models nor /model_info): assuming %s. Set the "
                "served model with model=..., --model or QWEN_SGLANG_MODEL",
                self.base_url,
                DEFAULT_MODEL,
            )
        logger.debug("discovered %s: model %s, shape %s, query prompt %r", self.base_url, model, st.shape, prompt)

    def _mismatch(self, configured: str, facts: ServerFacts) -> ModelMismatchError:
        from_env = "model" not in self.settings.model_fields_set and bool(os.environ.get("QWEN_SGLANG_MODEL"))
        where = " (from QWEN_SGLANG_MODEL)" if from_env else ""
        served = facts.served_name or "?"
        return ModelMismatchError(
            f"the server at {self.base_url} serves {facts.describe()}, not the configured model {configured!r}"
            f"{where}. Set the model to the served one (model={served!r}, --model {served}, or "
            "QWEN_SGLANG_MODEL), leave it unset to use whatever the server serves, or point base_url at a "
            f"server of {configured}",
            configured=configured,
            served=served,
        )

    def _tokenize_flow(self, texts: list[str], add_special_tokens: bool) -> Flow[list[list[int]]]:
        if not texts:
            return []
        yield from self._discover_flow()
        body = yield from self._request_flow(
            "POST",
            "/tokenize",
            {"model": self._state.model, "prompt": texts, "add_special_tokens": add_special_tokens},
        )
        try:
            tokens = body["tokens"]
            if texts and tokens and isinstance(tokens[0], int):
                tokens = [tokens]
            if body.get("max_model_len"):
                self._state.max_model_len = int(body["max_model_len"])
            if len(tokens) != len(texts):
                raise ValueError(f"{len(tokens)} token lists for {len(texts)} texts")
            return [list(map(int, t)) for t in tokens]
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise MalformedResponseError(
                f"unexpected /v1/tokenize answer: {exc}", url=self.base_url + "/tokenize"
            ) from None

    def _special_tokens_flow(self) -> Flow[tuple[list[int], list[int]]]:
        """Learn once which special tokens the tokenizer wraps a text in (Qwen3: none before,
        ``<|endoftext|>`` after; BERT-style models: [CLS] ... [SEP])."""
        st = self._state
        if st.special_prefix is None or st.special_suffix is None:
            probe = ["hello world"]
            with_special = (yield from self._tokenize_flow(probe, True))[0]
            plain = (yield from self._tokenize_flow(probe, False))[0]
            start = _find_sub(with_special, plain)
            if start < 0:
                raise MalformedResponseError(
                    "could not align the tokenizer's special tokens (tokenize with and without "
                    "special tokens disagree)",
                    url=self.base_url + "/tokenize",
                )
            st.special_prefix = with_special[:start]
            st.special_suffix = with_special[start + len(plain) :]
        return st.special_prefix, st.special_suffix

    def _count_flow(self, texts: list[str]) -> Flow[list[int]]:
        return [len(t) for t in (yield from self._tokenize_flow(texts, True))]

    def _plan_flow(self, job: _Job) -> Flow[list[_Item]]:
        """Turn the job's texts into request items, applying the long-text policy.

        Only texts that *could* exceed the limit are counted (a token is at least one byte),
        so ordinary calls make no extra request.
        """
        yield from self._discover_flow()
        self._prepare(job)
        items: list[_Item] = []
        limit = self._max_tokens()
        threshold = limit if limit is not None else _UNKNOWN_MAX_TOKENS
        suspects: list[int] = []
        for k, text in enumerate(job.send):
            if len(text.encode("utf-8", "surrogatepass")) + 8 > threshold:
                suspects.append(k)
        plain = [_Item(target=k, text=t) for k, t in enumerate(job.send)]
        if not suspects or self._state.no_tokenize:
            return plain
        try:
            prefix, suffix = yield from self._special_tokens_flow()
            tokens = yield from self._tokenize_flow([job.send[k] for k in suspects], False)
        except NotFoundError:
            # Not SGLang (or the local backend): no exact counts, so texts go as they are and
            # the server applies its own limit.
            logger.warning("the server has no /v1/tokenize: long_text=%r cannot apply", self.settings.long_text)
            self._state.no_tokenize = True
            return plain
        limit = self._max_tokens()  # the tokenize answer told us the server's limit
        if limit is None:
            return plain
        counted = dict(zip(suspects, tokens, strict=True))
        extra = len(prefix) + len(suffix)
        policy = self.settings.long_text
        for k, text in enumerate(job.send):
            ids = counted.get(k)
            if ids is None or len(ids) + extra <= limit:
                items.append(_Item(target=k, text=text))
                continue
            if policy == "error":
                raise InvalidInputError(
                    f"text at index {job.rows[k]} has {len(ids) + extra} tokens, more than "
                    f"max_tokens={limit} (set long_text='chunk' or 'truncate' to embed it)",
                    index=job.rows[k],
                )
            if policy == "truncate" or job.kind == "query":
                # Keep the first tokens and the end token that last-token pooling reads.
                items.append(_Item(target=k, ids=prefix + ids[: limit - extra] + suffix))
                continue
            window = min(self.settings.chunk_tokens, limit) - extra
            step = max(1, window - min(self.settings.chunk_overlap, window - 1))
            start = 0
            while True:
                part = ids[start : start + window]
                items.append(_Item(target=k, ids=prefix + part + suffix, weight=float(len(part))))
                if start + window >= len(ids):
                    break
                start += step
        return items

    def _batch_flow(self, batch: list[_Item], dims: int | None) -> Flow[tuple[Vectors, int]]:
        """Embed one batch; handle the Matryoshka and encoding fallbacks; check the answer."""
        st = self._state
        inputs: list[Any] = [it.ids if it.ids is not None else it.text for it in batch]
        while True:
            send_dims = dims is not None and not st.client_side_dims and dims != st.native_dim
            use_float = st.use_float or self.settings.encoding_format == "float"
            payload: dict[str, Any] = {"model": st.model, "input": inputs}
            payload["encoding_format"] = "float" if use_float else "base64"
            if send_dims:
                payload["dimensions"] = dims
            try:
                limit = _embeddings_answer_limit(len(batch), st.native_dim)
                body = yield from self._request_flow("POST", "/embeddings", payload, max_bytes=limit)
            except RequestTooLargeError as exc:
                if len(batch) < 2:
                    raise
                return (yield from self._split_flow(batch, dims, exc))
            except BadRequestError as exc:
                msg = (exc.server_message or str(exc)).lower()
                if send_dims and "matryoshka" in msg:
                    with st.lock:
                        if not st.client_side_dims:
                            logger.warning(
                                "the server cannot truncate to dimensions=%s (%s); truncating and "
                                "re-normalising on the client from now on",
                                dims,
                                exc.server_message,
                            )
                        st.client_side_dims = True
                    continue
                if not use_float and self.settings.encoding_format == "auto" and ("encoding" in msg or "base64" in msg):
                    logger.warning("the server rejected base64 encoding; using float from now on")
                    st.use_float = True
                    continue
                raise
            vectors, tokens = _parse_embeddings(body, len(batch), self.base_url + "/embeddings")
            # SGLang returns bf16-rounded values whose norms are off by up to ~0.3%: restore unit
            # length in float32 (direction unchanged) so dot-product stores see true cosines.
            normalize_rows(vectors)
            with st.lock:
                st.prompt_tokens += tokens
                st.requests += 1
            return self._fit_width(vectors, dims), tokens

    def _split_flow(self, batch: list[_Item], dims: int | None, exc: RequestTooLargeError) -> Flow[tuple[Vectors, int]]:
        """A batch the server refused as too large (413: its per-request limit on inputs, tokens
        or bytes): embed its halves, in order. Token budgets are estimated from UTF-8 length
        (digits take up to 3x the estimate), so a budget the server advertised can overshoot;
        later requests get half the refused one's estimate, unless ``max_batch_tokens`` was set."""
        st = self._state
        estimate = sum(item.cost() for item in batch)
        if "max_batch_tokens" not in self.settings.explicit_fields:
            with st.lock:
                budget = st.shape["max_batch_tokens"]
                st.shape["max_batch_tokens"] = min(budget, max(1, estimate // 2))
            if st.shape["max_batch_tokens"] < budget:
                logger.warning(
                    "the server refused a request of %d texts (~%d tokens estimated) as too large (%s): "
                    "sending it in halves, and at most ~%d tokens per request from now on",
                    len(batch),
                    estimate,
                    exc.server_message or exc,
                    st.shape["max_batch_tokens"],
                )
        half = len(batch) // 2
        first, first_tokens = yield from self._batch_flow(batch[:half], dims)
        second, second_tokens = yield from self._batch_flow(batch[half:], dims)
        return np.concatenate([first, second]), first_tokens + second_tokens

    def _fit_width(self, vectors: Vectors, dims: int | None) -> Vectors:
        st = self._state
        width = vectors.shape[1]
        if dims is None or width == dims:
            if dims is None:
                if st.native_dim is None:
                    st.native_dim = width
                elif width != st.native_dim and not st.client_side_dims:
                    raise MalformedResponseError(
                        f"the server returned {width}-d vectors; {st.model} is "
                        f"{st.native_dim}-d (is base_url serving another model?)",
                        url=self.base_url,
                    )
            return vectors
        if width < dims:
            raise MalformedResponseError(
                f"asked for dimensions={dims} but the server returned {width}-d vectors",
                url=self.base_url,
            )
        if not st.client_side_dims:
            # SGLang < 0.5.5 ignores `dimensions` and returns the full vector.
            logger.warning(
                "the server ignored dimensions=%s and returned %s-d vectors; truncating and "
                "re-normalising on the client from now on",
                dims,
                width,
            )
            st.client_side_dims = True
        if st.native_dim is None:
            st.native_dim = width
        return normalize_rows(np.ascontiguousarray(vectors[:, :dims]))

    @staticmethod
    def _aligned(result: EmbeddingResult) -> list[list[float]]:
        return result.tolist()


# ============================================================================================
# Jobs: the shared bookkeeping of one call
# ============================================================================================
@dataclass
class _Job:
    n_inputs: int
    rows: list[int]  # input index of each text that is sent
    texts: list[str]  # the texts of those rows, as given
    task: str | None  # the call's own task (None: the client's query prompt)
    kind: Kind
    dimensions: int | None
    out_indices: list[int]  # input indices of the output rows
    state: _State
    on_progress: ProgressCallback | None = None
    send: list[str] = field(default_factory=list)  # the texts as sent (query prompt applied)
    prompt_tokens: int = 0
    _sums: dict[int, Vectors] = field(default_factory=dict)
    _parts: dict[int, int] = field(default_factory=dict)
    _remaining: dict[int, int] = field(default_factory=dict)  # windows still to come, per text
    _bar: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, items: list[_Item], show: bool) -> None:
        """Count what each text waits for and open the progress bar (one tick per text)."""
        for item in items:
            self._remaining[item.target] = self._remaining.get(item.target, 0) + 1
        if show:
            self._bar = progress_bar(total=len(self.send), unit="text", desc="Embedding")

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def add(self, batch: list[_Item], answer: tuple[Vectors, int]) -> None:
        """Fold one request's vectors in; report the texts it completed."""
        vectors, tokens = answer
        completed = 0
        with self._lock:
            self.prompt_tokens += tokens
            for item, vec in zip(batch, vectors, strict=True):
                if item.target in self._sums:
                    self._sums[item.target] += vec * item.weight
                    self._parts[item.target] += 1
                else:
                    self._sums[item.target] = vec * item.weight if item.weight != 1.0 else vec.copy()
                    self._parts[item.target] = 1
                left = self._remaining.get(item.target, 1) - 1
                self._remaining[item.target] = left
                completed += left == 0
        if self._bar is not None:
            self._bar.update(completed)
        if self.on_progress is not None:
            self.on_progress(completed, tokens)

    def finish(self) -> EmbeddingResult:
        dim = next((v.shape[0] for v in self._sums.values()), None)
        if dim is None:
            dim = self.dimensions or self.state.native_dim or 0
        out = np.zeros((len(self.out_indices), dim), dtype=np.float32)
        position = {idx: r for r, idx in enumerate(self.out_indices)}
        for k, vec in self._sums.items():
            out[position[self.rows[k]]] = vec
        multi = [position[self.rows[k]] for k, n in self._parts.items() if n > 1]
        if multi:
            out[multi] = normalize_rows(out[multi])
        return EmbeddingResult(
            vectors=out,
            indices=np.asarray(self.out_indices, dtype=np.int64),
            prompt_tokens=self.prompt_tokens,
        )


# ============================================================================================
# Helpers
# ============================================================================================
def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise InputTypeError(
            "expected a list of texts, got a single str (use embed_query for one query, or wrap the document in a list)"
        )
    if isinstance(texts, bytes | bytearray):
        raise InputTypeError("expected a list of str, got bytes (decode it first)")
    try:
        out = list(texts)
    except TypeError:
        raise InputTypeError(f"expected a list of str, got {type(texts).__name__}") from None
    for i, text in enumerate(out):
        if not isinstance(text, str):
            raise InputTypeError(
                f"text at index {i} is {type(text).__name__}, not str"
                + (" (decode bytes first)" if isinstance(text, bytes | bytearray) else ""),
                index=i,
            )
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInputError(
                f"text at index {i} contains a lone surrogate and is not valid Unicode "
                "(decode your input with errors='replace')",
                index=i,
            ) from None
    return out


def _find_sub(seq: list[int], sub: list[int]) -> int:
    if not sub:
        return 0
    for i in range(len(seq) - len(sub) + 1):
        if seq[i : i + len(sub)] == sub:
            return i
    return -1


def _backoff(attempt: int) -> float:
    """Exponential backoff with full jitter in [base*2^n / 2, base*2^n], capped."""
    ceiling = min(_BACKOFF_MAX, _BACKOFF_BASE * 2.0**attempt)
    return ceiling / 2 + random.random() * ceiling / 2


def _retry_deadline(timeout: float | None, max_retries: int) -> float | None:
    """When one request, with all its retries and pauses, must be over (``time.monotonic()``):
    every attempt may take ``timeout`` and every pause the longest backoff (8 s);
    ``None`` without a timeout."""
    if timeout is None:
        return None
    return time.monotonic() + (max_retries + 1) * timeout + max_retries * _BACKOFF_MAX


def _embeddings_answer_limit(count: int, width: int | None) -> int:
    """The most bytes an honest ``/embeddings`` answer of ``count`` vectors can take: JSON floats
    at a generous 32 bytes each, twice over, for vectors as wide as the model's (at least the
    widest preset's; 8192 while unknown)."""
    width = max(width, _WIDEST_PRESET) if width else _UNKNOWN_WIDTH
    return _ANSWER_BASE + 2 * count * (width * _BYTES_PER_VALUE + 256)


def _retry_after(response: Answer) -> float | None:
    """Seconds the server asks to wait (not capped here: the caller caps it by its deadline)."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            parsed = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = parsed.timestamp() - time.time()
    if not math.isfinite(seconds):
        return None
    return max(seconds, 0.0)


def _decode_json(content: bytes) -> Any:
    """JSON answer bodies, with orjson where installed: parsing the floats of a JSON answer is
    most of the client's CPU time when the server sends no base64 (SGLang < 0.5.17), and orjson
    does it ~6x faster than the standard library. What orjson refuses (bare NaN tokens, which
    Python servers write, numbers beyond float range, or non-UTF-8 text) goes to the standard
    library, so every body is read as before and bad values still get their specific error."""
    if _orjson_loads is not None:
        try:
            return _orjson_loads(content)
        except ValueError:
            pass
    return json.loads(content)


def _answer_json(answer: Answer, url: str) -> Any:
    if not answer.content:
        return None
    try:
        return _decode_json(answer.content)
    except ValueError:
        raise MalformedResponseError(
            f"{url} answered {answer.status_code} with a body that is not JSON: {answer.text[:200]!r}", url=url
        ) from None


def _server_message(response: Answer) -> tuple[str, Any]:
    try:
        body = _decode_json(response.content)
    except ValueError:
        return response.text.strip()[:500], response.text
    if isinstance(body, dict):
        message = body.get("message") or body.get("detail") or body.get("error")
        if isinstance(message, dict):
            message = message.get("message") or json.dumps(message)
        if message:
            return str(message), body
    return json.dumps(body)[:500], body


def _with_note(error: Exception, note: str) -> Exception:
    """``error`` with ``note`` appended to its message (its type and fields kept)."""
    error.args = (f"{error} {note}", *error.args[1:])
    return error


def _redirect_message(response: Answer, url: str, base_url: str) -> str:
    code = response.status_code
    location = response.headers.get("location")
    if not location:
        return f"{url} answered HTTP {code}, a redirect without a Location: point base_url at the server itself"
    target = redact_url(urljoin(url, location))
    suffix = url[len(base_url) :] if url.startswith(base_url) else ""
    if suffix and target.split("?")[0].endswith(suffix):
        fix = f"set base_url to {target.split('?')[0][: -len(suffix)]!r}"
    else:
        fix = "point base_url at the address the server is really served from"
    return (
        f"{url} answered HTTP {code}, redirecting to {target}; the client does not follow redirects (a POST "
        f"would lose its body, or its credentials to another host): {fix}"
    )


def _status_error(response: Answer, url: str, base_url: str) -> APIStatusError:
    code = response.status_code
    message, body = _server_message(response)
    if 300 <= code < 400:
        text = _redirect_message(response, url, base_url)
        return status_error_class(code)(text, status_code=code, url=url, body=body, server_message=message)
    text = f"{url} answered HTTP {code}: {message}"
    lowered = message.lower()
    if code in (401, 403):
        text += " (check api_key / QWEN_SGLANG_API_KEY against the server's --api-key)"
    elif code == 404:
        hint = " (is base_url missing '/v1'?)" if not base_url.endswith("/v1") else ""
        text += f"{hint} (is this an SGLang or OpenAI-compatible embedding server?)"
    elif "is-embedding" in lowered or "is_embedding" in lowered or "generation model" in lowered:
        text += " (the server runs the model as a generation model: restart it with --is-embedding)"
    elif "matryoshka" in lowered:
        text += " (start SGLang with --json-model-override-args '{\"is_matryoshka\": true}' to let it truncate)"
    return status_error_class(code)(text, status_code=code, url=url, body=body, server_message=message)


def _transport_error(exc: Exception, url: str, model: str, timeout: float | None = None) -> APIConnectionError:
    if isinstance(exc, httpx.TimeoutException):
        within = f"within timeout={timeout:g} s " if timeout is not None else ""
        return APITimeoutError(
            f"{url} did not answer {within}(connecting, sending, the headers and the whole body count "
            f"together; {type(exc).__name__})",
            url=url,
        )
    reason = str(exc) or type(exc).__name__
    return APIConnectionError(
        f"could not connect to the embedding server at {url}: {reason}. Is it running? Start one "
        f"with `qwen-sglang serve --model {model}` (add `--backend local` on a machine without a "
        "GPU), or point base_url / QWEN_SGLANG_BASE_URL at a running server.",
        url=url,
    )


_NUMBER_TYPES = frozenset({float, int})
_MAX_TOKEN_COUNT = 2**53  # beyond this a float is no longer a whole number of anything


def _parse_embeddings(body: Any, expected: int, url: str) -> tuple[Vectors, int]:
    """Decode and check an ``/embeddings`` answer: count, order, width, finiteness."""

    def bad(why: str) -> MalformedResponseError:
        return MalformedResponseError(f"malformed answer from {url}: {why}", url=url)

    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        raise bad("no 'data' list")
    data = body["data"]
    if len(data) != expected:
        raise bad(f"{len(data)} embeddings for {expected} inputs")
    rows: list[Any] = [None] * expected
    width = -1
    for pos, entry in enumerate(data):
        if not isinstance(entry, dict) or "embedding" not in entry:
            raise bad(f"entry {pos} has no 'embedding'")
        index = entry.get("index", pos)
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < expected:
            raise bad(f"entry {pos} has index {index!r}")
        if rows[index] is not None:
            raise bad(f"index {index} appears twice")
        emb = entry["embedding"]
        if isinstance(emb, str):
            try:
                raw = base64.b64decode(emb, validate=True)
            except (binascii.Error, ValueError):
                raise bad(f"embedding {index} is not valid base64") from None
            if len(raw) % 4:
                raise bad(f"embedding {index} has {len(raw)} bytes, not a whole number of float32")
            vec = np.frombuffer(raw, dtype="<f4")
        elif isinstance(emb, list):
            kinds = set(map(type, emb))
            if not kinds <= _NUMBER_TYPES:
                what = "booleans" if bool in kinds else "not only numbers"
                raise bad(f"embedding {index} is a list of {what}, not a vector")
            vec = np.asarray(emb, dtype=np.float32)
        else:
            raise bad(f"embedding {index} is a {type(emb).__name__}")
        if width < 0:
            width = vec.shape[0]
        if vec.shape[0] != width or width == 0:
            raise bad(f"embedding {index} has width {vec.shape[0]}, others {width}")
        rows[index] = vec
    matrix = np.empty((expected, max(width, 0)), dtype=np.float32)
    for i, vec in enumerate(rows):
        matrix[i] = vec
    if not np.isfinite(matrix).all():
        raise bad("NaN or infinite values in the vectors")
    zero = np.flatnonzero(~matrix.any(axis=1))
    if zero.size:
        raise bad(
            f"embedding {int(zero[0])} is all zeros ({zero.size} of {expected}): a Qwen3 embedding never is; "
            "the server's pooling or weights are broken (`qwen-sglang doctor` names the cause)"
        )
    return matrix, _prompt_tokens(body.get("usage"), bad)


def _prompt_tokens(usage: Any, bad: Callable[[str], MalformedResponseError]) -> int:
    """``usage.prompt_tokens`` (0 when absent): a whole number of tokens, or the answer is malformed."""
    tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    if tokens is None:
        return 0
    if (
        isinstance(tokens, bool)
        or not isinstance(tokens, int | float)
        or not (0 <= tokens <= _MAX_TOKEN_COUNT and tokens == int(tokens))  # also refuses NaN, inf
    ):
        raise bad(f"usage.prompt_tokens is {str(tokens)[:40]}, not a token count")
    return int(tokens)


# ============================================================================================
# Processes: connections belong to the process that opened them
# ============================================================================================
_LIVE_CLIENTS: weakref.WeakSet[EmbeddingClient] = weakref.WeakSet()


def _forget_connections_after_fork() -> None:
    for client in list(_LIVE_CLIENTS):
        client._after_fork()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_forget_connections_after_fork)
