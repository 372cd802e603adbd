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
    report.write("eval-out/")  # results.json, results.csv, quality.png
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from qwen_sglang._progress import progress_bar
from qwen_sglang._vectors import normalize_rows
from qwen_sglang.client import EmbeddingClient
from qwen_sglang.errors import ConfigurationError, InvalidInputError
from qwen_sglang.instructions import TASKS, query_prompt

__all__ = [
    "EvalDataset",
    "EvalReport",
    "EvalRow",
    "Instruction",
    "evaluate",
    "load_beir",
    "load_dataset",
    "load_demo_dataset",
    "mrr_at_k",
    "ndcg_at_k",
    "read_qrels",
    "read_queries",
    "recall_at_k",
]

logger = logging.getLogger(__name__)

#: Widths tried by default (those below the native width and inside the model's range).
DEFAULT_WIDTHS = (4096, 2560, 2048, 1024, 768, 512, 384, 256, 128, 64, 32)

F32 = npt.NDArray[np.float32]


# ==================================================================== metrics (pure functions)
def ndcg_at_k(ranked: Sequence[str], relevance: Mapping[str, int], k: int = 10) -> float:
    """nDCG@k with linear gains (``rel / log2(rank + 1)``), as BEIR / pytrec_eval compute it."""
    dcg = sum(relevance.get(doc, 0) / math.log2(rank + 2) for rank, doc in enumerate(ranked[:k]))
    ideal = sorted((r for r in relevance.values() if r > 0), reverse=True)[:k]
    idcg = sum(r / math.log2(rank + 2) for rank, r in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at_k(ranked: Sequence[str], relevance: Mapping[str, int], k: int = 10) -> float:
    """Share of the relevant documents (``rel > 0``) found in the first ``k``."""
    relevant = {doc for doc, r in relevance.items() if r > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(ranked[:k])) / len(relevant)


def mrr_at_k(ranked: Sequence[str], relevance: Mapping[str, int], k: int = 10) -> float:
    """Reciprocal rank of the first relevant document within the first ``k`` (0 if none)."""
    for rank, doc in enumerate(ranked[:k]):
        if relevance.get(doc, 0) > 0:
            return 1.0 / (rank + 1)
    return 0.0


# ==================================================================== data
def _open_text(path: Path) -> Iterator[tuple[int, str]]:
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if line.strip():
                yield number, line


def _record(path: Path, number: int, line: str) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
    if not isinstance(record, dict):
        raise InvalidInputError(f"{path}:{number}: expected a JSON object")
    return record


def _id_and_text(path: Path, number: int, record: dict[str, Any]) -> tuple[str, str]:
    rid = record.get("_id", record.get("id"))
    text = record.get("text")
    if rid is None or not isinstance(text, str):
        raise InvalidInputError(f'{path}:{number}: a record needs "_id" (or "id") and a string "text"')
    title = record.get("title")
    if isinstance(title, str) and title.strip():
        text = f"{title} {text}"  # BEIR's convention: title, a space, the text
    if not text.strip():
        raise InvalidInputError(f"{path}:{number}: empty text for id {rid!r}")
    return str(rid), text


def read_queries(path: str | os.PathLike[str]) -> dict[str, str]:
    """Queries from JSON lines with ``_id`` (or ``id``) and ``text``."""
    p = Path(path)
    return dict(_id_and_text(p, n, _record(p, n, line)) for n, line in _open_text(p))


def read_qrels(path: str | os.PathLike[str]) -> dict[str, dict[str, int]]:
    """Relevance judgements: BEIR TSV (``query-id corpus-id score``, header optional) or TREC
    (``qid 0 docid rel``), tab- or space-separated."""
    p = Path(path)
    qrels: dict[str, dict[str, int]] = {}
    for number, line in _open_text(p):
        parts = line.split()
        if len(parts) == 4:
            qid, _, doc, score = parts
        elif len(parts) == 3:
            qid, doc, score = parts
        else:
            raise InvalidInputError(f"{p}:{number}: expected 3 (BEIR) or 4 (TREC) columns, got {len(parts)}")
        try:
            rel = int(float(score))
        except ValueError:
            if number == 1:
                continue  # the header line
            raise InvalidInputError(f"{p}:{number}: relevance {score!r} is not a number") from None
        qrels.setdefault(qid, {})[doc] = rel
    if not qrels:
        raise InvalidInputError(f"{p}: no relevance judgements")
    return qrels


@dataclass
class EvalDataset:
    """Queries, relevance judgements and a corpus that is read lazily (streamed, never held)."""

    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    corpus: Callable[[], Iterator[tuple[str, str]]]
    name: str = "dataset"

    def scored_queries(self) -> dict[str, str]:
        """Queries with at least one relevant document (the others cannot be scored)."""
        return {qid: text for qid, text in self.queries.items() if any(r > 0 for r in self.qrels.get(qid, {}).values())}


def _corpus_reader(path: Path) -> Callable[[], Iterator[tuple[str, str]]]:
    def read() -> Iterator[tuple[str, str]]:
        for number, line in _open_text(path):
            yield _id_and_text(path, number, _record(path, number, line))

    return read


def load_dataset(
    queries: str | os.PathLike[str], corpus: str | os.PathLike[str], qrels: str | os.PathLike[str]
) -> EvalDataset:
    """A dataset from three files: queries and corpus as JSON lines, qrels as TSV."""
    for label, path in (("queries", queries), ("corpus", corpus), ("qrels", qrels)):
        if not Path(path).is_file():
            raise InvalidInputError(f"{label} file not found: {path}")
    return EvalDataset(read_queries(queries), read_qrels(qrels), _corpus_reader(Path(corpus)), Path(corpus).stem)


def load_beir(folder: str | os.PathLike[str], split: str = "test") -> EvalDataset:
    """A BEIR-style folder: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/{split}.tsv``."""
    root = Path(folder)
    data = load_dataset(root / "queries.jsonl", root / "corpus.jsonl", root / "qrels" / f"{split}.tsv")
    data.name = root.name
    return data


def load_demo_dataset() -> EvalDataset:
    """The small evaluation set shipped with the package (CC0): the demo corpus, English and
    Chinese questions, one relevant passage each."""
    base = resources.files("qwen_sglang").joinpath("data")
    with resources.as_file(base) as folder:
        data = load_dataset(folder / "eval_queries.jsonl", folder / "demo_corpus.jsonl", folder / "eval_qrels.tsv")
    data.name = "qwen-sglang-demo"
    return data


# ==================================================================== settings and results
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
        return "\n".join(lines)

    def to_csv(self) -> str:
        out = io.StringIO()
        names = list(EvalRow.__dataclass_fields__)
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(names)
        for r in self.rows:
            writer.writerow([getattr(r, n) for n in names])
        return out.getvalue()

    def plot(self, path: str | os.PathLike[str]) -> Path:
        """Quality vs width per instruction (log-scaled x), the recommended point marked. Needs
        matplotlib (``pip install 'qwen-sglang[eval]'``)."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError as exc:
            raise ConfigurationError(
                "the chart needs matplotlib: pip install 'qwen-sglang[eval]' (tables, JSON and CSV do not)"
            ) from exc
        fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=120)
        for label in self.instructions:
            rows = sorted((r for r in self.rows if r.instruction == label), key=lambda r: r.dimensions)
            ax.plot([r.dimensions for r in rows], [r.ndcg for r in rows], marker="o", label=f"instruction: {label}")
        rec = self.recommended()
        ax.scatter([rec.dimensions], [rec.ndcg], s=220, facecolors="none", edgecolors="crimson", linewidths=2)
        ax.annotate(
            f"recommended: {rec.dimensions} dims\n{rec.float32_mb_per_million:.0f} MB / 1M vectors",
            (rec.dimensions, rec.ndcg),
            textcoords="offset points",
            xytext=(10, -34),
            color="crimson",
        )
        ax.set_xscale("log", base=2)
        widths = sorted({r.dimensions for r in self.rows})
        ax.set_xticks(widths, [str(w) for w in widths])
        ax.set_xlabel("dimensions (Matryoshka width)")
        ax.set_ylabel(f"nDCG@{self.k}")
        ax.set_title(f"{self.dataset}: {self.model}")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower right")
        fig.tight_layout()
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out)
        plt.close(fig)
        return out

    def write(self, folder: str | os.PathLike[str], *, plot: bool = True) -> list[Path]:
        """Write ``results.json``, ``results.csv`` and (with matplotlib) ``quality.png``."""
        root = Path(folder)
        root.mkdir(parents=True, exist_ok=True)
        written = [root / "results.json", root / "results.csv"]
        written[0].write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        written[1].write_text(self.to_csv(), encoding="utf-8")
        if plot:
            written.append(self.plot(root / "quality.png"))
        return written


# ==================================================================== the evaluation
def _prefix_unit(rows: F32) -> F32:
    """A re-normalised copy (Matryoshka prefixes are views of the corpus matrix)."""
    return normalize_rows(np.array(rows, dtype=np.float32))


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


def _top_k(
    scores: F32, offset: int, best_s: F32, best_i: npt.NDArray[np.int64], k: int
) -> tuple[F32, npt.NDArray[np.int64]]:
    """Merge a chunk's scores into the running top-k (ties go to the lower corpus index)."""
    kk = min(k, scores.shape[1])
    part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk] if kk < scores.shape[1] else np.argsort(-scores, axis=1)
    chunk_s = np.take_along_axis(scores, part, axis=1)
    all_s = np.concatenate([best_s, chunk_s], axis=1)
    all_i = np.concatenate([best_i, part.astype(np.int64) + offset], axis=1)
    order = np.lexsort((all_i, -all_s), axis=1)[:, :k]
    return np.take_along_axis(all_s, order, axis=1), np.take_along_axis(all_i, order, axis=1)


def _chroma_bytes_per_vector(matrix: np.memmap[Any, Any], width: int, sample: int) -> float:
    """Measured on-disk bytes per vector of an embedded Chroma collection holding ``sample``
    vectors at ``width`` (ids and vectors only, no documents)."""
    import chromadb

    def size(path: str) -> int:
        return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)

    vectors = _prefix_unit(np.asarray(matrix[:sample, :width], dtype=np.float32))
    with tempfile.TemporaryDirectory(prefix="qwen-sglang-eval-chroma-") as tmp:
        chroma = chromadb.PersistentClient(path=tmp)
        collection = chroma.create_collection("eval-size", metadata={"hnsw:space": "cosine"})
        empty = size(tmp)
        for a in range(0, sample, 1000):
            collection.add(ids=[str(i) for i in range(a, min(sample, a + 1000))], embeddings=vectors[a : a + 1000])
        collection.count()
        del collection, chroma
        return (size(tmp) - empty) / sample


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
    tolerance: float = 0.02,
    show_progress: bool = True,
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
        chroma_sample: vectors written to a scratch Chroma collection to measure its storage
            per vector (``None`` or 0 to skip; skipped when chromadb is not installed).
        tolerance: relative nDCG loss accepted by `EvalReport.recommended`.
        show_progress: tqdm bars while embedding.
    """
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
    queries = data.scored_queries()
    if not queries:
        raise InvalidInputError("no query has a relevant document in the qrels: nothing to score")
    qids = list(queries)
    qtexts = [queries[q] for q in qids]

    client.discover()  # the served model and its default query prompt, before any work
    variants, notes = _variants(client, instructions)
    owned = work_dir is None
    folder = Path(tempfile.mkdtemp(prefix="qwen-sglang-eval-")) if owned else Path(work_dir)  # type: ignore[arg-type]
    folder.mkdir(parents=True, exist_ok=True)
    try:
        # one small request learns the native width, so bad widths fail before the corpus is embedded
        native = int(client.embed(qtexts[:1], kind="document").vectors.shape[1])
        preset = client.preset
        widths, dropped = _widths(dimensions, native, preset.min_dim if preset else 1)
        if dropped:
            notes.append(
                f"left out dimensions {', '.join(map(str, dropped))}: wider than the {native}-d vectors of "
                f"{client.model} (its Matryoshka range is {preset.min_dim if preset else 1}..{native})"
            )
            logger.warning("%s", notes[-1])
        matrix, ids, head, embed_s, tokens = _embed_corpus(data, client, folder, dtype, batch_texts, show_progress)
        qvecs = {label: client.embed(v.apply(qtexts), kind="document").vectors for label, v in variants.items()}
        check = _prefix_check(client, matrix, head, widths, native)
        latencies = _query_latency(client, next(iter(variants.values())).apply(qtexts), widths, latency_samples)
        ranked, search_s = _search(matrix, qvecs, widths, k)
        chroma = _chroma_sizes(matrix, widths, chroma_sample)
        rows: list[EvalRow] = []
        for label in variants:
            for w in widths:
                lists = [[ids[i] for i in row] for row in ranked[(label, w)]]
                rels = [data.qrels[q] for q in qids]
                rows.append(
                    EvalRow(
                        instruction=label,
                        dimensions=w,
                        ndcg=statistics.fmean(ndcg_at_k(r, rel, k) for r, rel in zip(lists, rels, strict=True)),
                        recall=statistics.fmean(recall_at_k(r, rel, k) for r, rel in zip(lists, rels, strict=True)),
                        mrr=statistics.fmean(mrr_at_k(r, rel, k) for r, rel in zip(lists, rels, strict=True)),
                        float32_mb_per_million=w * 4.0,
                        float16_mb_per_million=w * 2.0,
                        chroma_mb_per_million=chroma[w] if chroma else None,
                        query_ms_p50=latencies[w][0],
                        query_ms_p95=latencies[w][1],
                        search_ms_per_query=1000.0 * search_s[w] / (len(qids) * len(variants)),
                    )
                )
        del matrix
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
            chroma_sample=min(chroma_sample, len(ids)) if chroma and chroma_sample else None,
            tolerance=tolerance,
            notes=notes,
        )
    finally:
        if owned:
            for p in folder.iterdir():
                p.unlink()
            folder.rmdir()


def _prefix_check(
    client: EmbeddingClient, matrix: np.memmap[Any, Any], head: list[str], widths: list[int], native: int
) -> dict[str, Any]:
    """Compare re-normalised prefixes with what a ``dimensions`` request returns."""
    smaller = [w for w in widths if w < native]
    if not smaller:
        return {}
    width = smaller[-1]
    served = client.embed(head, kind="document", dimensions=width).vectors
    ours = _prefix_unit(np.asarray(matrix[: len(head), :width], dtype=np.float32))
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


def _search(
    matrix: np.memmap[Any, Any], qvecs: dict[str, F32], widths: list[int], k: int
) -> tuple[dict[tuple[str, int], npt.NDArray[np.int64]], dict[int, float]]:
    """Exact top-k for every (instruction, width), reading the corpus once in bounded chunks."""
    n, native = matrix.shape
    n_q = next(iter(qvecs.values())).shape[0]
    rows_per_chunk = max(256, min(65536, (64 << 20) // (4 * max(native, n_q))))
    queries = {(label, w): _prefix_unit(np.ascontiguousarray(q[:, :w])) for label, q in qvecs.items() for w in widths}
    best: dict[tuple[str, int], tuple[F32, npt.NDArray[np.int64]]] = {
        key: (np.empty((n_q, 0), np.float32), np.empty((n_q, 0), np.int64)) for key in queries
    }
    seconds = dict.fromkeys(widths, 0.0)
    warm = np.ones((8, 8), np.float32)
    _ = warm @ warm.T  # load the BLAS kernels before anything is timed
    for a in range(0, n, rows_per_chunk):
        chunk = np.asarray(matrix[a : a + rows_per_chunk], dtype=np.float32)
        for w in widths:
            start = time.perf_counter()
            docs = _prefix_unit(np.ascontiguousarray(chunk[:, :w]))
            for label in qvecs:
                scores = queries[(label, w)] @ docs.T
                best[(label, w)] = _top_k(scores, a, *best[(label, w)], k)
            seconds[w] += time.perf_counter() - start
    return {key: idx for key, (_, idx) in best.items()}, seconds


def _chroma_sizes(matrix: np.memmap[Any, Any], widths: list[int], sample: int | None) -> dict[int, float] | None:
    if not sample:
        return None
    try:
        import chromadb  # noqa: F401
    except ImportError:
        logger.info("chromadb is not installed: storage in Chroma is not measured")
        return None
    n = min(sample, int(matrix.shape[0]))
    return {w: _chroma_bytes_per_vector(matrix, w, n) for w in widths}  # bytes/vector == MB per million


def parse_widths(value: str) -> list[int]:
    """``"2560,1024,256"`` -> ``[2560, 1024, 256]`` (for the command line)."""
    try:
        return [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise ConfigurationError(f"--dimensions takes comma-separated integers, not {value!r}") from None
