"""What `qwen_sglang.eval.evaluate` measured: rows per (instruction, width), the best and the
recommended setting, rendered as a table, a summary, JSON and CSV (the chart is the application's:
``qwen-sglang eval`` draws it with matplotlib)."""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import asdict, astuple, dataclass, field, fields
from pathlib import Path
from typing import Any

from qwen_sglang.eval.rerank import RerankScores

__all__ = ["EvalReport", "EvalRow"]


@dataclass
class EvalRow:
    """Scores and costs of one (instruction, width) setting."""

    instruction: str
    dimensions: int
    ndcg: float
    recall: float
    mrr: float
    float32_mb_per_million: float
    float16_mb_per_million: float
    chroma_mb_per_million: float | None
    query_ms_p50: float
    query_ms_p95: float
    search_ms_per_query: float


@dataclass
class EvalReport:
    """What `evaluate` measured. ``rows`` holds one `EvalRow` per setting."""

    rows: list[EvalRow]
    k: int
    dataset: str
    model: str
    base_url: str
    native_dim: int
    n_corpus: int
    n_queries: int
    n_scored_queries: int
    instructions: dict[str, str | None]
    corpus_embed_s: float
    corpus_tokens: int
    matryoshka_check: dict[str, Any] = field(default_factory=dict)
    chroma_sample: int | None = None
    tolerance: float = 0.02
    notes: list[str] = field(default_factory=list)
    """What was left out and why (widths above the native one, a default equal to ``none``)."""
    rerank: RerankScores | None = None
    """Scores before and after a reranker reordered the embedding top-k (``evaluate(reranker=...)``)."""

    def best(self) -> EvalRow:
        """The setting with the highest nDCG@k."""
        return max(self.rows, key=lambda r: (r.ndcg, r.dimensions))

    def recommended(self) -> EvalRow:
        """The smallest width, with the best instruction, whose nDCG@k is within ``tolerance``
        (relative) of the best setting."""
        best = self.best()
        floor = best.ndcg * (1.0 - self.tolerance)
        good = [r for r in self.rows if r.instruction == best.instruction and r.ndcg >= floor]
        return min(good, key=lambda r: r.dimensions)

    # ---------------------------------------------------------------- rendering
    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["best"] = asdict(self.best())
        data["recommended"] = asdict(self.recommended())
        return data

    def table(self) -> str:
        """A plain-text table, best instruction first, widths descending."""
        k = self.k
        head = (
            f"{'instruction':<14} {'dims':>5} {f'nDCG@{k}':>8} {f'R@{k}':>7} {f'MRR@{k}':>7} "
            f"{'f32 MB/1M':>10} {'f16 MB/1M':>10} {'Chroma MB/1M':>12} {'query ms':>9} {'search ms':>10}"
        )
        lines = [head, "-" * len(head)]
        rec = self.recommended()
        for r in self.rows:
            chroma = f"{r.chroma_mb_per_million:12.0f}" if r.chroma_mb_per_million is not None else f"{'-':>12}"
            mark = "  <- recommended" if r is rec else ""
            lines.append(
                f"{r.instruction:<14} {r.dimensions:>5} {r.ndcg:8.4f} {r.recall:7.4f} {r.mrr:7.4f} "
                f"{r.float32_mb_per_million:10.0f} {r.float16_mb_per_million:10.0f} {chroma} "
                f"{r.query_ms_p50:9.1f} {r.search_ms_per_query:10.3f}{mark}"
            )
        return "\n".join(lines)

    def summary(self) -> str:
        """Header, table and the recommendation, as the CLI prints them."""
        best, rec = self.best(), self.recommended()
        check = self.matryoshka_check
        lines = [
            f"{self.dataset}: {self.n_corpus} passages, {self.n_queries} queries ({self.n_scored_queries} with "
            f"judgements), model {self.model} ({self.native_dim}-d) at {self.base_url}",
            f"corpus embedded once at {self.native_dim} dims in {self.corpus_embed_s:.1f} s "
            f"({self.n_corpus / max(self.corpus_embed_s, 1e-9):.0f} passages/s); smaller widths are Matryoshka "
            "prefixes, re-normalised",
        ]
        if check:
            where = "the server" if check["server_side"] else "the client (this server ignores `dimensions`)"
            lines.append(
                f"prefix check against a request with dimensions={check['dimensions']} (applied by {where}): "
                f"min cosine {check['min_cosine']:.6f} over {check['n']} passages"
            )
        if self.chroma_sample:
            lines.append(
                f"Chroma MB/1M: on-disk size of a scratch collection of {self.chroma_sample} vectors, per vector "
                "(small samples overstate it: fixed costs are spread over few vectors)"
            )
        lines.append(
            "query ms: one query request at that width (p50); search ms: exact numpy search per query, batched"
        )
        lines += [f"note: {note}" for note in self.notes]
        lines += ["", self.table(), ""]
        lines.append(
            f"best: {best.instruction!r} at {best.dimensions} dims, nDCG@{self.k} {best.ndcg:.4f}. "
            f"recommended: {rec.dimensions} dims (nDCG@{self.k} {rec.ndcg:.4f}, within {self.tolerance:.0%} of "
            f"the best, {rec.float32_mb_per_million:.0f} MB per million vectors in float32)"
        )
        if check and check["min_cosine"] < 0.99:
            lines.append(
                "WARNING: the server's truncated vectors differ from the prefixes; scores at smaller widths "
                "may not match what this server returns"
            )
        if self.rerank is not None:
            lines += ["", *self.rerank.summary_lines()]
        return "\n".join(lines)

    def to_csv(self) -> str:
        """One header line (the `EvalRow` fields), then one line per row."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([f.name for f in fields(EvalRow)])
        writer.writerows(astuple(r) for r in self.rows)
        return out.getvalue()

    def write(self, folder: str | os.PathLike[str]) -> list[Path]:
        """Write ``results.json`` and ``results.csv`` into ``folder`` (created); return their paths."""
        root = Path(folder)
        root.mkdir(parents=True, exist_ok=True)
        written = [root / "results.json", root / "results.csv"]
        written[0].write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        written[1].write_text(self.to_csv(), encoding="utf-8")
        return written
