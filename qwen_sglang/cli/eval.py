"""``qwen-sglang eval``: retrieval quality per dimensions and instruction on your data."""

from __future__ import annotations

import argparse
from typing import Any

from qwen_sglang.cli.common import add_client_args, client_settings

__all__ = ["add_parser", "run"]


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


def run(args: argparse.Namespace) -> int:
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
            tolerance=args.tolerance,
            show_progress=not args.no_progress,
        )
    print(report.summary())
    for path in report.write(args.out, plot=not args.no_plot):
        print(f"wrote {path}")
    return 0
