"""``qwen-sglang embed``: embed texts from arguments or stdin, write JSON lines."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from qwen_sglang.cli.common import UsageError, add_client_args, add_request_shape_args, client_settings, read_lines

__all__ = ["add_parser", "run"]

#: ``embed --empty-text`` choices and the settings' values they map to.
_EMPTY_TEXT = {"error": "raise", "zero": "zero", "skip": "skip"}


def add_parser(sub: Any) -> None:
    """Declare the command and its options on the subcommand table ``sub``."""
    e = sub.add_parser(
        "embed",
        help="embed texts from arguments or stdin, write JSON lines",
        description="Embed each argument, or each line of stdin, and print one JSON "
        'object per text: {"index", "embedding"}.',
    )
    e.set_defaults(handler=run)
    add_client_args(e)
    add_request_shape_args(e)
    e.add_argument("texts", nargs="*", help="texts (default: read lines from stdin)")
    e.add_argument("--query", action="store_true", help="embed as queries (with the instruction the served model uses)")
    e.add_argument("--task", default=None, help="with --query: the instruction task or a preset name (qa, sts, ...)")
    e.add_argument("--dimensions", type=int, default=None, help="Matryoshka output width")
    e.add_argument(
        "--empty-text",
        choices=sorted(_EMPTY_TEXT),
        default="error",
        help="empty or blank lines: error (default), a zero vector, or skip them (the JSON lines keep each "
        "text's input index, and the skipped ones are listed on stderr)",
    )


def run(args: argparse.Namespace) -> int:
    from qwen_sglang.client import EmbeddingClient
    from qwen_sglang.errors import InvalidInputError

    if args.task is not None and not args.query:
        raise UsageError("embed: --task applies to queries only: add --query (documents get no instruction)")
    texts = list(args.texts) if args.texts else read_lines(sys.stdin)
    settings = client_settings(args, dimensions=args.dimensions, empty_text=_EMPTY_TEXT[args.empty_text])
    with EmbeddingClient(settings) as client:
        try:
            result = client.embed(texts, kind="query" if args.query else "document", task=args.task)
        except InvalidInputError as exc:
            if exc.index is None or texts[exc.index].strip():
                raise
            where = f"argument {exc.index + 1}" if args.texts else f"line {exc.index + 1}"
            raise InvalidInputError(
                f"{where} (index {exc.index}) is empty or blank: pass --empty-text zero (a zero vector) "
                "or --empty-text skip",
                index=exc.index,
            ) from None
    kept = set(result.indices.tolist())
    skipped = [i for i in range(len(texts)) if i not in kept]
    if skipped:
        kind = "argument" if args.texts else "line"
        listed = ", ".join(str(i) for i in skipped)
        print(
            f"skipped {len(skipped)} empty {kind}(s): index {listed} (the JSON lines keep each text's input index)",
            file=sys.stderr,
        )
    out = sys.stdout
    for index, vec in zip(result.indices.tolist(), result.tolist(), strict=True):
        out.write(json.dumps({"index": index, "embedding": vec}) + "\n")
    return 0
