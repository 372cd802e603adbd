"""Fill a Chroma collection with many documents: streaming, resumable, with a progress bar.

    python examples/bulk_ingest.py DATA_DIR_OR_FILES... --persist-dir ./chroma [--base-url URL]

The Python API behind ``qwen-sglang ingest``. Stop it at any time (Ctrl-C, a crash) and run it
again: what is stored is skipped, the rest is embedded, nothing is duplicated. Without
``--base-url`` it starts the demo's managed server.
"""

from __future__ import annotations

import argparse
import contextlib

from qwen_sglang import EmbeddingClient
from qwen_sglang.cli.demo import demo_server
from qwen_sglang.ingest import ingest
from qwen_sglang.integrations.chroma import open_collection


def main() -> None:
    parser = argparse.ArgumentParser(description="Fill a Chroma collection with many documents")
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--persist-dir", required=True)
    parser.add_argument("--collection", default="documents")
    parser.add_argument("--base-url", default=None, help="a running server (default: start one)")
    parser.add_argument("--model", default=None, help="model name (with --base-url) or directory to serve")
    args = parser.parse_args()

    with contextlib.ExitStack() as stack:
        if args.base_url:
            client = EmbeddingClient(base_url=args.base_url, **({"model": args.model} if args.model else {}))
        else:
            client = EmbeddingClient(server=stack.enter_context(demo_server(args.model)).server)
        report = ingest(args.paths, client=client, store=open_collection(args.persist_dir, args.collection))
    for problem in report.problems:
        print(problem)
    print(report.summary())


if __name__ == "__main__":
    main()
