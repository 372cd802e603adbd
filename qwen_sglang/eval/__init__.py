"""Choose ``dimensions`` and the query instruction with evidence: retrieval quality on your data.

The corpus is embedded **once**, at the model's full width, into a float32 (or float16) memmap
on disk. Every smaller width is a Matryoshka prefix of those vectors, truncated and re-normalised
exactly as SGLang does for a ``dimensions`` request (checked once against a real server request).
Queries are embedded once per instruction variant. Retrieval is exact (numpy, streamed over the
corpus in bounded chunks), so the numbers measure the embeddings, not an approximate index.

Reported per (instruction, width): nDCG@k, recall@k, MRR@k, storage per million vectors, the
measured latency of one query request at that width and the exact-search time per query.

Python API::

    from qwen_sglang import EmbeddingClient
    from qwen_sglang.eval import evaluate, load_beir

    data = load_beir("scifact/")  # corpus.jsonl, queries.jsonl, qrels/test.tsv
    with EmbeddingClient(base_url="http://127.0.0.1:30000/v1") as client:
        report = evaluate(data, client=client, dimensions=[2560, 1024, 256])
    print(report.table())
    report.write("eval-out/")  # results.json, results.csv

Where each part lives: `loaders` (the data), `metrics` (nDCG, recall, MRR), `search` (exact
top-k over Matryoshka prefixes), `run` (`evaluate`), `report` (`EvalReport`: table, summary, JSON,
CSV). The chart (matplotlib) is drawn by the application, ``qwen-sglang eval``.
"""

from __future__ import annotations

from qwen_sglang.eval.loaders import EvalDataset, load_beir, load_dataset, load_demo_dataset, read_qrels, read_queries
from qwen_sglang.eval.metrics import mrr_at_k, ndcg_at_k, recall_at_k
from qwen_sglang.eval.report import EvalReport, EvalRow
from qwen_sglang.eval.run import DEFAULT_WIDTHS, Instruction, StorageProbe, evaluate, parse_widths

__all__ = [
    "DEFAULT_WIDTHS",
    "EvalDataset",
    "EvalReport",
    "EvalRow",
    "Instruction",
    "StorageProbe",
    "evaluate",
    "load_beir",
    "load_dataset",
    "load_demo_dataset",
    "mrr_at_k",
    "ndcg_at_k",
    "parse_widths",
    "read_qrels",
    "read_queries",
    "recall_at_k",
]
