"""``qwen-sglang ingest``: embed files into a Chroma collection (streaming, resumable, idempotent)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from qwen_sglang.cli.common import (
    DeprecatedAlias,
    add_client_args,
    add_request_shape_args,
    client_settings,
    sigterm_as_interrupt,
)

if TYPE_CHECKING:
    from qwen_sglang.ingest import IngestReport

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> None:
    """Declare the command and its options on the subcommand table ``sub``."""
    i = sub.add_parser(
        "ingest",
        help="embed files into a Chroma collection (streaming, resumable, idempotent)",
        description="Read .txt/.md/.markdown/.rst files and .jsonl/.ndjson records ({id, text, metadata}), "
        "directories recursively; chunk, embed and write them to an embedded Chroma collection. A rerun skips "
        "what is stored; for every file read, the collection then holds exactly what the file produces now. "
        "Bad inputs are reported with file and line. Exit status: 0 done, 1 stopped by an error, 3 done with "
        "problems reported, 4 nothing to ingest, 130 interrupted (rerun the same command to resume).",
    )
    i.set_defaults(handler=run)
    add_client_args(i)
    i.add_argument("paths", nargs="+", help="files or directories")
    i.add_argument("--collection", required=True, help="Chroma collection name")
    i.add_argument("--persist-dir", required=True, help="Chroma directory")
    i.add_argument("--dimensions", type=int, default=None, help="Matryoshka output width")
    i.add_argument("--chunk-chars", type=int, default=2000, help="largest chunk, in characters (default 2000)")
    i.add_argument(
        "--encoding",
        default="utf-8",
        help="file encoding: a codec, a comma-separated list tried in order per file (e.g. utf-8,gb18030), "
        "or auto (detection, needs charset-normalizer) (default utf-8)",
    )
    i.add_argument(
        "--chunks-per-write",
        type=int,
        default=256,
        help="chunks looked up, embedded and written together (default 256)",
    )
    i.add_argument("--batch", type=int, dest="chunks_per_write", action=DeprecatedAlias, new="--chunks-per-write")
    add_request_shape_args(i)
    i.add_argument(
        "--on-error",
        choices=["report", "fail"],
        default="report",
        help="bad inputs: report and skip them (default), or stop the run",
    )
    i.add_argument(
        "--allow-problems", action="store_true", help="exit 0 when problems were reported (not when nothing was read)"
    )
    i.add_argument(
        "--prune", action="store_true", help="also delete the chunks of files under PATHS that no longer exist"
    )
    i.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from qwen_sglang.client import EmbeddingClient
    from qwen_sglang.errors import APIError
    from qwen_sglang.ingest import IngestReport, ingest
    from qwen_sglang.integrations.chroma import open_collection

    settings = client_settings(args, dimensions=args.dimensions)
    report = IngestReport()
    try:
        with sigterm_as_interrupt(), EmbeddingClient(settings) as client:
            ingest(
                args.paths,
                client=client,
                store=open_collection(args.persist_dir, args.collection),
                max_chars=args.chunk_chars,
                chunks_per_write=args.chunks_per_write,
                encoding=args.encoding,
                on_error=args.on_error,
                prune=args.prune,
                show_progress=not args.no_progress,
                report=report,
            )
    except BaseException as exc:
        if report.units or report.files:
            _print_problems(report)
            print(f"stopped: {report.summary()}", file=sys.stderr)
            interrupted = isinstance(exc, KeyboardInterrupt | APIError)
            step = "rerun the same command to resume" if interrupted else "fix the cause below, then rerun"
            print(f"{step}: what is stored is skipped", file=sys.stderr)
        raise
    _print_problems(report)
    print(report.summary())
    if not report.units:
        print("error: nothing to ingest (no readable document in the paths given)", file=sys.stderr)
        return 4
    if report.problems and not args.allow_problems:
        print(f"{len(report.problems)} problems (listed above): exit status 3 (--allow-problems: 0)", file=sys.stderr)
        return 3
    return 0


def _print_problems(report: IngestReport) -> None:
    for problem in report.problems:
        print(problem, file=sys.stderr)
