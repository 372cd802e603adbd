"""Reranking in the evaluation: nDCG@k, recall@k and MRR@k before and after a reranker reorders
the embedding top-``top_k`` of each query, and the latency it adds per query."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from qwen_sglang.errors import ConfigurationError
from qwen_sglang.eval.loaders import EvalDataset
from qwen_sglang.eval.metrics import mrr_at_k, ndcg_at_k, recall_at_k

if TYPE_CHECKING:
    from qwen_sglang.rerank import RerankClient

__all__ = ["RerankScores", "candidate_texts", "check_top_k", "rerank_eval", "rerank_stage"]


@dataclass
class RerankScores:
    """What reranking the embedding top-``top_k`` changed (means over the scored queries).

    ``before`` and ``after`` are (nDCG@k, recall@k, MRR@k); ``added_ms_*`` the reranker's time per
    query (one call with the query's ``top_k`` candidates), measured one query at a time.
    """

    top_k: int
    k: int
    n_queries: int
    instruction: str
    """The embedding setting whose ranking was reranked (its instruction label, native width)."""
    before: tuple[float, float, float]
    after: tuple[float, float, float]
    added_ms_p50: float
    added_ms_p95: float
    added_ms_mean: float
    model: str
    base_url: str

    def summary_lines(self) -> list[str]:
        """What the CLI prints: the two rankings' scores and the added latency."""
        k = self.k
        (n0, r0, m0), (n1, r1, m1) = self.before, self.after
        return [
            f"rerank: the embedding top-{self.top_k} of instruction {self.instruction!r} (the widest width), "
            f"reranked by {self.model} at {self.base_url}, {self.n_queries} queries",
            f"{'':<16} {f'nDCG@{k}':>8} {f'R@{k}':>7} {f'MRR@{k}':>7}",
            f"{'before rerank':<16} {n0:8.4f} {r0:7.4f} {m0:7.4f}",
            f"{'after rerank':<16} {n1:8.4f} {r1:7.4f} {m1:7.4f}",
            f"added latency per query (one call of {self.top_k} documents, one query at a time): "
            f"p50 {self.added_ms_p50:.1f} ms, p95 {self.added_ms_p95:.1f} ms, mean {self.added_ms_mean:.1f} ms",
        ]


def check_top_k(top_k: int) -> None:
    """``top_k`` candidates reranked: at least 1 (it may be below ``k``: the rest keep their order)."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ConfigurationError(f"rerank top-k must be a positive int, got {top_k!r}")


def candidate_texts(corpus: Iterable[tuple[str, str]], ids: set[str]) -> dict[str, str]:
    """The texts of ``ids``, read in one pass over the corpus (only those are kept in memory)."""
    return {rid: text for rid, text in corpus if rid in ids}


def rerank_eval(
    reranker: RerankClient,
    queries: Mapping[str, str],
    ranked: Mapping[str, Sequence[str]],
    texts: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, int]],
    *,
    k: int = 10,
    top_k: int = 50,
    instruction: str = "default",
    on_query: Callable[[], None] | None = None,
) -> RerankScores:
    """Rerank each query's first ``top_k`` candidates of ``ranked`` (the embedding ranking, at
    least ``max(k, top_k)`` deep) and score both rankings at ``k``.

    Args:
        reranker: The `qwen_sglang.RerankClient` to evaluate.
        queries: Query id → text (the raw query: the reranker adds its own instruction).
        ranked: Query id → corpus ids, best first, from the embedding search.
        texts: Corpus id → text, for every candidate (`candidate_texts`).
        qrels: Query id → {corpus id: relevance}.
        k: Cut-off of the metrics.
        top_k: Candidates reranked per query; below ``k``, the ranks after ``top_k`` keep the
            embedding order.
        instruction: The label of the embedding setting ``ranked`` comes from (for the report).
        on_query: Called after each query (progress).
    """
    check_top_k(top_k)
    before: list[tuple[float, float, float]] = []
    after: list[tuple[float, float, float]] = []
    times: list[float] = []
    for qid, query in queries.items():
        ids = list(ranked[qid])
        candidates = ids[:top_k]
        start = time.perf_counter()
        results = reranker.rerank(query, [texts[c] for c in candidates])
        times.append(1000.0 * (time.perf_counter() - start))
        reordered = [candidates[r.index] for r in results] + ids[top_k:]
        rel = qrels.get(qid, {})
        before.append(_metrics(ids, rel, k))
        after.append(_metrics(reordered, rel, k))
        if on_query is not None:
            on_query()
    times.sort()
    return RerankScores(
        top_k=top_k,
        k=k,
        n_queries=len(times),
        instruction=instruction,
        before=_means(before),
        after=_means(after),
        added_ms_p50=statistics.median(times) if times else math.nan,
        added_ms_p95=times[min(len(times) - 1, math.ceil(0.95 * len(times)) - 1)] if times else math.nan,
        added_ms_mean=statistics.fmean(times) if times else math.nan,
        model=reranker.model or "unknown",
        base_url=reranker.base_url,
    )


def _metrics(ranked: Sequence[str], rel: Mapping[str, int], k: int) -> tuple[float, float, float]:
    return ndcg_at_k(ranked, rel, k), recall_at_k(ranked, rel, k), mrr_at_k(ranked, rel, k)


def _means(rows: list[tuple[float, float, float]]) -> tuple[float, float, float]:
    if not rows:
        return (math.nan, math.nan, math.nan)
    return (
        statistics.fmean(r[0] for r in rows),
        statistics.fmean(r[1] for r in rows),
        statistics.fmean(r[2] for r in rows),
    )


def rerank_stage(
    reranker: RerankClient,
    data: EvalDataset,
    qids: Sequence[str],
    rows: Sequence[Sequence[int]],
    ids: Sequence[str],
    *,
    k: int,
    top_k: int,
    instruction: str,
) -> RerankScores:
    """`rerank_eval` on `qwen_sglang.eval.evaluate`'s search result: ``rows[i]`` are the corpus
    rows retrieved for query ``qids[i]`` (at least ``max(k, top_k)`` deep), ``ids`` the corpus ids
    by row; the candidates' texts are read in one more pass over the corpus."""
    ranked = {q: [ids[i] for i in row] for q, row in zip(qids, rows, strict=True)}
    texts = candidate_texts(data.corpus(), {c for row in ranked.values() for c in row[:top_k]})
    queries = data.scored_queries()
    return rerank_eval(
        reranker,
        {q: queries[q] for q in qids},
        ranked,
        texts,
        data.qrels,
        k=k,
        top_k=top_k,
        instruction=instruction,
    )
