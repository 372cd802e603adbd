"""``qwen-sglang eval``: retrieval quality per dimensions and instruction on your data."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qwen_sglang.cli.common import UsageError, add_client_args, add_request_shape_args, client_settings
from qwen_sglang.errors import ConfigurationError

if TYPE_CHECKING:
    from qwen_sglang.eval import EvalReport, StorageProbe
    from qwen_sglang.rerank import RerankClient

__all__ = ["add_parser", "plot_quality", "run"]

logger = logging.getLogger("qwen_sglang.cli")


def add_parser(sub: Any) -> None:
    """Declare the command and its options on the subcommand table ``sub``."""
    v = sub.add_parser(
        "eval",
        help="retrieval quality per dimensions and instruction on your data (nDCG, recall, MRR, storage, latency)",
        description="Embed the corpus once at full width, derive every smaller width as a Matryoshka "
        "prefix, embed the queries with each instruction variant, and score exact retrieval. Prints a "
        "table and writes results.json, results.csv and quality.png to --out.",
    )
    v.set_defaults(handler=run)
    add_client_args(v)
    add_request_shape_args(v)
    src = v.add_mutually_exclusive_group(required=True)
    src.add_argument("--beir", metavar="DIR", help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv")
    src.add_argument("--queries", metavar="Q.jsonl", help="queries: JSON lines with _id (or id) and text")
    src.add_argument("--demo-data", action="store_true", help="the small English/Chinese set shipped with the package")
    v.add_argument("--corpus", metavar="C.jsonl", help="passages: JSON lines with _id (or id), text, optional title")
    v.add_argument("--qrels", metavar="R.tsv", help="judgements: query-id, corpus-id, score (BEIR TSV or TREC)")
    v.add_argument("--split", default="test", help="qrels split of a BEIR folder (default test)")
    v.add_argument(
        "--dimensions", default=None, help="comma-separated widths (default: native and the usual ones below it)"
    )
    v.add_argument(
        "--instruction",
        action="append",
        default=[],
        help="extra query instruction: a preset name (qa, retrieval, ...) or a task text; repeatable. "
        "'default' and 'none' are always measured",
    )
    v.add_argument("-k", type=int, default=10, help="cut-off for nDCG, recall and MRR (default 10)")
    v.add_argument("--out", default="qwen-sglang-eval", help="folder for results.json/.csv/quality.png")
    v.add_argument("--work-dir", default=None, help="keep the corpus matrix here (default: a temporary folder)")
    v.add_argument("--dtype", choices=["float32", "float16"], default="float32", help="on-disk corpus matrix")
    v.add_argument("--latency-samples", type=int, default=20, help="single-query requests timed per width")
    v.add_argument("--chroma-sample", type=int, default=2000, help="vectors used to measure Chroma's size (0: skip)")
    v.add_argument("--tolerance", type=float, default=0.02, help="relative nDCG loss the recommendation accepts")
    v.add_argument("--no-plot", action="store_true", help="skip quality.png (no matplotlib needed)")
    v.add_argument("--no-progress", action="store_true", help="no progress bar")
    v.add_argument(
        "--rerank",
        action="store_true",
        help="also rerank the embedding top-k with a Qwen3-Reranker server (--rerank-url) and report "
        "nDCG/recall/MRR before and after, with the latency it adds per query",
    )
    v.add_argument("--rerank-url", default=None, help="the reranker server (default: $QWEN_SGLANG_RERANK_BASE_URL)")
    v.add_argument("--rerank-top-k", type=int, default=20, help="candidates reranked per query (default 20)")


def run(args: argparse.Namespace) -> int:
    """The command: load the data, evaluate, print the summary, write the results and the chart."""
    from qwen_sglang.client import EmbeddingClient
    from qwen_sglang.eval import evaluate, load_beir, load_dataset, load_demo_dataset, parse_widths

    if args.queries is not None:
        if not (args.corpus and args.qrels):
            raise ValueError("--queries needs --corpus and --qrels")
        data = load_dataset(args.queries, args.corpus, args.qrels)
    elif args.corpus or args.qrels:
        raise ValueError("--corpus/--qrels go with --queries (a BEIR folder or --demo-data brings its own)")
    else:
        data = load_beir(args.beir, args.split) if args.beir else load_demo_dataset()
    widths = parse_widths(args.dimensions) if args.dimensions else None
    if not args.no_plot:
        _pyplot()  # a missing extra is said before the corpus is embedded
    reranker = _reranker(args)
    with EmbeddingClient(client_settings(args)) as client:  # no --model: the served one
        report = evaluate(
            data,
            client=client,
            dimensions=widths,
            instructions=args.instruction,
            k=args.k,
            dtype=args.dtype,
            work_dir=args.work_dir,
            latency_samples=args.latency_samples,
            chroma_sample=args.chroma_sample,
            measure_storage=_chroma_storage(args.chroma_sample),
            tolerance=args.tolerance,
            show_progress=not args.no_progress,
            reranker=reranker,
            rerank_top_k=args.rerank_top_k,
        )
    print(report.summary())
    written = report.write(args.out)
    if not args.no_plot:
        written.append(plot_quality(report, Path(args.out) / "quality.png"))
    for path in written:
        print(f"wrote {path}")
    return 0


def _reranker(args: argparse.Namespace) -> RerankClient | None:
    """The reranker of ``--rerank``: at ``--rerank-url`` or ``$QWEN_SGLANG_RERANK_BASE_URL``, with
    the key of ``--api-key`` (or the environment's)."""
    from qwen_sglang.rerank import RerankClient

    if not args.rerank:
        if args.rerank_url is not None:
            raise UsageError("eval: --rerank-url goes with --rerank")
        return None
    url = args.rerank_url or os.environ.get("QWEN_SGLANG_RERANK_BASE_URL")
    if not url:
        raise UsageError("eval --rerank needs the reranker server: --rerank-url URL (or QWEN_SGLANG_RERANK_BASE_URL)")
    options = {"api_key": args.api_key} if args.api_key else {}
    return RerankClient(base_url=url, **options)


def _chroma_storage(sample: int) -> StorageProbe | None:
    """Chroma's bytes per vector, where chromadb is installed and a sample is asked for."""
    from qwen_sglang.integrations import chroma

    if not sample:
        return None
    try:
        chroma.chromadb()
    except ConfigurationError:
        logger.info("chromadb is not installed: storage in Chroma is not measured")
        return None
    return chroma.bytes_per_vector


def _pyplot() -> Any:
    """matplotlib's pyplot (headless), or the extra to install."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigurationError(
            'the chart needs matplotlib: pip install "qwen-sglang[eval]" (or --no-plot: tables, JSON and CSV '
            "do not need it)"
        ) from None
    return plt


def plot_quality(report: EvalReport, path: str | os.PathLike[str]) -> Path:
    """Quality vs width per instruction (log-scaled x), the recommended point marked, as a PNG."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=120)
    for label in report.instructions:
        rows = sorted((r for r in report.rows if r.instruction == label), key=lambda r: r.dimensions)
        ax.plot([r.dimensions for r in rows], [r.ndcg for r in rows], marker="o", label=f"instruction: {label}")
    rec = report.recommended()
    ax.scatter([rec.dimensions], [rec.ndcg], s=220, facecolors="none", edgecolors="crimson", linewidths=2)
    ax.annotate(
        f"recommended: {rec.dimensions} dims\n{rec.float32_mb_per_million:.0f} MB / 1M vectors",
        (rec.dimensions, rec.ndcg),
        textcoords="offset points",
        xytext=(10, -34),
        color="crimson",
    )
    ax.set_xscale("log", base=2)
    widths = sorted({r.dimensions for r in report.rows})
    ax.set_xticks(widths, [str(w) for w in widths])
    ax.set_xlabel("dimensions (Matryoshka width)")
    ax.set_ylabel(f"nDCG@{report.k}")
    ax.set_title(f"{report.dataset}: {report.model}")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
