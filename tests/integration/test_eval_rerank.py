"""``evaluate(reranker=...)`` and ``qwen-sglang eval --rerank``: scores before and after reranking
the embedding top-k, recomputed here independently (MiniLM retrieval, the test reranker)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qwen_sglang import ConfigurationError, EmbeddingClient, RerankClient
from qwen_sglang.eval import evaluate, load_demo_dataset, mrr_at_k, ndcg_at_k, recall_at_k
from qwen_sglang.servers import ManagedServer

TOP_K = 5


def test_scores_before_and_after_reranking_are_the_rankings_own(
    minilm_server: ManagedServer, rerank_server: ManagedServer
) -> None:
    data = load_demo_dataset()
    reranker = RerankClient(base_url=rerank_server.base_url)
    with EmbeddingClient(base_url=minilm_server.base_url) as client:
        report = evaluate(
            data,
            client=client,
            dimensions=[384, 64],
            latency_samples=0,
            chroma_sample=0,
            show_progress=False,
            reranker=reranker,
            rerank_top_k=TOP_K,
        )
        rr = report.rerank
        assert rr is not None and (rr.top_k, rr.k, rr.instruction) == (TOP_K, 10, "none")
        row = next(r for r in report.rows if r.instruction == "none" and r.dimensions == 384)
        assert rr.before == (row.ndcg, row.recall, row.mrr)  # the embedding ranking it started from
        # after: the same candidates reranked here, one query at a time, then scored
        ids, texts = zip(*data.corpus(), strict=True)
        qids = list(data.scored_queries())
        docs = client.embed(list(texts), kind="document").vectors
        queries = client.embed([data.queries[q] for q in qids], kind="document").vectors
        after = []
        for q, scores in zip(qids, queries @ docs.T, strict=True):
            top = [ids[i] for i in np.lexsort((np.arange(len(ids)), -scores))[:10]]
            order = reranker.rerank(data.queries[q], [texts[ids.index(c)] for c in top[:TOP_K]])
            ranked = [top[r.index] for r in order] + top[TOP_K:]
            rel = data.qrels[q]
            after.append((ndcg_at_k(ranked, rel), recall_at_k(ranked, rel), mrr_at_k(ranked, rel)))
    assert rr.after == pytest.approx(tuple(np.mean(after, axis=0)), abs=1e-9)
    assert rr.after[1] == pytest.approx(rr.before[1])  # top-5 reordered within the top 10: the same recall@10
    assert rr.n_queries == len(qids) and rr.added_ms_p50 > 0 and rr.added_ms_p95 >= rr.added_ms_p50
    assert "after rerank" in report.summary() and report.to_dict()["rerank"]["top_k"] == TOP_K


def test_eval_rerank_through_the_cli(
    minilm_server: ManagedServer, rerank_server: ManagedServer, tmp_path: Path
) -> None:
    cmd = [sys.executable, "-m", "qwen_sglang", "eval", "--base-url", minilm_server.base_url, "--demo-data"]
    cmd += ["--out", str(tmp_path), "--no-progress", "--no-plot", "--latency-samples", "0", "--chroma-sample", "0"]
    cmd += ["--dimensions", "384", "--rerank", "--rerank-url", rerank_server.base_url, "--rerank-top-k", "3"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr
    assert "before rerank" in out.stdout and "after rerank" in out.stdout and "added latency per query" in out.stdout
    saved = json.loads((tmp_path / "results.json").read_text())["rerank"]
    assert saved["top_k"] == 3 and len(saved["before"]) == 3 and len(saved["after"]) == 3


def test_eval_rerank_bad_options_fail_before_any_embedding(server: ManagedServer, tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "qwen_sglang", "eval", "--base-url", "http://127.0.0.1:9/v1", "--demo-data"]
    out = subprocess.run([*cmd, "--rerank"], capture_output=True, text=True, timeout=60, check=False, env={"PATH": ""})
    assert out.returncode != 0 and "--rerank-url" in out.stderr
    with EmbeddingClient(base_url="http://127.0.0.1:9/v1") as client:
        with pytest.raises(ConfigurationError, match="rerank top-k must be a positive int"):
            evaluate(load_demo_dataset(), client=client, reranker=RerankClient(base_url="http://127.0.0.1:9/v1"),
                     rerank_top_k=0, show_progress=False)  # fmt: skip
        # an embedding server given as the reranker: refused before the corpus is embedded
        with pytest.raises(ConfigurationError, match="not a reranker"):
            evaluate(load_demo_dataset(), client=client, reranker=RerankClient(base_url=server.base_url),
                     show_progress=False)  # fmt: skip
