"""Exact token counts from the server's tokenizer (``/v1/tokenize``), and the long-text policy
they serve: texts over the limit are chunked into windows, truncated, or refused."""

from __future__ import annotations

import logging

from qwen_sglang.client.discovery import QWEN3_END_TEXT
from qwen_sglang.client.job import Item, Job
from qwen_sglang.client.ops import Flow
from qwen_sglang.client.retries import request_flow
from qwen_sglang.client.state import Terms
from qwen_sglang.errors import (
    BadRequestError,
    ConfigurationError,
    InvalidInputError,
    MalformedResponseError,
    NotFoundError,
)

__all__ = ["long_text_flow", "special_tokens_flow", "tokenize_flow"]

logger = logging.getLogger("qwen_sglang")


def tokenize_flow(terms: Terms, texts: list[str], add_special_tokens: bool) -> Flow[list[list[int]]]:
    """The token ids of ``texts`` from the server's tokenizer (the call's terms are discovered)."""
    if not texts:
        return []
    s = terms.settings
    payload = {"model": terms.model, "prompt": texts, "add_special_tokens": add_special_tokens}
    body = yield from request_flow(s, terms.server.endpoints, "POST", "/tokenize", payload, role=terms.role)
    try:
        tokens = body["tokens"]
        if texts and tokens and isinstance(tokens[0], int):
            tokens = [tokens]
        if len(tokens) != len(texts):
            raise ValueError(f"{len(tokens)} token lists for {len(texts)} texts")
        return [list(map(int, t)) for t in tokens]
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise MalformedResponseError(f"unexpected /v1/tokenize answer: {exc}", url=s.base_url + "/tokenize") from None


def special_tokens_flow(terms: Terms) -> Flow[tuple[list[int], list[int]] | None]:
    """Learn once which special tokens the tokenizer wraps a text in (Qwen3: none before,
    ``<|endoftext|>`` after; BERT-style models: [CLS] ... [SEP]); ``None`` when the server
    cannot tell (`_router_special_tokens_flow`)."""
    server = terms.server
    if server.special_tokens is None:
        if terms.facts is not None and terms.facts.router:
            learned = yield from _router_special_tokens_flow(terms)
            if learned is None:
                return None
            server.learn_special_tokens(*learned)
            return server.special_tokens
        probe = ["hello world"]
        with_special = (yield from tokenize_flow(terms, probe, True))[0]
        plain = (yield from tokenize_flow(terms, probe, False))[0]
        start = _find_sub(with_special, plain)
        if start < 0:
            raise MalformedResponseError(
                "could not align the tokenizer's special tokens (tokenize with and without special tokens disagree)",
                url=terms.settings.base_url + "/tokenize",
            )
        server.learn_special_tokens(with_special[:start], with_special[start + len(plain) :])
    return server.special_tokens


def _router_special_tokens_flow(terms: Terms) -> Flow[tuple[list[int], list[int]] | None]:
    """Behind sglang-router: its ``/v1/tokenize`` never adds special tokens (0.3.2 ignores
    ``add_special_tokens``), while its workers' tokenizers do. For the Qwen3 family they are
    known: nothing before, the end token after, whose id the router's tokenizer gives for its
    text (`qwen_sglang.client.discovery.QWEN3_END_TEXT`). Other models: ``None`` (unknown)."""
    facts = terms.facts
    if facts is None or not facts.is_qwen3:
        return None
    end = (yield from tokenize_flow(terms, [QWEN3_END_TEXT], False))[0]
    if len(end) != 1:
        raise MalformedResponseError(
            f"the router's tokenizer reads {QWEN3_END_TEXT!r} as {end}, not as one special token",
            url=terms.settings.base_url + "/tokenize",
        )
    return [], end


def long_text_flow(job: Job) -> Flow[list[Item]]:
    """Turn the job's texts into request items, applying the long-text policy.

    Only texts that *could* exceed the limit are counted (a token is at least one byte), so
    ordinary calls make no extra request. The limit is the call's ``max_tokens`` (see
    `qwen_sglang.client.state.Terms`): every item sent, special tokens included, stays within it.
    """
    terms = job.terms
    limit = terms.max_tokens
    plain = [Item(target=k, text=t) for k, t in enumerate(job.send)]
    if limit is None or terms.server.no_tokenize:
        return plain  # the server applies its own limit
    suspects = [k for k, text in enumerate(job.send) if len(text.encode("utf-8", "surrogatepass")) + 8 > limit]
    if not suspects:
        return plain
    try:
        specials = yield from special_tokens_flow(terms)
        if specials is None:
            _never_counted(terms, f"the server (an sglang-router) cannot tell the special tokens of {terms.model}")
            return plain
        prefix, suffix = specials
        tokens = yield from tokenize_flow(terms, [job.send[k] for k in suspects], False)
    except NotFoundError:  # not SGLang (or the local backend): no exact counts
        _never_counted(terms, "the server has no /v1/tokenize")
        return plain
    except BadRequestError as exc:
        # sglang-router: 400 "No tokenizers available" for seconds after it is ready (always when
        # its workers are keyed and it is not started with --model-path), or "Tokenizer for model
        # 'x' not found" when its tokenizer has another name: this call's texts go as they are,
        # the workers apply their own limit; a later call asks again.
        message = (exc.server_message or str(exc)).lower()
        if "no tokenizers available" not in message and "tokenizer for model" not in message:
            raise
        logger.warning(
            "the server cannot tokenize yet (%s): long_text=%r does not apply to this call",
            exc.server_message,
            terms.settings.long_text,
        )
        return plain
    counted = dict(zip(suspects, tokens, strict=True))
    items: list[Item] = []
    for k, text in enumerate(job.send):
        ids = counted.get(k)
        if ids is None or len(ids) + len(prefix) + len(suffix) <= limit:
            items.append(Item(target=k, text=text))
        else:
            items.extend(_cut(job, k, ids, prefix, suffix, limit))
    return items


def _never_counted(terms: Terms, why: str) -> None:
    """This client cannot count tokens at this server, now or later: from now on texts go as
    they are and the server applies its own limit (warned once)."""
    if terms.server.learn_no_tokenize():
        logger.warning(
            "%s: long_text=%r cannot apply; texts go as they are and the server applies its own limit",
            why,
            terms.settings.long_text,
        )


def _cut(job: Job, k: int, ids: list[int], prefix: list[int], suffix: list[int], limit: int) -> list[Item]:
    """The items of one text over the limit: refused, truncated, or its token windows."""
    s = job.terms.settings
    extra = len(prefix) + len(suffix)
    if s.long_text == "error":
        raise InvalidInputError(
            f"text at index {job.rows[k]} has {len(ids) + extra} tokens, more than the limit of {limit} "
            "(max_tokens, or one less than the served context; set long_text='chunk' or 'truncate' to embed it)",
            index=job.rows[k],
        )
    if limit <= extra:
        raise ConfigurationError(
            f"max_tokens={limit} leaves no room for text beside the tokenizer's {extra} special tokens: "
            "raise max_tokens"
        )
    if s.long_text == "truncate" or job.kind == "query":
        # Keep the first tokens and the end token that last-token pooling reads.
        return [Item(target=k, ids=prefix + ids[: limit - extra] + suffix)]
    span = min(s.chunk_tokens, limit)
    window = span - extra
    # A window the limit makes smaller than chunk_tokens shares proportionally fewer tokens with
    # the next (an overlap of 128 kept for a 64-token window made a window per token).
    overlap = min(s.chunk_overlap * span // s.chunk_tokens, window - 1)
    step = max(1, window - overlap)
    out: list[Item] = []
    start = 0
    while True:
        part = ids[start : start + window]
        out.append(Item(target=k, ids=prefix + part + suffix, weight=float(len(part))))
        if start + window >= len(ids):
            return out
        start += step


def _find_sub(seq: list[int], sub: list[int]) -> int:
    if not sub:
        return 0
    for i in range(len(seq) - len(sub) + 1):
        if seq[i : i + len(sub)] == sub:
            return i
    return -1
