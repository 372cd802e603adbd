"""SGLang server settings for embeddings, measured: one server per configuration, same texts.

    python bench/sglang_tuning.py MODEL_DIR [--n 4000] [--config NAME=ARGS ...] [--markdown FILE]

For each configuration a managed ``SGLangServer`` is started (``--is-embedding`` and the
Matryoshka override come from the project), the raw async load generator of
``bench/client_throughput.py`` sends the same seeded texts at a few request shapes, and the best
tokens/s, the start-up time and the GPU memory in use (``nvidia-smi``) are recorded. The compute
limit (dense bf16 matmul rate x FLOPs per token of the model) is measured first, on the idle GPU.

A configuration is ``NAME=ARGS``: extra SGLang arguments after the common ones (``--common``,
default: triton attention, no CUDA graphs, no grammar backend). Without ``--config`` a built-in
list is measured: the baseline, tokenizer workers, batch tokenisation, larger prefill batches,
no radix cache, flashinfer attention and a smaller memory fraction.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from client_throughput import compute_limit, make_texts, raw_embed  # noqa: E402

from qwen_sglang import EmbeddingClient  # noqa: E402
from qwen_sglang.servers import SGLangServer  # noqa: E402

COMMON = "--attention-backend triton --disable-cuda-graph --grammar-backend none --sampling-backend pytorch"
CONFIGS = {
    "baseline (mem 0.7)": "--mem-fraction-static 0.7",
    "tokenizer workers 4": "--mem-fraction-static 0.7 --tokenizer-worker-num 4",
    "batch tokenize": "--mem-fraction-static 0.7 --enable-tokenizer-batch-encode",
    "prefill 32k": "--mem-fraction-static 0.7 --chunked-prefill-size 32768 --max-prefill-tokens 32768",
    "no radix cache": "--mem-fraction-static 0.7 --disable-radix-cache",
    "mem 0.3": "--mem-fraction-static 0.3",
    "flashinfer": "--mem-fraction-static 0.7 --attention-backend flashinfer",
    "no radix + batch tokenize": "--mem-fraction-static 0.7 --disable-radix-cache --enable-tokenizer-batch-encode",
}
SHAPES = ((16, 16), (64, 16), (32, 32))


def gpu_memory_mib() -> int | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return int(out.stdout.split()[0])


def measure(
    model: str, name: str, args: list[str], texts: list[str], timeout: float, shapes: tuple[tuple[int, int], ...]
) -> dict[str, Any]:
    row: dict[str, Any] = {"config": name, "args": " ".join(args)}
    start = time.perf_counter()
    try:
        server = SGLangServer(model, extra_args=args, startup_timeout=timeout).start()
    except Exception as exc:  # a configuration that does not start is a result too
        row["error"] = str(exc).splitlines()[0][:300]
        print(f"[{name}] did not start: {row['error']}", flush=True)
        return row
    try:
        row["start_s"] = time.perf_counter() - start
        row["gpu_mib"] = gpu_memory_mib()
        with EmbeddingClient(base_url=server.base_url, model=server.model) as client:
            row["tokens"] = sum(sum(client.count_tokens(texts[i : i + 512])) for i in range(0, len(texts), 512))
        asyncio.run(raw_embed(server.base_url, server.model, texts[:512], 16, 16, "float"))  # warm-up
        rates = {}
        for batch, conc in shapes:
            t0 = time.perf_counter()
            asyncio.run(raw_embed(server.base_url, server.model, texts, batch, conc, "float"))
            rates[f"{batch}x{conc}"] = row["tokens"] / (time.perf_counter() - t0)
        row["tokens_s"] = rates
        row["best_tokens_s"] = max(rates.values())
        print(
            f"[{name}] start {row['start_s']:.0f}s, GPU {row['gpu_mib']} MiB, "
            + ", ".join(f"{k}: {v:,.0f} tok/s" for k, v in rates.items()),
            flush=True,
        )
    finally:
        server.stop()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="model directory (a Qwen3-Embedding or one of its shapes)")
    parser.add_argument("--n", type=int, default=4000, help="texts per request shape")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--common", default=COMMON, help=f"arguments for every configuration (default: {COMMON})")
    parser.add_argument("--config", action="append", default=None, metavar="NAME=ARGS", help="repeatable")
    parser.add_argument("--only", action="append", default=None, help="run these built-in configurations only")
    parser.add_argument("--startup-timeout", type=float, default=300.0)
    parser.add_argument(
        "--shapes",
        default=",".join(f"{b}x{c}" for b, c in SHAPES),
        help="request shapes BATCHxCONCURRENCY, comma-separated",
    )
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--markdown", type=Path, default=None, help="append the table here")
    args = parser.parse_args()

    if args.config:
        configs = dict(c.split("=", 1) for c in args.config)
    else:
        configs = {k: v for k, v in CONFIGS.items() if not args.only or k in args.only}
    shapes = tuple((int(b), int(c)) for b, c in (s.lower().split("x") for s in args.shapes.split(",")))
    texts = make_texts(args.n, args.seed)
    limit = compute_limit(args.model)
    print(f"compute limit: {limit:,.0f} tokens/s", flush=True)
    rows = []
    for name, extra in configs.items():
        # later arguments win in SGLang's argparse, so a configuration can override the common ones
        argv = shlex.split(args.common) + shlex.split(extra)
        rows.append(measure(args.model, name, argv, texts, args.startup_timeout, shapes))
    lines = [
        "| configuration | extra arguments | start s | GPU MiB | best tokens/s | of compute limit | per shape |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['config']} | `{r['args']}` | — | — | did not start: {r['error'][:120]} | | |")
            continue
        shapes = ", ".join(f"{k} {v / 1000:.1f}k" for k, v in r["tokens_s"].items())
        lines.append(
            f"| {r['config']} | `{r['args'].replace(args.common, '').strip()}` | {r['start_s']:.0f} | {r['gpu_mib']} | "
            f"{r['best_tokens_s']:,.0f} | {r['best_tokens_s'] / limit:.0%} | {shapes} |"
        )
    table = "\n".join(lines)
    print("\n" + table)
    meta = {
        "date": datetime.date.today().isoformat(),
        "command": " ".join(["python", *sys.argv]),
        "common": args.common,
        "compute_limit_tokens_s": limit,
        "n": len(texts),
    }
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    if args.markdown:
        with args.markdown.open("a") as fh:
            fh.write(
                f"\n### SGLang settings for embeddings, {meta['date']}\n\n`{meta['command']}`\n\n"
                f"Common arguments: `{args.common}`; {len(texts)} texts per shape; compute limit "
                f"{limit:,.0f} tokens/s.\n\n{table}\n"
            )


if __name__ == "__main__":
    main()
