"""The client's engine: every operation written once, as a flow, with no IO.

A flow is a generator that yields what it needs done (`qwen_sglang.client.ops`: send an HTTP
request, sleep before a retry) and receives the result.
`qwen_sglang.client.shells.EmbeddingClient` drives flows with ``httpx.Client`` and
``time.sleep``, or with ``httpx.AsyncClient`` and ``asyncio.sleep``, so the sync and async paths
cannot drift apart.

The engine holds the client's settings and what it learned from the server
(`qwen_sglang.client.state`), and composes the flows: the discovery step
(`Engine.discover_flow`), token counts, the plan of an embedding call
(`Engine.plan_flow`: discovery, checks, the long-text policy of `qwen_sglang.client.tokens`) and
one batch with its Matryoshka, encoding and 413 fallbacks (`Engine.batch_flow`). A request with
its retries is `qwen_sglang.client.retries.request_flow`; reading answers,
`qwen_sglang.client.answers`.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np

from qwen_sglang._vectors import normalize_rows
from qwen_sglang.client.answers import RETRY_STATUS, Vectors, parse_embeddings, refuses_priority
from qwen_sglang.client.discovery import ServerFacts, parse_facts
from qwen_sglang.client.job import Item, Job
from qwen_sglang.client.ops import Flow
from qwen_sglang.client.retries import request_flow
from qwen_sglang.client.roles import EMBEDDING, ClientRole
from qwen_sglang.client.state import ServerState, Terms
from qwen_sglang.client.tokens import long_text_flow, special_tokens_flow, tokenize_flow
from qwen_sglang.errors import (
    APIStatusError,
    BadRequestError,
    ConfigurationError,
    MalformedResponseError,
    RequestTooLargeError,
)
from qwen_sglang.instructions import query_prompt
from qwen_sglang.presets import PRESETS
from qwen_sglang.settings import QwenSGLangSettings, validate_dimensions

__all__ = ["Engine"]

logger = logging.getLogger("qwen_sglang")

_UNKNOWN_WIDTH = 8192  # widest vectors assumed while the model's width is unknown
# Bounds never assume narrower vectors than the widest preset's: a server of another model than
# the configured one must get its own error ("returned 4096-d vectors"), not "too large".
_WIDEST_PRESET = max(p.native_dim for p in PRESETS.values())
_BYTES_PER_VALUE = 32  # a JSON float with its separator, generously (base64 needs 5.4)
_ANSWER_BASE = 1 << 20  # room for everything in an answer that is not vectors
#: Discovery answers that stop the client (the embedding request would fail the same way);
#: any other error status means "this server does not have that endpoint".
_DISCOVERY_FATAL = frozenset({401, 403}) | RETRY_STATUS
_DISCOVERY_ANSWER = 1 << 20  # a discovery answer is a small JSON object (SGLang's /server_info: ~10 KB)


class Engine:
    """The sans-IO logic of one `EmbeddingClient`: its settings (read afresh at every call), what
    it learned from the server, and the flows."""

    def __init__(self, settings: QwenSGLangSettings, role: ClientRole = EMBEDDING) -> None:
        self.role = role
        """The client the user holds: what messages name, the model assumed for a nameless server."""
        self._settings = settings
        self._server = ServerState(settings.base_url)
        self._lock = threading.Lock()  # guards _server's replacement and the token tally
        self._prompt_tokens = 0

    # ---------------------------------------------------------------- settings and state
    @property
    def settings(self) -> QwenSGLangSettings:
        return self._settings

    @settings.setter
    def settings(self, value: QwenSGLangSettings) -> None:
        """New settings, checked against what is known of the server they point at (a width
        wider than its model's, or not one it truncates to, is refused now, not at the next call)."""
        if not isinstance(value, QwenSGLangSettings):
            raise ConfigurationError(f"settings must be a qwen_sglang.QwenSGLangSettings, not {type(value).__name__}")
        with self._lock:
            server = self._server if self._server.base_url == value.base_url else ServerState(value.base_url)
        if value.dimensions is not None and server.facts is not None:
            _check_width(Terms.settle(value, server, self.role), value.dimensions)
        self._settings = value

    @property
    def prompt_tokens(self) -> int:
        return self._prompt_tokens

    def server(self) -> ServerState:
        """What is known of the server at the current ``base_url`` (a new one forgets the old)."""
        base_url = self._settings.base_url
        with self._lock:
            if self._server.base_url != base_url:
                self._server = ServerState(base_url)
            return self._server

    def terms(self) -> Terms:
        """The terms of a call starting now: a snapshot of the settings, and what the server said."""
        return Terms.settle(self._settings.model_copy(), self.server(), self.role)

    def after_fork(self) -> None:
        """In a forked child: new locks (one held by a parent's thread would never be released)."""
        self._lock = threading.Lock()
        self._server.after_fork()

    def _count(self, tokens: int) -> None:
        with self._lock:
            self._prompt_tokens += tokens

    # ---------------------------------------------------------------- discovery
    def discover_flow(self) -> Flow[Terms]:
        """Learn once what the server serves (`qwen_sglang.client.discovery`); the call's terms,
        settled with it. A configured model that is not the served one raises, at every call."""
        terms = self.terms()
        server = terms.server
        if server.facts is None:
            models = yield from self._probe_flow(terms, "/models")
            info = yield from self._probe_flow(terms, "/model_info", root=True)
            if info is None:  # SGLang < 0.5.16
                info = yield from self._probe_flow(terms, "/get_model_info", root=True)
            server_info = yield from self._probe_flow(terms, "/server_info", root=True)
            workers = None
            if server_info is None:  # sglang-router: /get_server_info says router_manager, /workers lists
                server_info = yield from self._probe_flow(terms, "/get_server_info", root=True)
                if isinstance(server_info, dict) and server_info.get("router_manager") is True:
                    workers = yield from self._probe_flow(terms, "/workers", root=True)
            facts = parse_facts(models, info, server_info, workers)
            if server.adopt(facts):
                _log_discovered(terms, facts)
            terms = Terms.settle(terms.settings, server, self.role)
        if terms.mismatch is not None:
            raise terms.mismatch
        return terms

    def _probe_flow(self, terms: Terms, path: str, *, root: bool = False) -> Flow[Any]:
        """GET a discovery endpoint: its JSON object, or ``None`` where the server has none."""
        try:
            body = yield from request_flow(
                terms.settings,
                terms.server.endpoints,
                "GET",
                path,
                root=root,
                max_bytes=_DISCOVERY_ANSWER,
                role=terms.role,
            )
        except APIStatusError as exc:
            if exc.status_code in _DISCOVERY_FATAL:
                raise
            logger.debug("%s: %s", path, exc)
            return None
        except MalformedResponseError as exc:
            logger.debug("%s: %s", path, exc)
            return None
        return body if isinstance(body, dict) else None

    # ---------------------------------------------------------------- tokens
    def tokenize_flow(self, texts: list[str], add_special_tokens: bool) -> Flow[list[list[int]]]:
        """Token ids from the server's tokenizer (``/v1/tokenize``), after discovery."""
        if not texts:
            return []
        terms = yield from self.discover_flow()
        return (yield from tokenize_flow(terms, texts, add_special_tokens))

    def count_flow(self, texts: list[str]) -> Flow[list[int]]:
        """Exact token counts, end token included (behind an sglang-router, whose tokenizer adds
        no special tokens: those `special_tokens_flow` knows, for the Qwen3 family)."""
        if not texts:
            return []
        terms = yield from self.discover_flow()
        if terms.facts is not None and terms.facts.router:
            specials = yield from special_tokens_flow(terms)
            if specials is not None:
                extra = len(specials[0]) + len(specials[1])
                return [len(ids) + extra for ids in (yield from tokenize_flow(terms, texts, False))]
        return [len(ids) for ids in (yield from tokenize_flow(terms, texts, True))]

    # ---------------------------------------------------------------- an embedding call
    def job(self, texts: Any, kind: Any, task: Any, dimensions: Any, on_progress: Any = None) -> Job:
        """Check a call's arguments before any request (see `Job.create`)."""
        return Job.create(texts, kind, task, dimensions, self.terms(), on_progress)

    def plan_flow(self, job: Job) -> Flow[list[Item]]:
        """Discover the server, check the job against it, and turn its texts into request
        items (applying the long-text policy: `qwen_sglang.client.tokens.long_text_flow`)."""
        job.terms = yield from self.discover_flow()
        _check_not_a_reranker(job.terms)
        self._prepare(job)
        return (yield from long_text_flow(job))

    def _prepare(self, job: Job) -> None:
        """Check the width against the served model; apply the query prompt."""
        terms = job.terms
        dims = job.dimensions
        if dims is not None:
            _check_width(terms, dims)
            says_no = terms.facts is not None and terms.facts.supports_dimensions is False
            if says_no and dims != terms.native_dim and terms.server.truncate_on_client():
                logger.warning(
                    "the server at %s cannot truncate to dimensions (its /model_info says so): truncating "
                    "and re-normalising on the client",
                    terms.settings.base_url,
                )
        if job.kind == "document":
            job.send = job.texts
            return
        prompt = query_prompt(job.task) if job.task is not None else terms.query_prompt
        given = "query_instruction" in terms.settings.explicit_fields
        if prompt is None and job.task is None and not given and terms.server.note_no_prompt():
            logger.warning(
                "queries are embedded without an instruction: the served model %s is not known to use one "
                "(no Qwen3-Embedding name or architecture, no sentence-transformers query prompt). Set "
                "query_instruction='retrieval' (or a task of your own; the CLI's --task) to add Qwen3's, or "
                "query_instruction=None to silence this note",
                terms.model,
            )
        job.send = [prompt + text for text in job.texts] if prompt else job.texts

    def batches(self, job: Job, items: list[Item]) -> list[list[Item]]:
        """Group items into requests by count and token budget, never mixing texts and ids."""
        batches: list[list[Item]] = []
        current: list[Item] = []
        tokens = 0
        shape = job.terms.shape
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

    def batch_flow(self, job: Job, batch: list[Item]) -> Flow[tuple[Vectors, int]]:
        """Embed one batch; handle the Matryoshka and encoding fallbacks; check the answer."""
        terms, dims = job.terms, job.dimensions
        s, server = terms.settings, terms.server
        inputs: list[Any] = [it.ids if it.ids is not None else it.text for it in batch]
        while True:
            send_dims = dims is not None and not terms.client_side_dims and dims != terms.native_dim
            use_float = server.floats_only or s.encoding_format == "float"
            payload: dict[str, Any] = {"model": terms.model, "input": inputs}
            payload["encoding_format"] = "float" if use_float else "base64"
            if send_dims:
                payload["dimensions"] = dims
            send_priority = job.lane == "query" and s.query_priority is not None and _priority_scheduling(terms)
            if send_priority:
                payload["priority"] = s.query_priority
            try:
                limit = _embeddings_answer_limit(len(batch), terms.native_dim)
                body = yield from request_flow(
                    s, server.endpoints, "POST", "/embeddings", payload, max_bytes=limit, lane=job.lane
                )
            except RequestTooLargeError as exc:
                if len(batch) < 2:
                    raise
                return (yield from self._split_flow(job, batch, exc))
            except BadRequestError as exc:
                if not self._fallback(terms, exc, send_dims, use_float, dims):
                    raise
                continue
            except APIStatusError as exc:
                if not (send_priority and refuses_priority(exc)):
                    raise
                if server.refuse_priority():
                    logger.warning("the server refuses requests with a priority (%s): queries go without one", exc)
                continue
            vectors, tokens = parse_embeddings(body, len(batch), s.base_url + "/embeddings")
            # SGLang returns bf16-rounded values whose norms are off by up to ~0.3%: restore unit
            # length in float32 (direction unchanged) so dot-product stores see true cosines.
            normalize_rows(vectors)
            self._count(tokens)
            return _fit_width(terms, vectors, dims), tokens

    @staticmethod
    def _fallback(terms: Terms, exc: BadRequestError, send_dims: bool, use_float: bool, dims: int | None) -> bool:
        """Whether a 400 taught the client to ask differently: no ``dimensions`` (a server that
        cannot truncate and does not say so in ``/model_info``), or no base64."""
        s, server = terms.settings, terms.server
        msg = (exc.server_message or str(exc)).lower()
        says = terms.facts is not None and terms.facts.supports_dimensions is not None
        if send_dims and not says and "does not support matryoshka" in msg:
            if server.truncate_on_client():
                logger.warning(
                    "the server cannot truncate to dimensions=%s (%s); truncating and re-normalising on the "
                    "client from now on",
                    dims,
                    exc.server_message,
                )
            return True
        if not use_float and s.encoding_format == "auto" and ("encoding" in msg or "base64" in msg):
            if server.use_floats():
                logger.warning("the server rejected base64 encoding; using float from now on")
            return True
        return False

    def _split_flow(self, job: Job, batch: list[Item], exc: RequestTooLargeError) -> Flow[tuple[Vectors, int]]:
        """A batch the server refused as too large (413: its per-request limit on inputs, tokens
        or bytes): embed its halves, in order. Token budgets are estimated from UTF-8 length
        (digits take up to 3x the estimate), so a budget the server advertised can overshoot;
        later calls get half the refused one's estimate, unless ``max_batch_tokens`` was set."""
        terms = job.terms
        estimate = sum(item.cost() for item in batch)
        if "max_batch_tokens" not in terms.settings.explicit_fields:
            current = terms.shape["max_batch_tokens"]
            if terms.server.lower_budget(current, estimate):
                logger.warning(
                    "the server refused a request of %d texts (~%d tokens estimated) as too large (%s): "
                    "sending it in halves, and at most ~%d tokens per request from now on",
                    len(batch),
                    estimate,
                    exc.server_message or exc,
                    terms.server.budget,
                )
        half = len(batch) // 2
        first, first_tokens = yield from self.batch_flow(job, batch[:half])
        second, second_tokens = yield from self.batch_flow(job, batch[half:])
        return np.concatenate([first, second]), first_tokens + second_tokens


# ============================================================================================
# Helpers (pure)
# ============================================================================================
def _priority_scheduling(terms: Terms) -> bool:
    """Whether single queries carry ``query_priority``: to a server that said it orders its queue
    by priority (`ServerFacts.priority_scheduling`), and through an sglang-router, which forwards
    the field to workers it cannot tell about (`qwen_sglang.servers.ManagedRouter`'s schedule by
    priority; SGLang without priority scheduling ignores it) -- unless the server refused it."""
    facts = terms.facts
    if facts is None or terms.server.priority_refused:
        return False
    return facts.priority_scheduling or facts.router


def _embeddings_answer_limit(count: int, width: int | None) -> int:
    """The most bytes an honest ``/embeddings`` answer of ``count`` vectors can take: JSON floats
    at a generous 32 bytes each, twice over, for vectors as wide as the model's (at least the
    widest preset's; 8192 while unknown)."""
    width = max(width, _WIDEST_PRESET) if width else _UNKNOWN_WIDTH
    return _ANSWER_BASE + 2 * count * (width * _BYTES_PER_VALUE + 256)


def _log_discovered(terms: Terms, facts: ServerFacts) -> None:
    settings, role = terms.settings, terms.role
    if settings.model is None and not facts.known:
        logger.warning(
            "%s names no model (it answers neither /v1/models nor /model_info): assuming %s. Set the "
            "served model with model=..., --model or %s",
            settings.base_url,
            role.default_model,
            role.model_env,
        )
    logger.debug("discovered %s: %s", settings.base_url, facts)


def _check_not_a_reranker(terms: Terms) -> None:
    """An embedding call to a reranker server fails before any text is sent, saying which client
    fits (SGLang would answer a 400 asking for ``--is-embedding``, the wrong fix for a reranker)."""
    facts = terms.facts
    if facts is not None and facts.is_reranker:
        raise ConfigurationError(
            f"the server at {terms.settings.base_url} serves a reranker ({facts.describe()}), not an embedding "
            "model: point the embedding client at a Qwen3-Embedding server (`qwen-sglang serve --model "
            "Qwen/Qwen3-Embedding-4B`), and use this one with qwen_sglang.RerankClient (QwenSGLangReranker, "
            "QwenSGLangRerank, `qwen-sglang rerank`)"
        )


def _check_width(terms: Terms, dims: int) -> None:
    """``dimensions`` against the served model: its preset's range, its native width, and the
    widths the server truncates to when it names them (``matryoshka_dimensions``)."""
    validate_dimensions(dims, terms.preset, terms.model)
    native = terms.native_dim
    if native is not None and dims > native:
        raise ConfigurationError(
            f"dimensions={dims} is wider than the {native}-d vectors of the served model "
            f"{terms.model} (its Matryoshka range is 1..{native})"
        )
    facts = terms.facts
    allowed = facts.matryoshka_dimensions if facts is not None and facts.supports_dimensions else ()
    if allowed and dims not in allowed and dims != native:
        raise ConfigurationError(
            f"dimensions={dims} is not one the server at {terms.settings.base_url} truncates to: it serves "
            f"{terms.model} with matryoshka_dimensions {list(allowed)}; choose one of them (or the native width)"
        )


def _fit_width(terms: Terms, vectors: Vectors, dims: int | None) -> Vectors:
    """Check the answer's width; truncate and re-normalise where the server did not."""
    server = terms.server
    width = vectors.shape[1]
    native = terms.native_dim
    if dims is None or width == dims:
        if dims is None:
            if native is None:
                server.learn_width(width)
            elif width != native and not terms.client_side_dims:
                raise MalformedResponseError(
                    f"the server returned {width}-d vectors; {terms.model} is "
                    f"{native}-d (is base_url serving another model?)",
                    url=terms.settings.base_url,
                )
        return vectors
    if width < dims:
        raise MalformedResponseError(
            f"asked for dimensions={dims} but the server returned {width}-d vectors",
            url=terms.settings.base_url,
        )
    # SGLang < 0.5.5 ignores `dimensions` and returns the full vector.
    if server.truncate_on_client():
        logger.warning(
            "the server ignored dimensions=%s and returned %s-d vectors; truncating and "
            "re-normalising on the client from now on",
            dims,
            width,
        )
    if native is None:
        server.learn_width(width)
    return normalize_rows(np.ascontiguousarray(vectors[:, :dims]))
