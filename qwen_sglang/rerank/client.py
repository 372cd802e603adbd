"""`RerankClient`: Qwen3-Reranker served by SGLang, sync and async from one body."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from qwen_sglang._urls import root_url
from qwen_sglang.client.discovery import ServerFacts
from qwen_sglang.client.fanout import agather, gather
from qwen_sglang.client.ops import Flow
from qwen_sglang.client.roles import RERANKING
from qwen_sglang.client.shells import EmbeddingClient
from qwen_sglang.errors import InputTypeError
from qwen_sglang.rerank.engine import Plan, RerankEngine
from qwen_sglang.rerank.plan import RerankCall, RerankResult
from qwen_sglang.rerank_format import DEFAULT_RERANK_INSTRUCTION
from qwen_sglang.settings import QwenSGLangSettings

__all__ = ["RerankClient", "reranker_settings"]


class RerankClient:
    """Framework-free client for Qwen3-Reranker served by SGLang (or the local backend).

    Scores follow Qwen's reference exactly: the prompt is built by the client, byte for byte,
    and the score is P("yes"), a softmax over the "yes"/"no" next-token logits, from SGLang's
    ``/v1/score``. Documents too long for the served context are cut in the document's end only
    (the prompt's prefix and suffix are kept). Requests are batched by ``batch_size`` and
    ``max_batch_tokens``, at most ``max_concurrency`` in flight, and sent by the embedding
    client's own shells: the same connections, retries, deadlines, typed errors and fork safety.

    Setup:
        ```bash
        pip install qwen-sglang
        qwen-sglang serve --task rerank --model Qwen/Qwen3-Reranker-0.6B   # port 30000
        ```

    Key init args:
        settings: A `qwen_sglang.QwenSGLangSettings` (or its fields as keyword arguments:
            ``base_url``, ``api_key``, ``timeout``, ``max_retries``, ``batch_size``,
            ``max_batch_tokens``, ``max_concurrency``, ``empty_text``, ``long_text``,
            ``max_tokens``). ``QWEN_SGLANG_MODEL`` names the embedding model and is not read:
            the reranker's model is the one given, ``QWEN_SGLANG_RERANK_MODEL``, or the served
            one (``Qwen/Qwen3-Reranker-0.6B``, with a warning, for a server that names none);
            ``QWEN_SGLANG_RERANK_BASE_URL`` is read before ``QWEN_SGLANG_BASE_URL``
            (`reranker_settings`).
        instruction: The task instruction of every call (``None``: Qwen's default, "Given a web
            search query, retrieve relevant passages that answer the query").

    Instantiate:
        ```python
        from qwen_sglang import RerankClient

        reranker = RerankClient(base_url="http://127.0.0.1:30000/v1")
        ```

    Rerank:
        ```python
        results = reranker.rerank("What is SGLang?", ["SGLang serves models.", "Paris is in France."], top_n=1)
        results[0].index, results[0].score  # (0, 0.93...)
        ```

    Async:
        ```python
        results = await reranker.arerank("What is SGLang?", documents)
        ```
    """

    def __init__(
        self,
        settings: QwenSGLangSettings | None = None,
        *,
        instruction: str | None = None,
        http_client: httpx.Client | None = None,
        http_async_client: httpx.AsyncClient | None = None,
        **kwargs: Any,
    ) -> None:
        """Create a client from ``settings`` and/or settings fields as keyword arguments.

        ``http_client`` / ``http_async_client`` replace the internally created httpx clients
        (proxies, custom TLS, test transports).
        """
        if instruction is not None and not isinstance(instruction, str):
            raise InputTypeError(f"instruction must be a str or None, got {type(instruction).__name__}")
        self.instruction = instruction
        # the embedding client's shells drive the flows: its connections, retries, deadlines and
        # fork safety (a reranker server speaks the same protocol for discovery and tokens)
        self._shell = EmbeddingClient(
            reranker_settings(settings, **kwargs),
            http_client=http_client,
            http_async_client=http_async_client,
            role=RERANKING,  # its messages name RerankClient, a nameless server serves the reranker default
        )
        self._given = http_client is not None or http_async_client is not None
        self._rerank = RerankEngine(self._shell.engine)

    # ---------------------------------------------------------------- settings and what was learned
    @property
    def settings(self) -> QwenSGLangSettings:
        """The settings, read afresh by every call; assign new ones to replace them."""
        return self._rerank.engine.settings

    @settings.setter
    def settings(self, value: QwenSGLangSettings) -> None:
        self._rerank.engine.settings = value

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
        served one."""
        return self._rerank.engine.terms().model

    @property
    def server_facts(self) -> ServerFacts | None:
        """What the server said about itself at the first call (``None`` before it)."""
        return self._rerank.engine.server().facts

    # ---------------------------------------------------------------- the API
    def rerank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        instruction: str | None = None,
        top_n: int | None = None,
        return_documents: bool = False,
    ) -> list[RerankResult]:
        """Rank ``documents`` by their relevance to ``query``, most relevant first.

        Args:
            query: What the documents are ranked against (not empty).
            documents: The candidates (an empty list gives an empty ranking). Empty or
                whitespace-only documents follow ``empty_text``: ``"raise"`` (default) refuses
                them, ``"zero"`` ranks them last with score 0, ``"skip"`` leaves them out.
            instruction: This call's task instruction (default: the client's ``instruction``,
                else Qwen's default).
            top_n: Return only the best ``top_n`` (1 ≤ ``top_n`` ≤ ``len(documents)``).
            return_documents: Put each document's text in its result.

        Returns:
            One `qwen_sglang.RerankResult` (``index``, ``score``, ``document``) per document,
            sorted by score, highest first; ties keep the documents' order. Identical documents
            are scored once and share that score.

        Raises:
            InputTypeError / InvalidInputError: Bad arguments, before any request.
            ConfigurationError: The server is an embedding server, or has no tokenizer route.
            APIError: The server failed (after retries), or answered something malformed.

        Example:
            ```python
            ranked = reranker.rerank("capital of France", ["Berlin is in Germany.", "Paris is the capital."])
            best = ranked[0].index  # 1
            ```
        """
        call = self._call(query, documents, instruction, top_n, return_documents)
        if not call.rows:
            return call.results([])
        plan = self._shell.run_flow(self._rerank.plan_flow(call))
        return call.results(self._gather(plan))

    async def arerank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        instruction: str | None = None,
        top_n: int | None = None,
        return_documents: bool = False,
    ) -> list[RerankResult]:
        """Async `rerank`."""
        call = self._call(query, documents, instruction, top_n, return_documents)
        if not call.rows:
            return call.results([])
        plan = await self._shell.arun_flow(self._rerank.plan_flow(call))
        return call.results(await self._agather(plan))

    def discover(self) -> ServerFacts:
        """Ask the server what it serves (every call does this first, once per client).

        Raises:
            ConfigurationError: The server serves an embedding model.
        """
        return _facts(self._shell.run_flow(self._rerank.discover_flow()).facts)

    async def adiscover(self) -> ServerFacts:
        """Async `discover`."""
        return _facts((await self._shell.arun_flow(self._rerank.discover_flow())).facts)

    # ---------------------------------------------------------------- lifecycle
    def close(self) -> None:
        """Close the HTTP connections of the sync client (async ones close with their loop)."""
        self._shell.close()

    async def aclose(self) -> None:
        """Close the async HTTP client of the running event loop."""
        await self._shell.aclose()

    def __enter__(self) -> RerankClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> RerankClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        s = self.settings
        return f"RerankClient(base_url={s.base_url!r}, model={s.model!r}, instruction={self.instruction!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        """A pickled client is its settings (without secrets) and instruction."""
        if self._given:
            raise TypeError("a RerankClient made with http_client= or http_async_client= cannot be pickled")
        return (functools.partial(RerankClient, instruction=self.instruction), (self.settings,))

    # ---------------------------------------------------------------- internals
    def _call(
        self, query: str, documents: Sequence[str], instruction: str | None, top_n: int | None, return_documents: bool
    ) -> RerankCall:
        if instruction is None:
            instruction = self.instruction if self.instruction is not None else DEFAULT_RERANK_INSTRUCTION
        return RerankCall.create(
            query,
            documents,
            instruction=instruction,
            top_n=top_n,
            return_documents=return_documents,
            empty_text=self.settings.empty_text,
        )

    def _scoring(self, plan: Plan) -> tuple[list[float], list[Flow[list[float]]], Callable[[int, list[float]], None]]:
        """The scores to fill (in the call's order), one flow per batch, and what files a
        batch's scores once it is answered."""
        scores = [0.0] * len(plan.pairs)
        batches = plan.batches()

        def done(b: int, values: list[float]) -> None:
            for pair, value in zip(batches[b], values, strict=True):
                scores[pair.k] = value

        return scores, [self._rerank.batch_flow(plan, batch) for batch in batches], done

    def _gather(self, plan: Plan) -> list[float]:
        scores, flows, done = self._scoring(plan)
        gather(self._shell.run_flow, flows, plan.terms.shape["max_concurrency"], done)
        return scores

    async def _agather(self, plan: Plan) -> list[float]:
        scores, flows, done = self._scoring(plan)
        await agather(self._shell.arun_flow, flows, plan.terms.shape["max_concurrency"], done)
        return scores


def reranker_settings(settings: QwenSGLangSettings | None = None, **kwargs: Any) -> QwenSGLangSettings:
    """The settings of a reranker: ``settings`` and/or fields as keyword arguments, where what
    names the EMBEDDING server in the environment does not apply. ``model`` is the one given,
    else ``QWEN_SGLANG_RERANK_MODEL``, else none (the served one is learned; ``QWEN_SGLANG_MODEL``
    names the embedding model); ``base_url`` the one given, else ``QWEN_SGLANG_RERANK_BASE_URL``,
    else the usual default (``QWEN_SGLANG_BASE_URL``, then ``http://127.0.0.1:30000/v1``)."""
    given: dict[str, Any] = {}
    if settings is not None:
        names = settings.model_fields_set & set(QwenSGLangSettings.model_fields)
        given = {name: getattr(settings, name) for name in names}
    given |= kwargs
    if "model" not in given:
        given["model"] = os.environ.get(RERANKING.model_env) or None
    env_url = os.environ.get("QWEN_SGLANG_RERANK_BASE_URL")
    if "base_url" not in given and env_url:
        given["base_url"] = env_url
    return QwenSGLangSettings(**given)


def _facts(facts: ServerFacts | None) -> ServerFacts:
    assert facts is not None  # discovery kept them
    return facts
