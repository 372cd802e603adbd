"""One call's bookkeeping: its inputs checked, the request items they became, and the vectors
folded back into one result (no IO; shared by the sync and async shells)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, KeysView, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from qwen_sglang._progress import progress_bar
from qwen_sglang._vectors import normalize_rows
from qwen_sglang.client.answers import Vectors
from qwen_sglang.client.ops import Lane
from qwen_sglang.client.state import Terms
from qwen_sglang.errors import InputTypeError, InvalidInputError
from qwen_sglang.settings import validate_dimensions

__all__ = ["EmbeddingResult", "Item", "Job", "Kind", "ProgressCallback", "check_strings", "check_texts"]

logger = logging.getLogger("qwen_sglang")

Kind = Literal["query", "document"]
#: Called after each request of a call with ``(texts, prompt_tokens)`` that request completed
#: (a text split into windows counts once, when its last window is done).
ProgressCallback = Callable[[int, int], None]


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
class Item:
    """One request input: a text, or token ids from the served model's own tokenizer."""

    target: int  # row of the output it contributes to
    text: str | None = None
    ids: list[int] | None = None
    weight: float = 1.0

    def cost(self) -> int:
        """Its tokens: counted for ids, estimated from UTF-8 length for a text."""
        if self.ids is not None:
            return len(self.ids)
        assert self.text is not None
        return len(self.text.encode("utf-8", "surrogatepass")) // 3 + 2


def check_texts(texts: Sequence[str]) -> list[str]:
    """``texts`` as a list of valid ``str``, or the typed error naming the first bad one."""
    return check_strings(
        texts,
        noun="text",
        lead="expected a list of str",
        single="expected a list of texts, got a single str (use embed_query for one query, or wrap the "
        "document in a list)",
    )


def _is_dataframe(values: object) -> bool:
    """A pandas ``DataFrame`` (or a subclass), told by its class without importing pandas."""
    return any(c.__name__ == "DataFrame" and c.__module__.split(".")[0] == "pandas" for c in type(values).__mro__)


def check_strings(values: Sequence[str], *, noun: str, lead: str, single: str) -> list[str]:
    """``values`` as a list of valid ``str`` (each encodable as UTF-8), or the typed error naming the
    first bad one: ``single`` for one bare str, ``lead`` opening the errors about the container,
    ``noun`` naming an element ("text at index 3 ...")."""
    if isinstance(values, str):
        raise InputTypeError(single)
    if isinstance(values, bytes | bytearray):
        raise InputTypeError(f"{lead}, got bytes (decode it first)")
    if isinstance(values, Mapping):  # iterating it gives its keys: they would be embedded, silently
        raise InputTypeError(f"{lead}, got a {type(values).__name__} (pass list(d.values()) to use its values)")
    if isinstance(values, AbstractSet) and not isinstance(values, KeysView):  # no order to match answers to
        raise InputTypeError(f"{lead}, got a {type(values).__name__}, whose order is arbitrary (pass a list)")
    if _is_dataframe(values):  # not a Mapping, but iterating it gives its column names, as a dict's keys
        raise InputTypeError(
            f"{lead}, got a pandas DataFrame (iterating it gives its column names): pass one column's "
            "values, df['text'].tolist()"
        )
    try:
        out = list(values)
    except TypeError:
        raise InputTypeError(f"{lead}, got {type(values).__name__}") from None
    for i, value in enumerate(out):
        if not isinstance(value, str):
            hint = " (decode bytes first)" if isinstance(value, bytes | bytearray) else ""
            raise InputTypeError(f"{noun} at index {i} is {type(value).__name__}, not str{hint}", index=i)
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInputError(
                f"{noun} at index {i} contains a lone surrogate and is not valid Unicode "
                "(decode your input with errors='replace')",
                index=i,
            ) from None
    return out


@dataclass
class Job:
    """One embedding call: what is sent, and the vectors folded in as requests finish."""

    n_inputs: int
    rows: list[int]  # input index of each text that is sent
    texts: list[str]  # the texts of those rows, as given
    task: str | None  # the call's own task (None: the client's query prompt)
    kind: Kind
    dimensions: int | None
    out_indices: list[int]  # input indices of the output rows
    terms: Terms  # the settings and server knowledge of this call (settled again after discovery)
    on_progress: ProgressCallback | None = None
    send: list[str] = field(default_factory=list)  # the texts as sent (query prompt applied)
    prompt_tokens: int = 0
    _sums: dict[int, Vectors] = field(default_factory=dict)
    _parts: dict[int, int] = field(default_factory=dict)
    _remaining: dict[int, int] = field(default_factory=dict)  # windows still to come, per text
    _bar: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def create(
        cls,
        texts: Sequence[str],
        kind: Kind,
        task: str | None,
        dimensions: int | None,
        terms: Terms,
        on_progress: ProgressCallback | None = None,
    ) -> Job:
        """Check a call's arguments (no IO) and apply the empty-text policy."""
        if kind not in ("query", "document"):
            raise InputTypeError(f"kind must be 'query' or 'document', not {kind!r}")
        texts = check_texts(texts)
        if task is not None and not isinstance(task, str):
            raise InputTypeError(f"task must be a str or None, not {type(task).__name__}")
        settings = terms.settings
        dims = validate_dimensions(dimensions, terms.preset, settings.model)
        dims = dims if dims is not None else settings.dimensions
        policy = settings.empty_text
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
        return cls(
            n_inputs=len(texts),
            rows=rows,
            texts=[texts[i] for i in rows],
            task=task,
            kind=kind,
            dimensions=dims,
            out_indices=list(range(len(texts))) if policy == "zero" else rows,
            terms=terms,
            on_progress=on_progress,
        )

    @property
    def lane(self) -> Lane:
        """A single query (`EmbeddingClient.embed_query`) takes the query lane: it is sent at once,
        whatever bulk work keeps the client's other connections busy."""
        return "query" if self.kind == "query" and len(self.rows) == 1 else "bulk"

    def start(self, items: list[Item], requests: int) -> None:
        """Count what each text waits for; open the progress bar (one tick per text) when
        ``show_progress`` is set and the call takes more than one request."""
        for item in items:
            self._remaining[item.target] = self._remaining.get(item.target, 0) + 1
        if self.terms.settings.show_progress and requests > 1:
            self._bar = progress_bar(total=len(self.send), unit="text", desc="Embedding")

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def add(self, batch: list[Item], answer: tuple[Vectors, int]) -> None:
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
        """The result: one row per output index, a text's windows averaged by their weights and
        re-normalised, empty texts (``empty_text="zero"``) all zeros."""
        dim = next((v.shape[0] for v in self._sums.values()), None)
        if dim is None:
            dim = self.dimensions or self.terms.native_dim or 0
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
