"""What a client knows: its settings, read afresh by every call, and what it learned from the server.

Two kinds of knowledge, kept apart:

- `ServerState`: what the client has *learned* about the server at one address (the discovery
  answers, the width of its vectors, that it cannot truncate or send base64, its tokenizer's
  special tokens, a request budget it refused). It outlives calls; a new ``base_url`` gets a new one.
- `Terms`: what one call works with, *derived* from a snapshot of the settings and the
  `ServerState` when the call starts (`Terms.settle`): the model name, preset, query prompt,
  native width, request shape and token limit. Nothing derived is stored, so a setting changed
  between calls takes effect at the next call, and one changed during a call does not tear it.

The lock rule: every shared object that changes owns its lock, and only its own methods take it,
for a few lines, never across a request or a yield. `ServerState` is changed only through its
methods (each a small "learn this" that reports whether it was news, for a warning logged once);
reading its attributes needs no lock (each is replaced whole, never mutated in place). The same
holds for the engine's token tally, a call's `qwen_sglang.client.job.Job`, and the shell's
connection pools.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from qwen_sglang.client.discovery import ServerFacts, default_query_prompt, request_shape, same_model, served_preset
from qwen_sglang.client.endpoints import Endpoints
from qwen_sglang.client.roles import EMBEDDING, ClientRole
from qwen_sglang.errors import ConfigurationError, ModelMismatchError
from qwen_sglang.instructions import query_prompt
from qwen_sglang.presets import ModelPreset
from qwen_sglang.settings import QwenSGLangSettings, ServedContextHandle

__all__ = ["ServerState", "Terms"]

logger = logging.getLogger("qwen_sglang")

SHAPE_NAMES = ("batch_size", "max_batch_tokens", "max_concurrency")
#: What a `ServerState` learns once and for good (each set through `ServerState._set`).
_Flag = Literal["client_side_dims", "floats_only", "no_tokenize", "noted_no_prompt", "priority_refused"]


class ServerState:
    """What a client has learned about the server at `base_url`, shared by all its calls.

    Every change goes through a method, under the object's own lock; each returns whether it
    changed anything (``True`` once: the caller logs a warning once). Attributes are read
    without the lock.
    """

    def __init__(self, base_url: str) -> None:
        self._lock = threading.Lock()
        self.base_url = base_url
        #: The servers of ``base_url`` (one or more), their load and health.
        self.endpoints = Endpoints(tuple(base_url.split(",")))
        #: The discovery answers (``None``: not asked yet, or the last attempt failed).
        self.facts: ServerFacts | None = None
        #: The width of the vectors the server returned for no ``dimensions``.
        self.width: int | None = None
        #: The server cannot truncate to ``dimensions`` (learned from a 400 or an ignored field).
        self.client_side_dims = False
        #: The server refused base64 answers.
        self.floats_only = False
        #: The special tokens its tokenizer puts before and after a text.
        self.special_tokens: tuple[list[int], list[int]] | None = None
        #: It has no ``/v1/tokenize``.
        self.no_tokenize = False
        #: A ``max_batch_tokens`` lowered after a 413 (used while the setting is not given).
        self.budget: int | None = None
        #: The note that queries go without an instruction was logged.
        self.noted_no_prompt = False
        #: It refused a request that carried a ``priority`` (SGLang's
        #: ``--abort-on-priority-when-disabled``): queries go without one from now on.
        self.priority_refused = False

    def adopt(self, facts: ServerFacts) -> bool:
        """Keep the discovery answers; ``False`` when another call kept its own first."""
        with self._lock:
            if self.facts is not None:
                return False
            self.facts = facts
            return True

    def learn_width(self, width: int) -> None:
        """The width of the server's full vectors, from its first answer."""
        with self._lock:
            if self.width is None:
                self.width = width

    def truncate_on_client(self) -> bool:
        """From now on the client truncates to ``dimensions`` itself."""
        return self._set("client_side_dims")

    def use_floats(self) -> bool:
        """From now on answers are asked for as JSON floats."""
        return self._set("floats_only")

    def refuse_priority(self) -> bool:
        """From now on no request carries a ``priority``."""
        return self._set("priority_refused")

    def _set(self, flag: _Flag) -> bool:
        """Set ``flag`` for good; whether this call set it (its caller warns once)."""
        with self._lock:
            if getattr(self, flag):
                return False
            setattr(self, flag, True)
            return True

    def learn_special_tokens(self, prefix: list[int], suffix: list[int]) -> None:
        with self._lock:
            if self.special_tokens is None:
                self.special_tokens = (list(prefix), list(suffix))

    def learn_no_tokenize(self) -> bool:
        """It has no ``/v1/tokenize`` (or cannot count for this client): texts go as they are."""
        return self._set("no_tokenize")

    def lower_budget(self, current: int, estimate: int) -> bool:
        """A request of ``estimate`` tokens was refused as too large: later ones get at most half."""
        with self._lock:
            lowered = min(self.budget or current, current, max(1, estimate // 2))
            news = lowered < (self.budget or current)
            self.budget = lowered
            return news

    def note_no_prompt(self) -> bool:
        """The note that queries go without an instruction is being logged."""
        return self._set("noted_no_prompt")

    def after_fork(self) -> None:
        """In a forked child: a lock held by a thread of the parent would never be released here."""
        self._lock = threading.Lock()
        self.endpoints.after_fork()


@dataclass(frozen=True)
class Terms:
    """What one call works with: its settings snapshot and what follows from them and the server."""

    settings: QwenSGLangSettings
    server: ServerState
    model: str | None
    """The name requests carry (``None``: not known yet)."""
    preset: ModelPreset | None
    query_prompt: str | None
    declared_dim: int | None
    """The native width the server reported or the preset gives (``None``: learned from answers)."""
    shape: Mapping[str, int]
    max_tokens: int | None
    """Most tokens per text, special tokens included (``None``: unknown, nothing is cut)."""
    mismatch: ConfigurationError | None = None
    role: ClientRole = EMBEDDING
    """The client the user holds (what messages name, the default model)."""

    @property
    def facts(self) -> ServerFacts | None:
        return self.server.facts

    @property
    def native_dim(self) -> int | None:
        """The width of the served model's full vectors, once known."""
        return self.declared_dim or self.server.width

    @property
    def client_side_dims(self) -> bool:
        """Whether the client truncates to ``dimensions`` itself: the server said it cannot
        (``/model_info``'s embedding block, read by the first call with ``dimensions``), or
        showed it (a 400, or a field ignored)."""
        return self.server.client_side_dims

    @classmethod
    def settle(cls, settings: QwenSGLangSettings, server: ServerState, role: ClientRole = EMBEDDING) -> Terms:
        """Derive the terms of a call of a ``role`` client from ``settings`` and what ``server``
        has told so far."""
        facts = server.facts
        given = settings.explicit_fields
        configured = settings.model
        if facts is None:
            model, preset, mismatch = configured, settings.preset, None
            prompt = query_prompt(settings.query_instruction) if "query_instruction" in given else None
            native = settings.preset.native_dim if settings.preset else None
            advertised: Mapping[str, int] = {}
            dp_size = None
        else:
            model, preset, mismatch = _served_model(settings, facts, role)
            if "query_instruction" in given:
                prompt = query_prompt(settings.query_instruction)
            else:
                prompt = default_query_prompt(facts, preset, settings.query_instruction)
            native = facts.native_dim or (preset.native_dim if preset else None)
            advertised, dp_size = facts.client_defaults, facts.dp_size
        values = {name: getattr(settings, name) for name in SHAPE_NAMES}
        if server.budget is not None and "max_batch_tokens" not in given:  # lowered after a 413
            current = advertised.get("max_batch_tokens", values["max_batch_tokens"])
            advertised = {**advertised, "max_batch_tokens": min(current, server.budget)}
        shape = request_shape(advertised, values, given, dp_size)
        if "max_concurrency" not in given:  # the shape of one server, for each of base_url's
            shape["max_concurrency"] *= len(server.endpoints)
        return cls(
            settings=settings,
            server=server,
            model=model,
            preset=preset,
            query_prompt=prompt,
            declared_dim=native,
            shape=shape,
            max_tokens=_max_tokens(settings, preset, facts),
            mismatch=mismatch,
            role=role,
        )


def _served_model(
    settings: QwenSGLangSettings, facts: ServerFacts, role: ClientRole
) -> tuple[str, ModelPreset | None, ConfigurationError | None]:
    """The model requests carry, its preset, and the error every call raises when the configured
    model is not the served one (or the server serves several and none was configured)."""
    configured = settings.model
    mismatch: ConfigurationError | None = None
    if configured is not None and not same_model(configured, facts):
        mismatch = _mismatch(settings, configured, facts, role)
    elif configured is None and len(facts.served_names) > 1:  # Ollama, a proxy: no guessing
        mismatch = ConfigurationError(
            f"the server at {settings.base_url} serves several models ({', '.join(facts.served_names)}): set "
            f"the one to use with model=..., --model or {role.model_env}"
        )
    model = configured or facts.served_name or role.default_model
    served = (*facts.served_names, *facts.adapters)
    if configured and configured not in served and facts.served_names and ":" not in configured:
        model = facts.served_names[0]  # the same model, under the name the server serves
    return model, served_preset([model, configured, *facts.names()]), mismatch


def _mismatch(
    settings: QwenSGLangSettings, configured: str, facts: ServerFacts, role: ClientRole
) -> ModelMismatchError:
    from_env = "model" not in settings.model_fields_set and bool(os.environ.get(role.model_env))
    where = f" (from {role.model_env})" if from_env else ""
    served = facts.served_name or "?"
    return ModelMismatchError(
        f"the server at {settings.base_url} serves {facts.describe()}, not the configured model {configured!r}"
        f"{where}. Set the model to the served one (model={served!r}, --model {served}, or "
        f"{role.model_env}), leave it unset to use whatever the server serves, or point base_url at a "
        f"server of {configured}",
        configured=configured,
        served=served,
    )


def _max_tokens(settings: QwenSGLangSettings, preset: ModelPreset | None, facts: ServerFacts | None) -> int | None:
    """Most tokens per text: ``max_tokens``, else the model's context, and never more than the
    served context (``/v1/models``' ``max_model_len``, not the tokenizer's limit that
    ``/v1/tokenize`` reports; behind a managed router, whose ``/v1/models`` has none, what its
    workers reported: `qwen_sglang.settings.ServedContextHandle`). SGLang refuses an input of
    exactly its context length, so a context allows one token less."""
    limits = []
    if settings.max_tokens is not None:
        limits.append(settings.max_tokens)
    elif preset is not None:
        limits.append(preset.context_length - 1)
    served = facts.max_model_len if facts is not None else None
    if served is None and isinstance(settings.server, ServedContextHandle):  # a managed router
        served = settings.server.served_context
    if served is not None:
        limits.append(served - 1)
    return max(min(limits), 1) if limits else None
