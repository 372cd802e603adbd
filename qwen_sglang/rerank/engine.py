"""The reranker's flows, on the embedding client's engine: no IO, no second HTTP stack.

A flow yields what it needs done (`qwen_sglang.client.ops`) and is driven by an embedding
client's shells (`qwen_sglang.EmbeddingClient.run_flow`), sync or async, over its connections.
Discovery, token counts, retries, deadlines and typed errors are the embedding engine's own
(`qwen_sglang.client.engine.Engine`); what is added here:

- `RerankEngine.plan_flow`: discover the server (refusing an embedding server), learn the
  prompt's fixed token ids and the "yes"/"no" ids from the server's tokenizer once per server,
  measure the documents that may not fit and cut their bodies (`qwen_sglang.rerank.plan`);
- `RerankEngine.batch_flow`: one ``/v1/score`` request, sent again in halves on a 413.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from qwen_sglang.client.engine import Engine
from qwen_sglang.client.ops import Flow
from qwen_sglang.client.retries import request_flow
from qwen_sglang.client.state import Terms
from qwen_sglang.client.tokens import tokenize_flow
from qwen_sglang.errors import ConfigurationError, NotFoundError, RequestTooLargeError
from qwen_sglang.rerank.plan import Pair, RerankCall, batches, parse_scores, score_payload
from qwen_sglang.rerank_format import NO_TOKEN, PREFIX, SUFFIX, YES_TOKEN, RerankTemplate

__all__ = ["Plan", "RerankEngine"]

logger = logging.getLogger("qwen_sglang")

_SCORE_ANSWER_BASE = 1 << 16  # room for everything in a /v1/score answer that is not scores
_SCORE_ANSWER_PER_ITEM = 256  # one row of two JSON floats, generously


@dataclass
class Plan:
    """A call after discovery: its terms, the server's template, and its request items."""

    call: RerankCall
    terms: Terms
    template: RerankTemplate
    pairs: list[Pair]

    def batches(self) -> list[list[Pair]]:
        shape = self.terms.shape
        return batches(self.pairs, shape["batch_size"], shape["max_batch_tokens"])


class RerankEngine:
    """The sans-IO logic of one `qwen_sglang.RerankClient`, around an embedding `Engine` (its
    settings, discovery and request flows) and the templates learned per server address."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        #: Per server address (read and set without a lock: ``dict.setdefault`` is atomic).
        self._templates: dict[str, RerankTemplate] = {}

    def discover_flow(self) -> Flow[Terms]:
        """The embedding engine's discovery, then: is this a reranker server?"""
        terms = yield from self.engine.discover_flow()
        facts = terms.facts
        if facts is not None and facts.is_embedding:
            raise ConfigurationError(
                f"the server at {terms.settings.base_url} serves {facts.describe()} as an embedding model "
                "(its /model_info says is_generation: false), not a reranker. Point the reranker at a "
                "Qwen3-Reranker server, started without --is-embedding (`qwen-sglang serve --task rerank "
                "--model Qwen/Qwen3-Reranker-0.6B`); use EmbeddingClient for this one"
            )
        return terms

    def template_flow(self, terms: Terms) -> Flow[RerankTemplate]:
        """The fixed parts' ids and the answer tokens, from the server's own tokenizer (once per
        server address)."""
        base_url = terms.settings.base_url
        template = self._templates.get(base_url)
        if template is not None:
            return template
        try:
            ids = yield from tokenize_flow(terms, [PREFIX, SUFFIX, YES_TOKEN, NO_TOKEN], False)
        except NotFoundError as exc:
            raise ConfigurationError(
                f"the server at {base_url} has no /v1/tokenize ({exc.server_message or exc}): the reranker "
                "needs the served model's tokenizer to build Qwen3-Reranker's prompt. Serve it with SGLang "
                "(`qwen-sglang serve --task rerank`) or the local backend"
            ) from None
        template = RerankTemplate.from_tokenizer(lambda texts: ids)
        return self._templates.setdefault(base_url, template)

    def plan_flow(self, call: RerankCall) -> Flow[Plan]:
        """Discover, learn the template, and turn the call's documents into request items: those
        that may exceed the served context (less one token) are tokenised and cut."""
        terms = yield from self.discover_flow()
        template = yield from self.template_flow(terms)
        limit = terms.max_tokens
        if limit is not None:
            template.body_budget(limit)  # a context too short for the fixed prompt: the error says so
        suspects = call.suspects(template, limit)
        texts = [call.body(k) for k in suspects]
        lead = call.lead_may_fill(template, limit)
        counted: dict[int, list[int]] = {}
        if texts or lead:
            ids = yield from tokenize_flow(terms, [*texts, call.lead] if lead else texts, False)
            if lead:
                assert limit is not None  # lead_may_fill says so
                call.check_lead(len(ids.pop()), template, limit)
            counted = dict(zip(suspects, ids, strict=True))
        pairs = call.pairs(template, limit, counted, terms.settings.long_text)
        return Plan(call, terms, template, pairs)

    def batch_flow(self, plan: Plan, batch: list[Pair]) -> Flow[list[float]]:
        """Score one batch (P("yes") per pair, in order); a 413 sends it again in halves."""
        terms = plan.terms
        payload = score_payload(terms.model, plan.call, plan.template, batch)
        limit = _SCORE_ANSWER_BASE + _SCORE_ANSWER_PER_ITEM * len(batch)
        try:
            body = yield from request_flow(
                terms.settings, terms.server.endpoints, "POST", "/score", payload, max_bytes=limit, role=terms.role
            )
        except RequestTooLargeError:
            if len(batch) < 2:
                raise
            half = len(batch) // 2
            first = yield from self.batch_flow(plan, batch[:half])
            second = yield from self.batch_flow(plan, batch[half:])
            return first + second
        return parse_scores(body, len(batch), terms.settings.base_url + "/score")
