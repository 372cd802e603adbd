"""Filling an embedded Chroma with 100k short documents: wall time and peak memory.

    python bench/ingest.py --serve MODEL_DIR [--n 100000] [--markdown docs/benchmarks.md]
    python bench/ingest.py --base-url http://127.0.0.1:30000/v1 --model NAME

Contenders, each in a fresh Python process (its peak RSS is the process's own, Chroma included;
the embedding server is another process and is not counted), each into a new collection:

- ``qwen-sglang ingest``: the project's streaming ingester (bounded batches, pipelined writes);
- ``Chroma.from_documents + QwenSGLangEmbeddings``: the LangChain one-liner with our class;
- ``Chroma.from_documents + OpenAIEmbeddings``: the same with langchain-openai
  (``check_embedding_ctx_length=False``), what users write today.

Documents are seeded, 15-60 words of the shipped corpus's vocabulary, in one JSON-lines file.
Each contender's collection must end with exactly ``n`` records.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _server import add_server_args, open_server  # noqa: E402
from client_throughput import _installed  # noqa: E402

CONTENDERS = ("qwen-sglang ingest", "from_documents + QwenSGLangEmbeddings", "from_documents + OpenAIEmbeddings")


def write_docs(path: Path, n: int, seed: int) -> None:
    from qwen_sglang.cli.demo import load_corpus

    rng = random.Random(seed)
    words = [w for r in load_corpus() for w in r["text"].split()]
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            text = " ".join(rng.choice(words) for _ in range(rng.randint(15, 60)))
            fh.write(json.dumps({"id": f"doc{i}", "text": f"[{i}] {text}", "metadata": {"n": i}}) + "\n")


def child(which: str, data: Path, persist: Path, base_url: str, model: str, ingest_args: list[str]) -> None:
    """Run one contender in this process and print its numbers as JSON."""
    start = time.perf_counter()
    if which == CONTENDERS[0]:
        from qwen_sglang.cli import main

        argv = ["ingest", str(data), "--collection", "bench", "--persist-dir", str(persist)]
        code = main([*argv, "--base-url", base_url, "--model", model, "--no-progress", *ingest_args])
        assert code == 0
    else:
        from langchain_chroma import Chroma
        from langchain_core.documents import Document

        docs = []
        with data.open(encoding="utf-8") as fh:
            for line in fh:
                rec = json.loads(line)
                docs.append(Document(page_content=rec["text"], metadata=rec["metadata"], id=rec["id"]))
        embeddings: Any
        if which == CONTENDERS[1]:
            from langchain_qwen_sglang import QwenSGLangEmbeddings

            embeddings = QwenSGLangEmbeddings(base_url=base_url, model=model)
        else:
            from langchain_openai import OpenAIEmbeddings

            embeddings = OpenAIEmbeddings(
                model=model,
                base_url=base_url,
                api_key="none",  # type: ignore[arg-type]
                check_embedding_ctx_length=False,
            )
        Chroma.from_documents(docs, embeddings, collection_name="bench", persist_directory=str(persist))
    wall = time.perf_counter() - start
    import chromadb

    count = chromadb.PersistentClient(path=str(persist)).get_collection("bench").count()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"wall_s": wall, "peak_rss_mb": peak_mb, "count": count}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_server_args(parser)
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", action="append", default=None, choices=CONTENDERS)
    parser.add_argument("--markdown", type=Path, default=None, help="append the table here")
    parser.add_argument("--json", type=Path, default=None, help="write the numbers here (bench/report.py reads it)")
    parser.add_argument(
        "--ingest-arg",
        action="append",
        default=[],
        help="extra argument for the `qwen-sglang ingest` contender (repeatable), e.g. --ingest-arg=--batch",
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--persist", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.data, args.persist, args.base_url, args.model, args.ingest_arg)
        return

    rows = []
    with contextlib.ExitStack() as stack:
        base_url, model = open_server(stack, args)
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="qwen-sglang-bench-ingest-")))
        data = tmp / "docs.jsonl"
        write_docs(data, args.n, args.seed)
        from qwen_sglang import EmbeddingClient

        with EmbeddingClient(base_url=base_url, model=model) as probe:
            width = len(probe.embed_documents(["probe"])[0])
            served = probe.model or "default"  # the served name, for every contender
        print(f"{args.n} documents, {width}-d vectors, server {base_url}", flush=True)
        for which in args.only or CONTENDERS:
            cmd = [
                sys.executable,
                __file__,
                "--child",
                which,
                "--data",
                str(data),
                "--persist",
                str(tmp / str(len(rows))),
            ]
            cmd += ["--base-url", base_url, "--model", served, *(f"--ingest-arg={a}" for a in args.ingest_arg)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if out.returncode != 0:
                print(f"{which} failed:\n{out.stderr[-2000:]}", flush=True)
                rows.append({"contender": which, "error": out.stderr.strip().splitlines()[-1][:200]})
                continue
            result = json.loads(out.stdout.strip().splitlines()[-1])
            assert result["count"] == args.n, (which, result)
            rows.append({"contender": which, **result})
            print(
                f"  {which:<40} {result['wall_s']:7.1f} s  {args.n / result['wall_s']:7.0f} docs/s  "
                f"peak RSS {result['peak_rss_mb']:7.0f} MB",
                flush=True,
            )

    lines = ["| contender | wall s | docs/s | peak RSS MB | records |", "|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['contender']} | failed: {r['error']} | | | |")
        else:
            lines.append(
                f"| {r['contender']} | {r['wall_s']:.1f} | {args.n / r['wall_s']:.0f} | {r['peak_rss_mb']:.0f} | "
                f"{r['count']} |"
            )
    table = "\n".join(lines)
    print("\n" + table)
    if args.json:
        meta = {"n": args.n, "width": width, "command": " ".join(["python", *sys.argv])}
        args.json.write_text(json.dumps({"meta": meta | {"date": datetime.date.today().isoformat()}, "rows": rows}))
    if args.markdown:
        versions = ", ".join(
            f"{p} {importlib.metadata.version(p)}"
            for p in ("qwen-sglang", "chromadb", "langchain-chroma", "langchain-openai")
            if _installed(p)
        )
        with args.markdown.open("a") as fh:
            fh.write(
                f"\n### Ingest of {args.n:,} documents, {datetime.date.today().isoformat()}\n\n"
                f"`{' '.join(['python', *sys.argv])}`\n\n{width}-d vectors; each contender in a fresh process "
                f"(peak RSS = that process, Chroma included; the server not counted). Versions: {versions}\n\n"
                f"{table}\n"
            )


if __name__ == "__main__":
    main()
