"""One rerank call with no IO: its inputs checked, the ``/v1/score`` requests it becomes, and the
answers read back into ranked results.

A call (`RerankCall`) is checked before any request: the query, the documents (the
``empty_text`` policy), the instruction, ``top_n``. After discovery, each distinct document becomes one
request item (`Pair`) of Qwen3-Reranker's exact prompt (`qwen_sglang.rerank_format`):

- as **text** when the whole prompt surely fits the served context: the shared ``query`` is
  ``PREFIX + "<Instruct>: …\\n<Query>: …\\n<Document>: "`` and the item ``document + SUFFIX``
  (SGLang concatenates the two strings and tokenises the prompt whole, which gives exactly
  prefix ids + body ids + suffix ids: measured for 1,000 prompts, docs/compatibility.md);
- as **token ids** when it may not: the body is tokenised by the server (``/v1/tokenize``), cut
  to the tokens left by the prefix and the suffix (the first tokens are kept, as in Qwen's
  reference), and sent as ``body ids + suffix ids`` after the shared ``query`` = prefix ids.

Pairs are grouped into requests by count and token budget, never mixing text and ids
(`batches`); `score_payload` writes a request; `parse_scores` checks an answer (one row of two
probabilities per item, finite, within [0, 1], summing to 1); `RerankCall.results` sorts.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from qwen_sglang.client.job import check_strings
from qwen_sglang.errors import InputTypeError, InvalidInputError, MalformedResponseError
from qwen_sglang.rerank_format import DEFAULT_RERANK_INSTRUCTION, PREFIX, SUFFIX, RerankTemplate, format_body

__all__ = ["Pair", "RerankCall", "RerankResult", "batches", "parse_scores", "score_payload"]

logger = logging.getLogger("qwen_sglang")

_SUM_TOLERANCE = 1e-3  # P(yes) + P(no) after apply_softmax; bf16 servers are within ~1e-6


@dataclass(frozen=True)
class RerankResult:
    """One document's place in a ranking.

    Attributes:
        index: The document's position in the list given to ``rerank``.
        score: P("yes"): Qwen3-Reranker's relevance of the document to the query, in [0, 1].
        document: The document's text when ``return_documents=True``, else ``None``.
    """

    index: int
    score: float
    document: str | None = None


def _check_str(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise InputTypeError(f"{what} must be a str, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInputError(
            f"{what} contains a lone surrogate and is not valid Unicode (decode your input with errors='replace')"
        ) from None
    return value


def check_documents(documents: Sequence[str]) -> list[str]:
    """``documents`` as a list of valid ``str``, or the typed error naming the first bad one."""
    return check_strings(
        documents,
        noun="document",
        lead="documents must be a list of str",
        single="documents must be a list of str, got a single str (wrap the document in a list)",
    )


def check_top_n(top_n: object, count: int) -> int | None:
    """``top_n`` as given (``None``: all), or the typed error: not an int, < 1, > ``count``."""
    if top_n is None:
        return None
    if isinstance(top_n, bool) or not isinstance(top_n, int):
        raise InputTypeError(f"top_n must be an int or None, got {type(top_n).__name__}")
    if top_n < 1:
        raise InvalidInputError(f"top_n={top_n}: pass at least 1 (or None for every document)")
    if top_n > count:
        raise InvalidInputError(
            f"top_n={top_n} is more than the {count} documents given: pass top_n <= {count}, or None for all"
        )
    return top_n


@dataclass
class RerankCall:
    """One call's checked inputs, and where each score goes."""

    query: str
    documents: list[str]
    instruction: str
    top_n: int | None
    return_documents: bool
    rows: list[int]
    """Indices of the documents that are scored: the first of identical ones (the others are
    `copies`, or empty)."""
    zero: list[int] = field(default_factory=list)
    """Indices of empty documents scored 0.0 without a request (``empty_text="zero"``)."""
    copies: list[tuple[int, int]] = field(default_factory=list)
    """``(index, k)``: a document identical to the ``k``-th scored one, which gets its score (one
    text, one score, whatever batch or padding each copy would have had)."""

    @classmethod
    def create(
        cls,
        query: str,
        documents: Sequence[str],
        *,
        instruction: str | None,
        top_n: int | None,
        return_documents: bool,
        empty_text: str,
    ) -> RerankCall:
        """Check a call's arguments (no IO): the typed error names the fix.

        Raises:
            InputTypeError: A query, document or instruction that is not a ``str``; ``top_n``
                not an int.
            InvalidInputError: An empty or whitespace-only query; an empty document with
                ``empty_text="raise"``; ``top_n`` < 1 or more than the documents.
        """
        query = _check_str(query, "query")
        if not query.strip():
            raise InvalidInputError("query is empty or whitespace only: pass the text to rank the documents against")
        docs = check_documents(documents)
        if instruction is None:
            instruction = DEFAULT_RERANK_INSTRUCTION
        instruction = _check_str(instruction, "instruction")
        top_n = check_top_n(top_n, len(docs))
        if not isinstance(return_documents, bool):
            raise InputTypeError(f"return_documents must be a bool, got {type(return_documents).__name__}")
        rows: list[int] = []
        zero: list[int] = []
        copies: list[tuple[int, int]] = []
        first: dict[str, int] = {}
        for i, doc in enumerate(docs):
            if doc.strip():
                k = first.setdefault(doc, len(rows))
                if k == len(rows):
                    rows.append(i)
                else:
                    copies.append((i, k))
            elif empty_text == "raise":
                raise InvalidInputError(
                    f"document at index {i} is empty or whitespace only; such documents are never sent to the "
                    "server (set empty_text='zero' to rank them last with score 0, or 'skip' to leave them out)",
                    index=i,
                )
            elif empty_text == "zero":
                zero.append(i)
            else:
                logger.warning("skipping empty document at index %d", i)
        return cls(query, docs, instruction, top_n, return_documents, rows, zero, copies)

    @property
    def head(self) -> str:
        """The text before each document: the prefix and the body up to ``<Document>: ``."""
        return PREFIX + format_body(self.query, "", self.instruction)

    def body(self, k: int) -> str:
        """The body of the ``k``-th scored document (`format_body`)."""
        return format_body(self.query, self.documents[self.rows[k]], self.instruction)

    @property
    def lead(self) -> str:
        """The body before the document's text: ``<Instruct>: …\\n<Query>: …\\n<Document>:`` (the
        space after it is left out: it goes with the document's first token)."""
        return format_body(self.query, "", self.instruction)[:-1]

    def lead_may_fill(self, template: RerankTemplate, max_length: int | None) -> bool:
        """Whether the query and the instruction MAY leave no token of the documents within
        ``max_length`` (a token is at least one byte): only then is the `lead` measured."""
        return max_length is not None and len(self.lead.encode("utf-8")) + template.fixed_length >= max_length

    def check_lead(self, tokens: int, template: RerankTemplate, max_length: int) -> None:
        """Refuse a query that, with the instruction and the fixed prompt, takes all of ``max_length``:
        cut to fit, every document would lose all its tokens and get the same score.

        Raises:
            InvalidInputError: Naming the tokens taken and the fix.
        """
        if tokens + template.fixed_length >= max_length:
            raise InvalidInputError(
                f"the query and the instruction take {tokens} tokens, and Qwen's fixed prompt "
                f"{template.fixed_length}, of the limit of {max_length} (max_tokens, or one less than the served "
                "context): no room for any document, which would all get the same score. Shorten the query or "
                "the instruction, or serve the reranker with a longer context"
            )

    def suspects(self, template: RerankTemplate, max_length: int | None) -> list[int]:
        """The scored documents whose prompt MAY exceed ``max_length`` tokens (a token is at least
        one byte): only these are tokenised to be measured."""
        if max_length is None:
            return []
        room = max_length - template.fixed_length
        return [k for k in range(len(self.rows)) if len(self.body(k).encode("utf-8")) > room]

    def pairs(
        self, template: RerankTemplate, max_length: int | None, counted: dict[int, list[int]], long_text: str
    ) -> list[Pair]:
        """One request item per scored document; ``counted`` holds the body ids of the
        `suspects`. Bodies over the budget are cut (or refused with ``long_text="error"``)."""
        head_cost = _estimate(self.head) + template.fixed_length
        out: list[Pair] = []
        for k, row in enumerate(self.rows):
            ids = counted.get(k)
            if ids is None or max_length is None or len(ids) + template.fixed_length <= max_length:
                doc = self.documents[row]
                out.append(Pair(k, text=doc + SUFFIX, cost=head_cost + _estimate(doc)))
                continue
            if long_text == "error":
                raise InvalidInputError(
                    f"document at index {row} makes a prompt of {len(ids) + template.fixed_length} tokens, more "
                    f"than the limit of {max_length} (max_tokens, or one less than the served context): set "
                    "long_text='truncate' to cut the document's end, as Qwen's reference does",
                    index=row,
                )
            pair = template.pair_ids(ids, max_length=max_length)
            item = pair[len(template.prefix_ids) :]
            out.append(Pair(k, ids=item, cost=len(pair)))
        return out

    def results(self, scores: Sequence[float]) -> list[RerankResult]:
        """The ranking: ``scores[k]`` belongs to ``rows[k]`` and its `copies`; empty documents scored
        0 come last among equals; sorted by score, highest first, ties in the documents' order; ``top_n``."""
        ranked = [(scores[k], row) for k, row in enumerate(self.rows)] + [(scores[k], row) for row, k in self.copies]
        ranked += [(0.0, row) for row in self.zero]
        ranked.sort(key=lambda e: (-e[0], e[1]))
        if self.top_n is not None:
            ranked = ranked[: self.top_n]
        return [
            RerankResult(row, score, self.documents[row] if self.return_documents else None) for score, row in ranked
        ]


def _estimate(text: str) -> int:
    """Tokens of a text, estimated from its UTF-8 length (what request budgets are made of)."""
    return len(text.encode("utf-8")) // 3 + 2


@dataclass(frozen=True)
class Pair:
    """One request item: the ``k``-th scored document of a call, as text or as token ids."""

    k: int
    text: str | None = None
    """The document and the suffix, after the call's shared text head (`RerankCall.head`)."""
    ids: list[int] | None = None
    """The (cut) body ids and the suffix ids, after the shared prefix ids."""
    cost: int = 0
    """Tokens of the whole prompt (counted for ids, estimated for text)."""


def batches(pairs: Sequence[Pair], batch_size: int, max_batch_tokens: int) -> list[list[Pair]]:
    """Group pairs into requests of at most ``batch_size`` items and ``max_batch_tokens``
    (estimated) prompt tokens, never mixing text and ids; a pair larger than the budget goes alone."""
    out: list[list[Pair]] = []
    current: list[Pair] = []
    tokens = 0
    for pair in pairs:
        same_kind = not current or (current[0].ids is None) == (pair.ids is None)
        if current and (not same_kind or len(current) >= batch_size or tokens + pair.cost > max_batch_tokens):
            out.append(current)
            current, tokens = [], 0
        current.append(pair)
        tokens += pair.cost
    if current:
        out.append(current)
    return out


def score_payload(
    model: str | None, call: RerankCall, template: RerankTemplate, batch: Sequence[Pair]
) -> dict[str, Any]:
    """The ``/v1/score`` body of one batch: Qwen's prompt, labels ``[yes, no]``, a softmax over them."""
    query: str | list[int]
    items: list[Any]
    if batch[0].ids is None:
        query, items = call.head, [pair.text for pair in batch]
    else:
        query, items = list(template.prefix_ids), [pair.ids for pair in batch]
    payload: dict[str, Any] = {
        "query": query,
        "items": items,
        "label_token_ids": [template.yes_id, template.no_id],
        "apply_softmax": True,
    }
    if model is not None:
        payload["model"] = model
    return payload


def parse_scores(body: Any, expected: int, url: str) -> list[float]:
    """P("yes") of each item from a ``/v1/score`` answer, checked: one row ``[P(yes), P(no)]`` per
    item, finite, within [0, 1], summing to 1 (what ``apply_softmax`` over the two labels gives).

    Raises:
        MalformedResponseError: Anything else, naming what was wrong (an embedding server
            answers rows as wide as its vectors).
    """

    def bad(why: str) -> MalformedResponseError:
        return MalformedResponseError(f"malformed answer from {url}: {why}", url=url)

    if not isinstance(body, dict) or not isinstance(body.get("scores"), list):
        raise bad("no 'scores' list")
    rows = body["scores"]
    if len(rows) != expected:
        raise bad(f"{len(rows)} scores for {expected} documents")
    out: list[float] = []
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != 2:
            width = len(row) if isinstance(row, list) else type(row).__name__
            raise bad(
                f"score {i} is {width} values, not [P(yes), P(no)] (is base_url serving an embedding model? a "
                "reranker is served without --is-embedding)"
            )
        if any(isinstance(v, bool) or not isinstance(v, int | float) for v in row):
            raise bad(f"score {i} holds values that are not numbers: {str(row)[:80]}")
        yes, no = float(row[0]), float(row[1])
        if not (math.isfinite(yes) and math.isfinite(no) and 0.0 <= yes <= 1.0 and 0.0 <= no <= 1.0):
            raise bad(f"score {i} is {row}: probabilities must be finite and within [0, 1]")
        if abs(yes + no - 1.0) > _SUM_TOLERANCE:
            raise bad(f"score {i} is {row}, which does not sum to 1: the server ignored apply_softmax")
        out.append(yes)
    return out
