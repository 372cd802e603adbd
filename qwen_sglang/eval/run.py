"""`evaluate`: embed the corpus once at full width into an on-disk matrix, derive every smaller
width as a Matryoshka prefix (checked once against a server request), embed the queries per
instruction variant, score exact retrieval, time one query request per width."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from qwen_sglang._progress import progress_bar
from qwen_sglang.client import EmbeddingClient
from qwen_sglang.errors import ConfigurationError, InvalidInputError
from qwen_sglang.eval.loaders import EvalDataset
from qwen_sglang.eval.metrics import mrr_at_k, ndcg_at_k, recall_at_k
from qwen_sglang.eval.report import EvalReport, EvalRow
from qwen_sglang.eval.rerank import check_top_k, rerank_stage
from qwen_sglang.eval.search import F32, exact_search, prefix_unit
from qwen_sglang.instructions import TASKS, query_prompt

if TYPE_CHECKING:
    from qwen_sglang.rerank import RerankClient

__all__ = ["DEFAULT_WIDTHS", "Instruction", "StorageProbe", "evaluate", "parse_widths"]

logger = logging.getLogger("qwen_sglang.eval")

#: Widths tried by default (those below the native width and inside the model's range).
DEFAULT_WIDTHS = (4096, 2560, 2048, 1024, 768, 512, 384, 256, 128, 64, 32)

#: Measures a store's on-disk bytes per vector for a sample of vectors (e.g.
#: `qwen_sglang.integrations.chroma.bytes_per_vector`).
StorageProbe = Callable[[F32], float]


@dataclass(frozen=True)
class Instruction:
    """A query-instruction variant: ``prompt`` is what queries get before their text
    (``Instruct: {task}\\nQuery:`` for a Qwen3 task), ``None`` for "no instruction"."""

    label: str
    prompt: str | None

    @classmethod
    def parse(cls, value: str, default_prompt: str | None) -> Instruction:
        """``"none"``, ``"default"`` (the client's own, ``default_prompt``), a preset name
        (``"qa"``) or a free-text task."""
        if value == "none":
            return cls("none", None)
        if value == "default":
            return cls("default", default_prompt)
        if value in TASKS:
            return cls(value, query_prompt(TASKS[value]))
        return cls(value if len(value) <= 24 else value[:21] + "...", query_prompt(value))

    def apply(self, texts: Sequence[str]) -> list[str]:
        """The queries as sent (embedded as documents, so the client adds nothing)."""
        return [self.prompt + t for t in texts] if self.prompt else list(texts)


def _widths(requested: Sequence[int] | None, native: int, min_dim: int) -> tuple[list[int], list[int]]:
    """The widths to score, widest first, and those left out for being wider than ``native``."""
    if requested is None:
        return sorted({native} | {w for w in DEFAULT_WIDTHS if min_dim <= w < native}, reverse=True), []
    widths: set[int] = set()
    dropped: set[int] = set()
    for w in requested:
        if isinstance(w, bool) or not isinstance(w, int) or w < 1:
            raise ConfigurationError(f"dimensions must be positive ints, got {w!r}")
        (dropped if w > native else widths).add(w)
    if not widths:
        listed = ", ".join(map(str, sorted(dropped, reverse=True)))
        raise ConfigurationError(
            f"dimensions {listed}: all wider than the model's native width {native} "
            f"(its Matryoshka range is {min_dim}..{native})"
        )
    return sorted(widths, reverse=True), sorted(dropped, reverse=True)


def _progress(total: int, show: bool, desc: str) -> Any:
    return progress_bar(total=total, unit="passage", desc=desc) if show else None


def _embed_corpus(
    data: EvalDataset,
    client: EmbeddingClient,
    folder: Path,
    dtype: str,
    batch_texts: int,
    show_progress: bool,
) -> tuple[np.memmap[Any, Any], list[str], list[str], float, int]:
    """Stream the corpus through the client into an on-disk matrix; return it, the ids, the
    first passages (for the prefix check), the seconds spent and the prompt tokens."""
    n = sum(1 for _ in data.corpus())
    if n == 0:
        raise InvalidInputError("the corpus is empty")
    ids: list[str] = []
    head: list[str] = []
    matrix: np.memmap[Any, Any] | None = None
    bar = _progress(n, show_progress, "embedding corpus")
    tokens_before = client.prompt_tokens
    start = time.perf_counter()
    batch_ids: list[str] = []
    batch_texts_: list[str] = []

    def flush() -> None:
        nonlocal matrix
        result = client.embed(batch_texts_, kind="document")
        vectors = result.vectors
        if matrix is None:
            matrix = np.memmap(folder / "corpus.mat", dtype=dtype, mode="w+", shape=(n, vectors.shape[1]))
        matrix[len(ids) : len(ids) + len(batch_ids)] = vectors
        ids.extend(batch_ids)
        if bar is not None:
            bar.update(len(batch_ids))
        batch_ids.clear()
        batch_texts_.clear()

    try:
        seen: set[str] = set()
        for rid, text in data.corpus():
            if rid in seen:
                raise InvalidInputError(f"corpus id {rid!r} appears twice")
            seen.add(rid)
            if len(head) < 8:
                head.append(text)
            batch_ids.append(rid)
            batch_texts_.append(text)
            if len(batch_ids) >= batch_texts:
                flush()
        if batch_ids:
            flush()
    finally:
        if bar is not None:
            bar.close()
    assert matrix is not None
    matrix.flush()
    return matrix, ids, head, time.perf_counter() - start, client.prompt_tokens - tokens_before


def evaluate(
    data: EvalDataset,
    *,
    client: EmbeddingClient,
    dimensions: Sequence[int] | None = None,
    instructions: Sequence[str] | None = None,
    k: int = 10,
    dtype: str = "float32",
    work_dir: str | os.PathLike[str] | None = None,
    batch_texts: int = 1024,
    latency_samples: int = 20,
    chroma_sample: int | None = 2000,
    measure_storage: StorageProbe | None = None,
    tolerance: float = 0.02,
    show_progress: bool = True,
    reranker: RerankClient | None = None,
    rerank_top_k: int = 20,
) -> EvalReport:
    """Score retrieval on ``data`` for every width in ``dimensions`` and every instruction.

    Args:
        data: from `load_beir`, `load_dataset` or `load_demo_dataset`.
        client: an `EmbeddingClient` for the server to evaluate, created **without**
            ``dimensions`` (the corpus is embedded at full width once).
        dimensions: widths to score (default: the native width and every usual width below it
            in the model's Matryoshka range); widths above the native one are left out, with a
            note in `EvalReport.notes`.
        instructions: ``"none"``, ``"default"`` (what the client gives queries for this model:
            `qwen_sglang.EmbeddingClient.query_prompt`), preset names (`qwen_sglang.TASKS`) or
            free-text tasks; ``"none"`` and ``"default"`` are always included (once, when the
            default is no instruction).
        k: cut-off of nDCG, recall and MRR.
        dtype: ``"float32"`` or ``"float16"`` for the on-disk corpus matrix.
        work_dir: where the matrix is written (default: a temporary folder, removed after).
        batch_texts: passages handed to the client per call (it batches and pipelines them).
        latency_samples: single-query requests timed per width.
        chroma_sample: vectors handed to ``measure_storage`` per width (``None`` or 0 to skip).
        measure_storage: on-disk bytes per vector of a store holding the sample, e.g.
            `qwen_sglang.integrations.chroma.bytes_per_vector` (what ``qwen-sglang eval`` uses
            when chromadb is installed); ``None``: storage in a store is not measured.
        tolerance: relative nDCG loss accepted by `EvalReport.recommended`.
        show_progress: tqdm bars while embedding.
        reranker: a `qwen_sglang.RerankClient`: the first instruction variant's ranking at the
            widest width is reranked, its first ``rerank_top_k`` candidates per query, and
            `EvalReport.rerank` holds nDCG/recall/MRR@k before and after, with the latency added
            per query.
        rerank_top_k: candidates reranked per query.
    """
    _check_options(client, dtype, k, tolerance, rerank_top_k)
    if reranker is not None:
        reranker.discover()  # an embedding server given as the reranker fails before any work
    queries = data.scored_queries()
    if not queries:
        raise InvalidInputError("no query has a relevant document in the qrels: nothing to score")
    qids = list(queries)
    qtexts = [queries[q] for q in qids]

    client.discover()  # the served model and its default query prompt, before any work
    variants, notes = _variants(client, instructions)
    with _work_folder(work_dir) as folder:
        # one small request learns the native width, so bad widths fail before the corpus is embedded
        native = int(client.embed(qtexts[:1], kind="document").vectors.shape[1])
        widths = _scored_widths(client, dimensions, native, notes)
        matrix, ids, head, embed_s, tokens = _embed_corpus(data, client, folder, dtype, batch_texts, show_progress)
        qvecs = {label: client.embed(v.apply(qtexts), kind="document").vectors for label, v in variants.items()}
        check = _prefix_check(client, matrix, head, widths, native)
        latencies = _query_latency(client, next(iter(variants.values())).apply(qtexts), widths, latency_samples)
        depth = max(k, rerank_top_k) if reranker is not None else k  # the metrics read the first k
        ranked, search_s = exact_search(matrix, qvecs, widths, depth)
        storage = _storage(matrix, widths, chroma_sample, measure_storage)
        del matrix
        scores = {
            key: _scores([[ids[i] for i in row] for row in idx], [data.qrels[q] for q in qids], k)
            for key, idx in ranked.items()
        }
        label = next(iter(variants))  # the client's default instruction (or none)
        rerank = (
            None
            if reranker is None
            else rerank_stage(
                reranker,
                data,
                qids,
                ranked[(label, widths[0])].tolist(),
                ids,
                k=k,
                top_k=rerank_top_k,
                instruction=label,
            )
        )
        rows = [
            EvalRow(
                label,
                w,
                *scores[(label, w)],
                float32_mb_per_million=w * 4.0,
                float16_mb_per_million=w * 2.0,
                chroma_mb_per_million=storage[w] if storage else None,
                query_ms_p50=latencies[w][0],
                query_ms_p95=latencies[w][1],
                search_ms_per_query=1000.0 * search_s[w] / (len(qids) * len(variants)),
            )
            for label in variants
            for w in widths
        ]
        return EvalReport(
            rows=rows,
            k=k,
            dataset=data.name,
            model=client.model or "unknown",
            base_url=client.base_url,
            native_dim=native,
            n_corpus=len(ids),
            n_queries=len(data.queries),
            n_scored_queries=len(qids),
            instructions={label: v.prompt for label, v in variants.items()},
            corpus_embed_s=embed_s,
            corpus_tokens=tokens,
            matryoshka_check=check,
            chroma_sample=min(chroma_sample, len(ids)) if storage and chroma_sample else None,
            rerank=rerank,
            tolerance=tolerance,
            notes=notes,
        )


@contextlib.contextmanager
def _work_folder(work_dir: str | os.PathLike[str] | None) -> Iterator[Path]:
    """``work_dir`` (created), or a temporary folder removed after."""
    if work_dir is not None:
        folder = Path(work_dir)
        folder.mkdir(parents=True, exist_ok=True)
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix="qwen-sglang-eval-") as tmp:
        yield Path(tmp)


def _check_options(client: EmbeddingClient, dtype: str, k: int, tolerance: float, rerank_top_k: int) -> None:
    """`evaluate`'s settings, checked before any request."""
    check_top_k(rerank_top_k)
    if client.settings.dimensions is not None:
        raise ConfigurationError(
            "evaluate() embeds the corpus once at full width and derives every smaller width from it: "
            "pass a client created without `dimensions`"
        )
    if dtype not in ("float32", "float16"):
        raise ConfigurationError(f"dtype must be 'float32' or 'float16', not {dtype!r}")
    if k < 1:
        raise ConfigurationError(f"k must be at least 1, got {k}")
    if not 0 <= tolerance < 1:
        raise ConfigurationError(f"tolerance must be in [0, 1), got {tolerance}")


def _scored_widths(
    client: EmbeddingClient, requested: Sequence[int] | None, native: int, notes: list[str]
) -> list[int]:
    """`_widths` for the served model; those left out get a note."""
    min_dim = client.preset.min_dim if client.preset else 1
    widths, dropped = _widths(requested, native, min_dim)
    if dropped:
        notes.append(
            f"left out dimensions {', '.join(map(str, dropped))}: wider than the {native}-d vectors of "
            f"{client.model} (its Matryoshka range is {min_dim}..{native})"
        )
        logger.warning("%s", notes[-1])
    return widths


def _scores(lists: list[list[str]], rels: list[dict[str, int]], k: int) -> tuple[float, float, float]:
    """Mean nDCG@k, recall@k and MRR@k of ranked id lists against their judgements."""
    pairs = list(zip(lists, rels, strict=True))
    return (
        statistics.fmean(ndcg_at_k(r, rel, k) for r, rel in pairs),
        statistics.fmean(recall_at_k(r, rel, k) for r, rel in pairs),
        statistics.fmean(mrr_at_k(r, rel, k) for r, rel in pairs),
    )


def _prefix_check(
    client: EmbeddingClient, matrix: np.memmap[Any, Any], head: list[str], widths: list[int], native: int
) -> dict[str, Any]:
    """Compare re-normalised prefixes with what a ``dimensions`` request returns."""
    smaller = [w for w in widths if w < native]
    if not smaller:
        return {}
    width = smaller[-1]
    served = client.embed(head, kind="document", dimensions=width).vectors
    ours = prefix_unit(np.asarray(matrix[: len(head), :width], dtype=np.float32))
    cosines = np.sum(served * ours, axis=1)
    return {
        "dimensions": width,
        "n": len(head),
        "min_cosine": float(cosines.min()),
        "max_abs_diff": float(np.abs(served - ours).max()),
        "server_side": not client.client_side_dimensions,
    }


def _variants(client: EmbeddingClient, instructions: Sequence[str] | None) -> tuple[dict[str, Instruction], list[str]]:
    """The query variants to score: ``default`` (what the client does for this model), ``none``
    and the requested ones. A ``default`` of no instruction is ``none``: measured once."""
    default_prompt = client.query_prompt
    wanted = ["default", "none", *(instructions or [])]
    notes = []
    if default_prompt is None:
        wanted.remove("default")
        notes.append(
            f"the client's default for {client.model} is no query instruction (the 'none' rows); add "
            "--instruction retrieval (or another task) to measure Qwen3's"
        )
    variants: dict[str, Instruction] = {}
    for value in wanted:
        variant = Instruction.parse(value, default_prompt)
        variants.setdefault(variant.label, variant)
    return variants, notes


def _query_latency(
    client: EmbeddingClient, texts: list[str], widths: list[int], samples: int
) -> dict[int, tuple[float, float]]:
    """p50 / p95 milliseconds of one single-query request per width (round-robin over widths
    so a warming server does not favour any of them); ``texts`` are the queries as sent."""
    times: dict[int, list[float]] = {w: [] for w in widths}
    if samples > 0:
        client.embed([texts[0]], kind="document")  # warm the connection
    for i in range(samples):
        text = texts[i % len(texts)]
        for w in widths:
            start = time.perf_counter()
            client.embed([text], kind="document", dimensions=w)
            times[w].append(1000.0 * (time.perf_counter() - start))
    out: dict[int, tuple[float, float]] = {}
    for w, ts in times.items():
        if not ts:
            out[w] = (math.nan, math.nan)
            continue
        ts.sort()
        out[w] = (statistics.median(ts), ts[min(len(ts) - 1, math.ceil(0.95 * len(ts)) - 1)])
    return out


def _storage(
    matrix: np.memmap[Any, Any], widths: list[int], sample: int | None, measure: StorageProbe | None
) -> dict[int, float] | None:
    """Bytes per vector (= MB per million vectors) of a store holding ``sample`` prefixes, per width."""
    if not sample or measure is None:
        return None
    n = min(sample, int(matrix.shape[0]))
    return {w: measure(prefix_unit(np.asarray(matrix[:n, :w], dtype=np.float32))) for w in widths}


def parse_widths(value: str) -> list[int]:
    """``"2560,1024,256"`` -> ``[2560, 1024, 256]`` (for the command line)."""
    try:
        return [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise ConfigurationError(f"--dimensions takes comma-separated integers, not {value!r}") from None
