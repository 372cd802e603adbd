"""What a server serves, learned once per client: the discovery step.

At its first call a client asks the server what it serves, and keeps the answer for its
lifetime (`qwen_sglang.EmbeddingClient.discover`). Constructing a client (or a LangChain or
LlamaIndex object) does no I/O: frameworks often build them before the server runs.

What is asked, in this order, each once:

- ``GET {base_url}/models``: the served name(s) (SGLang: ``--served-model-name``, else the model
  path; LoRA adapters after it) and ``max_model_len``;
- ``GET /model_info`` (``/get_model_info`` on SGLang < 0.5.16): ``model_path``,
  ``is_generation``, ``model_type`` and ``architectures`` from the model's config (SGLang 0.5.16+);
  the ``embedding`` block (SGLang 0.5.17+ and the local backend): whether the server truncates to
  ``dimensions`` (``supports_dimensions``) and to which widths (``matryoshka_dimensions``, empty:
  any); the local backend adds the native width (``embedding.dimension``) and the model's
  sentence-transformers prompts (``sentence_transformers.prompts``);
- ``GET /server_info``: ``dp_size`` (SGLang's data-parallel ranks: the default concurrency grows
  with them), ``enable_priority_scheduling`` (whether single queries may carry a ``priority``)
  and ``client_defaults``, the request shape the server prefers, in the client's own setting
  names (the local backend; SGLang advertises none).
- where ``/server_info`` does not answer, ``GET /get_server_info``: an sglang-router says
  ``router_manager``; then ``GET /workers``, whose workers' ``dp_size`` add up to the router's.

This module holds the pure part: reading those answers (`parse_facts`) and deciding what they
mean (`same_model`, `served_preset`, `default_query_prompt`, `request_shape`). The requests
themselves are a flow of the client's engine, so the sync and async paths share them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from qwen_sglang.instructions import DEFAULT_TASK, query_prompt
from qwen_sglang.presets import ModelPreset, find_preset

__all__ = [
    "DEFAULT_IN_FLIGHT",
    "QWEN3_END_TEXT",
    "SHAPE_SETTINGS",
    "ServerFacts",
    "default_query_prompt",
    "hub_id",
    "model_aliases",
    "parse_facts",
    "request_shape",
    "same_model",
    "served_preset",
]

#: The settings a server may advertise in ``client_defaults`` (anything else is ignored), with
#: the largest value accepted for each.
SHAPE_SETTINGS: dict[str, int] = {"batch_size": 100_000, "max_batch_tokens": 100_000_000, "max_concurrency": 1024}
#: Requests in flight per data-parallel rank of an SGLang server when ``max_concurrency`` is not
#: set (2x H200, SGLang 0.5.17: 8 per rank reached 0.93-0.95 of the raw rate, 4 per rank less,
#: 16 per rank no more; docs/benchmarks.md, "Two GPUs").
DEFAULT_IN_FLIGHT = 8
_MAX_DP_SIZE = 128

_HF_CACHE = re.compile(r"models--([^/]+)--([^/]+)/snapshots/[^/]+$")
#: Model types and architectures of the Qwen3 family (Qwen3-Embedding declares ``qwen3`` /
#: ``Qwen3ForCausalLM``; SGLang 0.5.23 also runs a bare ``Qwen3Model`` as an embedding model).
_QWEN3_TYPES = frozenset({"qwen3"})
_QWEN3_ARCHITECTURES = frozenset({"Qwen3ForCausalLM", "Qwen3Model"})
#: The text of the token Qwen3's tokenizer ends every text with (``<|endoftext|>``): the last
#: token Qwen3-Embedding pools, so a window sent as token ids must end with it.
QWEN3_END_TEXT = "<|endoftext|>"


@dataclass(frozen=True)
class ServerFacts:
    """What the server said about itself; a field it did not say is ``None`` or empty.

    ``answered`` names the endpoints that answered (``"models"``, ``"model_info"``,
    ``"server_info"``): an empty set means a server that tells nothing (another
    OpenAI-compatible server), and the client falls back to its configured or default model.
    """

    served_names: tuple[str, ...] = ()
    """``/v1/models`` ids of the models served (SGLang: one, the served name)."""
    adapters: tuple[str, ...] = ()
    """``/v1/models`` ids of LoRA adapters (entries with a ``parent``)."""
    model_path: str | None = None
    """``/model_info`` ``model_path``: the directory or hub id the server loaded."""
    model_type: str | None = None
    """``/model_info`` ``model_type`` of the model's config (SGLang 0.5.16+, the local backend)."""
    architectures: tuple[str, ...] = ()
    """``/model_info`` ``architectures`` of the model's config (SGLang 0.5.16+, the local backend)."""
    is_embedding: bool | None = None
    """``not /model_info is_generation``."""
    native_dim: int | None = None
    """``/model_info`` ``embedding.dimension`` (the local backend)."""
    max_model_len: int | None = None
    """``/v1/models`` ``max_model_len``: the served context length (SGLang refuses an input of
    exactly this many tokens)."""
    supports_dimensions: bool | None = None
    """``/model_info`` ``embedding.supports_dimensions``: whether the server truncates to
    ``dimensions`` (``None``: the server does not say; SGLang < 0.5.17, other servers)."""
    matryoshka_dimensions: tuple[int, ...] = ()
    """``/model_info`` ``embedding.matryoshka_dimensions``: the only widths the server truncates
    to (empty: any width up to the native one)."""
    dp_size: int | None = None
    """``/server_info`` ``dp_size``: SGLang's data-parallel ranks (``None``: not reported)."""
    priority_scheduling: bool = False
    """``/server_info`` ``enable_priority_scheduling``: whether the server orders its queue by
    a request's ``priority`` (SGLang's ``--enable-priority-scheduling``, the local backend). Only
    then does the client send ``query_priority``: a server without it ignores the field, or
    aborts the request when started with ``--abort-on-priority-when-disabled``."""
    prompts: Mapping[str, str] = field(default_factory=dict)
    """The model's sentence-transformers prompts (the local backend), e.g. ``{"query": ...}``."""
    client_defaults: Mapping[str, int] = field(default_factory=dict)
    """``/server_info`` ``client_defaults``, checked: only `SHAPE_SETTINGS`, positive ints."""
    answered: frozenset[str] = frozenset()
    router: bool = False
    """An sglang-router (``/get_server_info`` says ``router_manager``): its workers serve, it
    forwards. Its ``/v1/tokenize`` ignores ``add_special_tokens`` (sglang-router 0.3.2), and
    it has no ``/server_info`` to say whether its workers schedule by priority."""
    says_reranker: bool = False
    """The server says it serves a reranker (the local backend: a ``reranker`` block in
    ``/model_info``, ``task: "rerank"`` in ``/server_info``); see `is_reranker`."""

    @property
    def is_reranker(self) -> bool:
        """A reranker server: it says so, or (SGLang) it serves a generation model
        (``is_generation: true``) whose name or architecture says reranker, as Qwen3-Reranker's do."""
        if self.says_reranker:
            return True
        if self.is_embedding is not False:
            return False
        return any("rerank" in name.lower() for name in [*self.names(), *self.architectures])

    @property
    def is_qwen3(self) -> bool:
        """A model of the Qwen3 family, by its config's ``model_type`` or architecture."""
        return self.model_type in _QWEN3_TYPES or bool(_QWEN3_ARCHITECTURES.intersection(self.architectures))

    @property
    def served_name(self) -> str | None:
        """The name requests should carry: the first ``/v1/models`` id, else the model path."""
        return self.served_names[0] if self.served_names else self.model_path

    @property
    def known(self) -> bool:
        """Whether the server named its model at all."""
        return bool(self.served_names or self.model_path)

    def describe(self) -> str:
        """``'embed' (/models/Qwen3-Embedding-4B)``, or just the one name known."""
        name = self.served_names[0] if self.served_names else None
        path = self.model_path
        if name and path and name != path:
            return f"{name!r} ({path})"
        return repr(name or path or "unknown")

    def names(self) -> list[str]:
        """Every name the server gave for its model: served names, adapters, the model path."""
        return [*self.served_names, *self.adapters, *([self.model_path] if self.model_path else [])]


def model_aliases(name: str) -> set[str]:
    """The spellings under which ``name`` counts as the same model, lower-cased.

    The name itself, its last path component (``/models/Qwen3-Embedding-4B`` and
    ``Qwen/Qwen3-Embedding-4B`` both give ``qwen3-embedding-4b``), and for a Hugging Face cache
    snapshot (``.../models--Qwen--Qwen3-Embedding-4B/snapshots/<hash>``) the hub id and its name.
    """
    text = name.strip().replace("\\", "/").rstrip("/")
    if not text:
        return set()
    out = {text.lower(), text.rsplit("/", 1)[-1].lower()}
    hub = hub_id(text)
    if hub is not None:
        out |= {hub.lower(), hub.rsplit("/", 1)[-1].lower()}
    return out


def hub_id(path: str) -> str | None:
    """The hub id (``Qwen/Qwen3-Embedding-4B``) of a Hugging Face cache snapshot folder
    (``.../models--Qwen--Qwen3-Embedding-4B/snapshots/<hash>``, either separator), else ``None``."""
    match = _HF_CACHE.search(path.strip().replace("\\", "/").rstrip("/"))
    return f"{match[1]}/{match[2]}" if match else None


def same_model(configured: str, facts: ServerFacts) -> bool:
    """Whether ``configured`` names the model the server serves (`model_aliases` overlap).

    A LoRA request (``base:adapter``) counts when its base or the whole name is served. Always
    ``True`` when the server named no model (nothing to compare with).
    """
    served = facts.names()
    if not served:
        return True
    wanted = model_aliases(configured)
    if ":" in configured:
        wanted |= model_aliases(configured.split(":", 1)[0])
    return any(wanted & model_aliases(name) for name in served)


def served_preset(names: Iterable[str | None]) -> ModelPreset | None:
    """The preset of the first name (configured, served, model path) that has one."""
    for name in names:
        if not name:
            continue
        for alias in sorted(model_aliases(name), key=len, reverse=True):
            preset = find_preset(alias)
            if preset is not None:
                return preset
    return None


def default_query_prompt(facts: ServerFacts, preset: ModelPreset | None, task: str | None = DEFAULT_TASK) -> str | None:
    """What queries get when ``query_instruction`` is not set: the model's own choice.

    1. the query prompt of the model's sentence-transformers config (Qwen3-Embedding declares
       Qwen's retrieval instruction there; other models their own prefix);
    2. else Qwen3's instruction template with ``task`` for a Qwen3-Embedding preset (by
       configured, served or path name) or a model the server reports as Qwen3 run for
       embeddings, whatever its served name;
    3. else nothing.
    """
    prompt = facts.prompts.get("query")
    if prompt:
        return prompt
    if preset is not None or (facts.is_qwen3 and facts.is_embedding is not False):
        return query_prompt(task)
    return None


def request_shape(
    advertised: Mapping[str, int], explicit: Mapping[str, int], given: set[str], dp_size: int | None = None
) -> dict[str, int]:
    """The request shape to use: what was set explicitly, else what the server advertised, else
    the package default (``explicit`` holds every shape setting's current value, ``given`` the
    names set explicitly). When ``max_concurrency`` is not given, a server of ``dp_size`` > 1
    data-parallel ranks gets `DEFAULT_IN_FLIGHT` requests in flight per rank; an advertised
    ``max_concurrency`` only ever lowers that (a server cannot make the client open more
    connections than its settings and ranks say)."""
    shape = dict(explicit)
    if "max_concurrency" not in given and dp_size is not None and dp_size > 1:
        shape["max_concurrency"] = DEFAULT_IN_FLIGHT * dp_size
    for name, value in advertised.items():
        if name in given or name not in shape:
            continue
        shape[name] = min(value, shape[name]) if name == "max_concurrency" else value
    return shape


# ------------------------------------------------------------------ reading the answers
def _router_dp_size(workers: Any) -> int | None:
    """The data-parallel ranks behind an sglang-router: the sum of its listed workers'
    ``metadata.dp_size`` (a string in sglang-router 0.3; 1 when a worker does not say).

    Unhealthy workers count too: the client is sized once, for its life, and a worker the router
    marks unhealthy for a moment (a loaded machine, a restart) comes back."""
    listed = workers.get("workers") if isinstance(workers, dict) else None
    if not isinstance(listed, list):
        return None
    total = 0
    for worker in listed:
        if not isinstance(worker, dict):
            continue
        meta = worker.get("metadata")
        raw = meta.get("dp_size") if isinstance(meta, dict) else None
        if isinstance(raw, str) and raw.isdigit():
            raw = int(raw)
        total += _pos_int(raw, _MAX_DP_SIZE) or 1
    return min(total, _MAX_DP_SIZE) or None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _pos_int(value: Any, limit: int | None = None) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        return None
    return value if limit is None or value <= limit else None


def parse_facts(models: Any, info: Any, server_info: Any, workers: Any = None) -> ServerFacts:
    """Read the answers (each a decoded JSON body, or ``None`` when the endpoint did not
    answer); anything of an unexpected shape is ignored, never trusted. ``workers``: an
    sglang-router's ``GET /workers``, whose workers' ``dp_size`` add up to the ``dp_size``."""
    answered = set()
    names: list[str] = []
    adapters: list[str] = []
    max_len = None
    if isinstance(models, dict) and isinstance(models.get("data"), list):
        answered.add("models")
        for entry in models["data"]:
            if isinstance(entry, dict) and _str(entry.get("id")):
                (adapters if entry.get("parent") else names).append(entry["id"])
                max_len = max_len or _pos_int(entry.get("max_model_len"))
    path = model_type = None
    architectures: tuple[str, ...] = ()
    is_embedding = native = supports_dims = None
    matryoshka: tuple[int, ...] = ()
    prompts: dict[str, str] = {}
    if isinstance(info, dict) and ("model_path" in info or "is_generation" in info):
        answered.add("model_info")
        path = _str(info.get("model_path"))
        model_type = _str(info.get("model_type"))
        archs = info.get("architectures")
        if isinstance(archs, list):
            architectures = tuple(a for a in archs if isinstance(a, str))
        if isinstance(info.get("is_generation"), bool):
            is_embedding = not info["is_generation"]
        embedding = info.get("embedding")
        if isinstance(embedding, dict):
            native = _pos_int(embedding.get("dimension"))
            if isinstance(embedding.get("supports_dimensions"), bool):
                supports_dims = embedding["supports_dimensions"]
            widths = embedding.get("matryoshka_dimensions")
            if isinstance(widths, list) and all(_pos_int(w) for w in widths):
                matryoshka = tuple(sorted(set(widths)))
        st = info.get("sentence_transformers")
        if isinstance(st, dict) and isinstance(st.get("prompts"), dict):
            prompts = {k: v for k, v in st["prompts"].items() if isinstance(k, str) and isinstance(v, str)}
    shape: dict[str, int] = {}
    dp_size = None
    priority = False
    if isinstance(server_info, dict):
        answered.add("server_info")
        dp_size = _pos_int(server_info.get("dp_size"), _MAX_DP_SIZE) or _router_dp_size(workers)
        priority = server_info.get("enable_priority_scheduling") is True
        advertised = server_info.get("client_defaults")
        if isinstance(advertised, dict):
            for name, limit in SHAPE_SETTINGS.items():
                value = _pos_int(advertised.get(name), limit)
                if value is not None:
                    shape[name] = value
    return ServerFacts(
        served_names=tuple(names),
        adapters=tuple(adapters),
        model_path=path,
        model_type=model_type,
        architectures=architectures,
        is_embedding=is_embedding,
        native_dim=native,
        max_model_len=max_len,
        supports_dimensions=supports_dims,
        matryoshka_dimensions=matryoshka,
        dp_size=dp_size,
        priority_scheduling=priority,
        prompts=prompts,
        client_defaults=shape,
        answered=frozenset(answered),
        router=isinstance(server_info, dict) and server_info.get("router_manager") is True,
        says_reranker=_says_reranker(info, server_info),
    )


def _says_reranker(info: Any, server_info: Any) -> bool:
    """The local reranker backend's own word: a ``reranker`` block, or ``task: "rerank"``."""
    block = info.get("reranker") if isinstance(info, dict) else None
    task = server_info.get("task") if isinstance(server_info, dict) else None
    return isinstance(block, dict) or task == "rerank"
