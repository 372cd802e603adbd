"""`EmbeddingClient`: the public API, and the sync and async shells that drive the engine's flows.

The drivers here are the client's only IO: `EmbeddingClient._run` answers a flow's ops with
``httpx.Client`` and ``time.sleep``, `EmbeddingClient._arun` with ``httpx.AsyncClient`` and
``asyncio.sleep``. Only the fan-out differs (`qwen_sglang.client.fanout`): a thread pool for sync
calls, tasks for async ones, both bounded by the request shape's ``max_concurrency``.
`qwen_sglang.RerankClient` drives its flows through an `EmbeddingClient` (`EmbeddingClient.run_flow`).
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
import weakref
from collections.abc import Sequence
from typing import Any, TypeVar

import httpx

from qwen_sglang._urls import root_url
from qwen_sglang._version import __version__
from qwen_sglang.client.connections import Connections
from qwen_sglang.client.discovery import ServerFacts
from qwen_sglang.client.engine import Engine
from qwen_sglang.client.fanout import agather, gather
from qwen_sglang.client.job import EmbeddingResult, Item, Job, Kind, ProgressCallback, check_texts
from qwen_sglang.client.ops import Flow, Lane, Result, Send, Sleep
from qwen_sglang.client.roles import EMBEDDING, ClientRole
from qwen_sglang.client.state import Terms
from qwen_sglang.client.transport import ACCEPT_ENCODING, aexchange, exchange
from qwen_sglang.errors import MalformedResponseError
from qwen_sglang.presets import ModelPreset
from qwen_sglang.settings import QwenSGLangSettings

__all__ = ["EmbeddingClient"]

T = TypeVar("T")

_DEFAULT_ANSWER = 32 << 20  # requests that do not say what they need: this plus 16x the request


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
        ready ``settings=`` object. The settings are read afresh at every call: a field
        assigned later (``client.settings.dimensions = 256``, validated) or new settings
        (``client.settings = ...``) apply from the next call on.

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
        role: ClientRole = EMBEDDING,
        **kwargs: Any,
    ) -> None:
        """Create a client from ``settings`` and/or settings fields as keyword arguments.

        ``http_client`` / ``http_async_client`` replace the internally created httpx clients
        (proxies, custom TLS, test transports). A given async client is used from one event
        loop only; by default the client makes one per loop. ``role`` is for the package's other
        clients that send through this one (`qwen_sglang.RerankClient`): the class its messages
        name and its default model (`qwen_sglang.client.roles`).
        """
        if settings is not None and kwargs:
            given = settings.model_fields_set & set(QwenSGLangSettings.model_fields)
            fields = {name: getattr(settings, name) for name in given}
            settings = QwenSGLangSettings(**(fields | kwargs))
        self._engine = Engine(settings if settings is not None else QwenSGLangSettings(**kwargs), role)
        self._connections = Connections(http_client, http_async_client, role.client)
        _LIVE_CLIENTS.add(self)

    # ---------------------------------------------------------------- settings and what was learned
    @property
    def settings(self) -> QwenSGLangSettings:
        """The settings, read afresh by every call (assignments to their fields are validated);
        assign new ones to replace them. What was learned from the server is kept while
        ``base_url`` stays the same."""
        return self._engine.settings

    @settings.setter
    def settings(self, value: QwenSGLangSettings) -> None:
        self._engine.settings = value

    @property
    def base_url(self) -> str:
        return self.settings.base_url

    @property
    def base_urls(self) -> tuple[str, ...]:
        """The servers requests are spread over (one, unless ``base_url`` lists several)."""
        return self.settings.base_urls

    @property
    def root_url(self) -> str:
        """The server root (``base_url`` without ``/v1``, of its first server): where ``/health`` lives."""
        return root_url(self.settings.base_urls[0])

    @property
    def model(self) -> str | None:
        """The model name requests carry: the configured one, else (after the first call) the
        one the server serves; ``None`` before the first call when none is configured."""
        return self._engine.terms().model

    @property
    def preset(self) -> ModelPreset | None:
        """The preset of the served model, by configured, served or path name (known before the
        first call only for a configured preset name)."""
        return self._engine.terms().preset

    @property
    def query_prompt(self) -> str | None:
        """What queries get before their text when no ``task`` is given: Qwen3's
        ``Instruct: {task}\\nQuery:`` for Qwen3-Embedding, the model's own query prompt, or
        ``None``. Settled at the first call unless ``query_instruction`` was set."""
        return self._engine.terms().query_prompt

    @property
    def request_shape(self) -> dict[str, int]:
        """``batch_size``, ``max_batch_tokens`` and ``max_concurrency`` as used: the settings
        given explicitly, else (after the first call) what the server says (its
        ``client_defaults`` in ``/server_info``: the local backend's few large requests; 8
        requests in flight per data-parallel rank of SGLang's ``dp_size``), else the package
        defaults (the GPU shape, 32 texts x 8 in flight)."""
        return dict(self._engine.terms().shape)

    @property
    def server_facts(self) -> ServerFacts | None:
        """What the server said about itself at the first call (``None`` before it); see
        `discover`."""
        return self._engine.server().facts

    @property
    def embedding_dim(self) -> int | None:
        """Width of the vectors this client returns: ``dimensions`` if set, else the native
        width of a preset model, else what the server returned (``None`` before the first
        call for unknown models)."""
        return self.settings.dimensions or self._engine.terms().native_dim

    @property
    def prompt_tokens(self) -> int:
        """Sum of ``usage.prompt_tokens`` reported by the server for this client."""
        return self._engine.prompt_tokens

    @property
    def client_side_dimensions(self) -> bool:
        """``True`` once the client truncates vectors itself because the server cannot (it says
        so in ``/model_info``, refused ``dimensions`` or ignored it)."""
        return self._engine.terms().client_side_dims

    # ---------------------------------------------------------------- public sync API
    def embed_documents(self, texts: Sequence[str], *, dimensions: int | None = None) -> list[list[float]]:
        """Embed documents (no instruction). Returns one list of floats per text."""
        return self.embed(texts, kind="document", dimensions=dimensions).tolist()

    def embed_query(self, text: str, *, task: str | None = None, dimensions: int | None = None) -> list[float]:
        """Embed one query with the Qwen3 instruction (``task`` overrides the default)."""
        return self.embed([text], kind="query", task=task, dimensions=dimensions).tolist()[0]

    def embed_queries(
        self, texts: Sequence[str], *, task: str | None = None, dimensions: int | None = None
    ) -> list[list[float]]:
        """Embed several queries with the Qwen3 instruction."""
        return self.embed(texts, kind="query", task=task, dimensions=dimensions).tolist()

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
        job = self._engine.job(texts, kind, task, dimensions, on_progress)
        if not job.rows:
            return job.finish()
        items = self._run(self._engine.plan_flow(job))
        return self._fan_out_sync(job, items)

    # ---------------------------------------------------------------- public async API
    async def aembed_documents(self, texts: Sequence[str], *, dimensions: int | None = None) -> list[list[float]]:
        """Async `embed_documents`."""
        return (await self.aembed(texts, kind="document", dimensions=dimensions)).tolist()

    async def aembed_query(self, text: str, *, task: str | None = None, dimensions: int | None = None) -> list[float]:
        """Async `embed_query`."""
        return (await self.aembed([text], kind="query", task=task, dimensions=dimensions)).tolist()[0]

    async def aembed_queries(
        self, texts: Sequence[str], *, task: str | None = None, dimensions: int | None = None
    ) -> list[list[float]]:
        """Async `embed_queries`."""
        return (await self.aembed(texts, kind="query", task=task, dimensions=dimensions)).tolist()

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
        job = self._engine.job(texts, kind, task, dimensions, on_progress)
        if not job.rows:
            return job.finish()
        items = await self._arun(self._engine.plan_flow(job))
        return await self._fan_out_async(job, items)

    # ---------------------------------------------------------------- discovery and tokens
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
        return _facts(self._run(self._engine.discover_flow()))

    async def adiscover(self) -> ServerFacts:
        """Async `discover`."""
        return _facts(await self._arun(self._engine.discover_flow()))

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Exact token counts from the server's tokenizer, end token included."""
        return self._run(self._engine.count_flow(check_texts(texts)))

    async def acount_tokens(self, texts: Sequence[str]) -> list[int]:
        """Async `count_tokens`."""
        return await self._arun(self._engine.count_flow(check_texts(texts)))

    def tokenize(self, texts: Sequence[str], *, add_special_tokens: bool = True) -> list[list[int]]:
        """Token ids from the server's tokenizer (``/v1/tokenize``)."""
        return self._run(self._engine.tokenize_flow(check_texts(texts), add_special_tokens))

    # ---------------------------------------------------------------- lifecycle
    def close(self) -> None:
        """Close the HTTP connections of the sync client (async ones close with their loop)."""
        self._connections.close()

    async def aclose(self) -> None:
        """Close the async HTTP client of the running event loop."""
        await self._connections.aclose()

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
        if self._connections.given:
            raise TypeError("an EmbeddingClient made with http_client= or http_async_client= cannot be pickled")
        return (type(self), (self.settings,))

    def _after_fork(self) -> None:
        self._engine.after_fork()
        self._connections.after_fork()

    # ================================================================ for the package's other clients
    @property
    def engine(self) -> Engine:
        """The sans-IO engine: the settings, what was learned from the server, the flows
        (`qwen_sglang.client.engine`). `qwen_sglang.RerankClient` builds its flows on it."""
        return self._engine

    def run_flow(self, flow: Flow[T]) -> T:
        """Drive one flow of the engine to its end with this client's connections, retries and
        deadlines (what every sync call does); return its value or raise its error."""
        return self._run(flow)

    async def arun_flow(self, flow: Flow[T]) -> T:
        """Async `run_flow`."""
        return await self._arun(flow)

    # ================================================================ drivers (the only IO)
    def _request(self, http: httpx.Client | httpx.AsyncClient, op: Send) -> tuple[httpx.Request, int, float | None]:
        """The request of ``op``, its answer's size bound and its deadline. The Authorization
        header is made here, per request, from the settings' secret: no plain copy is kept."""
        left = None if op.deadline is None else max(op.deadline - time.monotonic(), 0.001)
        headers = _headers(self.settings)
        request = http.build_request(op.method, op.url, json=op.payload, headers=headers, timeout=httpx.Timeout(left))
        limit = op.max_bytes if op.max_bytes is not None else _DEFAULT_ANSWER + 16 * len(request.content)
        return request, limit, op.deadline

    def _run(self, flow: Flow[T]) -> T:
        result: Result = None
        try:
            while True:
                try:
                    op = flow.send(result)
                except StopIteration as stop:
                    return stop.value  # type: ignore[no-any-return]
                if isinstance(op, Sleep):
                    time.sleep(op.seconds)
                    result = None
                    continue
                http = self._connections.sync(self.settings.base_url, self._pool_size(op.lane), op.lane)
                try:
                    result = exchange(http, *self._request(http, op))
                except (httpx.HTTPError, MalformedResponseError) as exc:
                    result = exc
        finally:
            flow.close()  # an interrupted flow gives back what it holds (a server's in-flight count)

    async def _arun(self, flow: Flow[T]) -> T:
        result: Result = None
        try:
            while True:
                try:
                    op = flow.send(result)
                except StopIteration as stop:
                    return stop.value  # type: ignore[no-any-return]
                if isinstance(op, Sleep):
                    await asyncio.sleep(op.seconds)
                    result = None
                    continue
                http = self._connections.async_(self._pool_size(op.lane), op.lane)
                try:
                    result = await aexchange(http, *self._request(http, op))
                except (httpx.HTTPError, MalformedResponseError) as exc:
                    result = exc
        finally:
            flow.close()  # an interrupted flow gives back what it holds (a server's in-flight count)

    def _pool_size(self, lane: Lane) -> int:
        """Connections to keep: for bulk work, the most requests the settings or the server's
        shape put in flight; for single queries, two per server."""
        terms = self._engine.terms()
        if lane == "query":
            return 2 * len(terms.server.endpoints)
        return max(self.settings.max_concurrency, terms.shape["max_concurrency"])

    # ================================================================ fan-out (bounded)
    def _fan_out_sync(self, job: Job, items: list[Item]) -> EmbeddingResult:
        batches = self._engine.batches(job, items)
        job.start(items, len(batches))
        try:
            flows = [self._engine.batch_flow(job, batch) for batch in batches]
            gather(self._run, flows, job.terms.shape["max_concurrency"], lambda k, v: job.add(batches[k], v))
        finally:
            job.stop()
        return job.finish()

    async def _fan_out_async(self, job: Job, items: list[Item]) -> EmbeddingResult:
        batches = self._engine.batches(job, items)
        job.start(items, len(batches))
        try:
            flows = [self._engine.batch_flow(job, batch) for batch in batches]
            await agather(self._arun, flows, job.terms.shape["max_concurrency"], lambda k, v: job.add(batches[k], v))
        finally:
            job.stop()
        return job.finish()


def _facts(terms: Terms) -> ServerFacts:
    assert terms.facts is not None  # discovery kept them
    return terms.facts


def _headers(s: QwenSGLangSettings) -> dict[str, str]:
    """The headers of one request, the credentials among them (made per request)."""
    headers = {"User-Agent": f"qwen-sglang/{__version__}", "Accept-Encoding": ACCEPT_ENCODING}
    for name, value in (s.default_headers or {}).items():
        headers[name] = value.get_secret_value()
    if s.api_key is not None:
        headers["Authorization"] = "Bearer " + s.api_key.get_secret_value()
    elif s.url_credentials is not None:
        basic = base64.b64encode(s.url_credentials.get_secret_value().encode("utf-8")).decode("ascii")
        headers["Authorization"] = "Basic " + basic
    return headers


# ============================================================================================
# Processes: connections belong to the process that opened them
# ============================================================================================
_LIVE_CLIENTS: weakref.WeakSet[EmbeddingClient] = weakref.WeakSet()


def _forget_connections_after_fork() -> None:
    for client in list(_LIVE_CLIENTS):
        client._after_fork()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_forget_connections_after_fork)
