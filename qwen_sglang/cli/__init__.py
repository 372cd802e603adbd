"""The ``qwen-sglang`` command line: serve, embed, doctor, ingest, eval, demo.

Each command lives in its own module (``qwen_sglang.cli.<command>``) that declares its options
(``add_parser``) and its handler; this module assembles the parser and turns errors into exit
codes: 0 done, 1 an error (one line, ``--debug`` for the traceback), 2 a usage error, 130
interrupted, 141 the reader of the output left (``| head``, quietly); commands may return others
(``ingest``: 3 and 4).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Sequence

from qwen_sglang._version import __version__
from qwen_sglang.cli import demo, doctor, embed, eval, ingest, rerank, serve
from qwen_sglang.cli.common import UsageError
from qwen_sglang.errors import QwenSGLangError

__all__ = ["main"]

#: The commands, in the order ``--help`` lists them.
COMMANDS = (serve, embed, rerank, doctor, ingest, eval, demo)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qwen-sglang",
        description="Qwen3-Embedding on SGLang: serve, embed, rerank, diagnose, ingest.",
    )
    parser.add_argument("--version", action="version", version=f"qwen-sglang {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``qwen-sglang`` console script."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO if args.command == "serve" else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.DEBUG if args.debug else logging.WARNING)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        code: int = args.handler(args)
        return code
    except UsageError as exc:
        parser.error(str(exc))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return _reader_left()
    except (QwenSGLangError, OSError, ValueError) as exc:
        if args.debug:
            traceback.print_exc()
        else:
            first = str(exc).strip().splitlines()
            print(f"error: {first[0] if first else type(exc).__name__}", file=sys.stderr)
            rest = "\n".join(first[1:])
            if rest:
                print(rest, file=sys.stderr)
        return 1


def _reader_left() -> int:
    """The reader of stdout left (``| head``): stop quietly with SIGPIPE's status, as Unix tools do.
    Output still buffered goes nowhere (Python would report the failed flush at exit)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 141  # 128 + SIGPIPE (13), what a shell reports for a tool killed by it


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
