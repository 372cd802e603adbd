"""Load: many concurrent callers on one embeddings object, every answer checked.

    python bench/load.py --serve MODEL_DIR [--callers 64] [--calls 50] [--threads 16]
    python bench/load.py --base-url http://127.0.0.1:30000/v1 --model NAME

The benchmark-sized variant of the CI load tests: ``--callers`` asyncio tasks each make
``--calls`` mixed ``aembed_query`` / ``aembed_documents`` calls through one
``QwenSGLangEmbeddings``; then ``--threads`` threads do the same with the sync methods. Every
result is compared with the sequential result for the same text (a request answered with
another request's vectors, or a partial answer, shows up as a mismatch). Reports errors,
mismatches, calls/s and latency percentiles; exits 1 on any error or mismatch.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _server import add_server_args, open_server  # noqa: E402


def percentiles(values: list[float]) -> str:
    values = sorted(values)
    pick = [values[min(len(values) - 1, int(q * len(values)))] for q in (0.5, 0.9, 0.99)]
    return "p50 {:.0f} ms, p90 {:.0f} ms, p99 {:.0f} ms, max {:.0f} ms".format(
        *(1000 * v for v in pick), 1000 * max(values)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_server_args(parser)
    parser.add_argument("--callers", type=int, default=64)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--texts", type=int, default=256, help="distinct texts the callers draw from")
    parser.add_argument("--tolerance", type=float, default=1e-5, help="max abs difference (2e-2 for bf16 SGLang)")
    args = parser.parse_args()

    from langchain_qwen_sglang import QwenSGLangEmbeddings

    with contextlib.ExitStack() as stack:
        base_url, model = open_server(stack, args)
        emb = QwenSGLangEmbeddings(base_url=base_url, model=model)
        texts = [f"load text {i}: " + "token " * (i % 37) + f"end {i * 7919 % 1000}" for i in range(args.texts)]
        docs_ref = np.array(emb.embed_documents(texts))
        query_ref = np.array(emb.embed_queries(texts))
        errors: list[str] = []
        mismatches = 0
        latencies: list[float] = []
        lock = threading.Lock()

        def check(kind: str, idx: list[int], got: Any) -> None:
            nonlocal mismatches
            ref = query_ref if kind == "query" else docs_ref
            if not np.allclose(np.asarray(got), ref[idx], atol=args.tolerance):
                with lock:
                    mismatches += 1

        async def caller(k: int) -> None:
            for j in range(args.calls):
                i = (k * 31 + j * 7) % len(texts)
                t0 = time.perf_counter()
                try:
                    if j % 2:
                        check("query", [i], [await emb.aembed_query(texts[i])])
                    else:
                        idx = [i, (i + 1) % len(texts), (i + 5) % len(texts)]
                        check("document", idx, await emb.aembed_documents([texts[x] for x in idx]))
                except Exception as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                latencies.append(time.perf_counter() - t0)

        async def run_async() -> None:
            await asyncio.gather(*(caller(k) for k in range(args.callers)))

        start = time.perf_counter()
        asyncio.run(run_async())
        wall = time.perf_counter() - start
        n_calls = args.callers * args.calls
        print(
            f"async: {args.callers} callers x {args.calls} calls = {n_calls} calls in {wall:.1f} s "
            f"({n_calls / wall:.0f} calls/s); {len(errors)} errors, {mismatches} mismatches; {percentiles(latencies)}"
        )
        async_errors, async_mismatches = len(errors), mismatches

        latencies.clear()

        def worker(k: int) -> None:
            for j in range(args.calls):
                i = (k * 17 + j * 3) % len(texts)
                t0 = time.perf_counter()
                try:
                    if j % 2:
                        check("query", [i], [emb.embed_query(texts[i])])
                    else:
                        idx = [i, (i + 2) % len(texts)]
                        check("document", idx, emb.embed_documents([texts[x] for x in idx]))
                except Exception as exc:
                    with lock:
                        errors.append(f"{type(exc).__name__}: {exc}")
                with lock:
                    latencies.append(time.perf_counter() - t0)

        start = time.perf_counter()
        pool = [threading.Thread(target=worker, args=(k,)) for k in range(args.threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        wall = time.perf_counter() - start
        n_calls = args.threads * args.calls
        print(
            f"threads: {args.threads} threads x {args.calls} calls = {n_calls} calls in {wall:.1f} s "
            f"({n_calls / wall:.0f} calls/s); {len(errors) - async_errors} errors, "
            f"{mismatches - async_mismatches} mismatches; {percentiles(latencies)}"
        )
        for e in errors[:5]:
            print("  error:", e)
    sys.exit(1 if errors or mismatches else 0)


if __name__ == "__main__":
    main()
