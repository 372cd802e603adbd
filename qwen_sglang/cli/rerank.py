"""``qwen-sglang rerank``: rank documents (lines of a file or stdin) against a query, JSON lines."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from qwen_sglang.cli.common import add_client_args, add_request_shape_args, client_settings, read_lines

__all__ = ["add_parser", "run"]

#: ``rerank --empty-text`` choices and the settings' values they map to.
_EMPTY_TEXT = {"error": "raise", "zero": "zero", "skip": "skip"}


def add_parser(sub: Any) -> None:
    """Declare the command and its options on the subcommand table ``sub``."""
    r = sub.add_parser(
        "rerank",
        help="rank documents against a query with a Qwen3-Reranker server, write JSON lines",
        description="Score each line of FILE (or stdin) against --query with Qwen3-Reranker and print one "
        'JSON object per document, best first: {"index", "score", "document"} (index: the line, from 0; '
        "score: P(yes) in [0, 1]).",
    )
    r.set_defaults(handler=run)
    add_client_args(r, reranker=True)
    add_request_shape_args(r, items="documents per /v1/score request")
    r.add_argument("file", nargs="?", default="-", help="documents, one per line (default, or -: stdin)")
    r.add_argument("--query", required=True, help="what the documents are ranked against")
    r.add_argument("--instruction", default=None, help="the task instruction (default: Qwen's web-search one)")
    r.add_argument("--top-n", type=_at_least_one, default=None, help="print only the best N (all when fewer)")
    r.add_argument("--no-documents", action="store_true", help="leave the documents' text out of the output")
    r.add_argument(
        "--empty-text",
        choices=sorted(_EMPTY_TEXT),
        default="error",
        help="empty or blank lines: error (default), rank them last with score 0, or skip them",
    )


def _at_least_one(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def run(args: argparse.Namespace) -> int:
    from qwen_sglang.errors import InvalidInputError
    from qwen_sglang.rerank import RerankClient

    if args.file == "-":
        documents = read_lines(sys.stdin)
    else:
        with open(args.file, encoding="utf-8") as fh:
            documents = read_lines(fh)
    top_n = None if args.top_n is None else min(args.top_n, len(documents)) or None  # as `head -n`
    settings = client_settings(args, empty_text=_EMPTY_TEXT[args.empty_text])
    with RerankClient(settings, instruction=args.instruction) as client:
        try:
            results = client.rerank(args.query, documents, top_n=top_n, return_documents=not args.no_documents)
        except InvalidInputError as exc:
            if exc.index is None or documents[exc.index].strip():
                raise
            raise InvalidInputError(
                f"line {exc.index + 1} (document at index {exc.index} is empty or blank): pass --empty-text zero "
                "(ranked last with score 0) or --empty-text skip",
                index=exc.index,
            ) from None
    out = sys.stdout
    for r in results:
        entry: dict[str, Any] = {"index": r.index, "score": r.score}
        if r.document is not None:
            entry["document"] = r.document
        out.write(json.dumps(entry, ensure_ascii=False) + "\n")
    return 0
