"""Client throughput against one embedding server: our classes vs the peers vs a raw load generator.

    python bench/client_throughput.py --serve MODEL_DIR [--backend local|sglang] [--n 20000]
    python bench/client_throughput.py --base-url http://127.0.0.1:30000/v1 --model NAME

Contenders, all on the same server in the same run, interleaved, ``--repeats`` times:

- ``raw``: an async httpx load generator, the best batch size and concurrency of a small sweep
  (the limit a client can reach on this server);
- ``ours-langchain-sync`` / ``ours-langchain-async``: ``QwenSGLangEmbeddings`` given only the URL
  (and ``--model`` if given): default settings, so the request shape is what the server
  advertises (the local backend: few large requests) or the package default (SGLang);
- ``ours-llamaindex``: ``QwenSGLangEmbedding.get_text_embedding_batch``, the same;
- ``ours-core-gpu-shape`` (``--gpu-shape-too``): the core client told the package's GPU shape
  (32 texts x 8 in flight) explicitly: what a URL-only client sent before it learned the shape;
- ``langchain-openai``: ``OpenAIEmbeddings(check_embedding_ctx_length=False)`` (its only correct
  setting for Qwen on SGLang);
- ``llamaindex-openai-like``: ``OpenAILikeEmbedding`` with its defaults.

Texts are seeded, 20-400 tokens of real words (log-normal lengths), tokens counted exactly by the
server. Reports median vectors/s, tokens/s, the client process's CPU seconds per 1k vectors and
the ratio to ``raw``; ``--markdown FILE`` appends the table with the command, date and versions.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime
import importlib.metadata
import json
import platform
import random
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import _server  # noqa: E402
from _server import add_server_args, open_server, process_cpu_seconds  # noqa: E402

from qwen_sglang import EmbeddingClient  # noqa: E402
from qwen_sglang.cli.demo import load_corpus  # noqa: E402


def make_texts(n: int, seed: int) -> list[str]:
    """Seeded texts of roughly 20-400 tokens from the corpus vocabulary (English and Chinese)."""
    rng = random.Random(seed)
    words = [w for r in load_corpus() for w in r["text"].split()]
    texts = []
    for i in range(n):
        length = int(min(300, max(12, rng.lognormvariate(4.2, 0.7))))  # words; ~1.3 tokens each
        texts.append(f"[{i}] " + " ".join(rng.choice(words) for _ in range(length)))
    return texts


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def raw_embed(base_url: str, model: str, texts: list[str], batch: int, concurrency: int, fmt: str) -> int:
    """The load generator: batches in flight with a semaphore, vectors decoded with numpy."""
    limit = asyncio.Semaphore(concurrency)
    done = 0
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=concurrency + 2)) as client:

        async def one(chunk: list[str]) -> None:
            nonlocal done
            async with limit:
                r = await client.post(
                    base_url + "/embeddings", json={"model": model, "input": chunk, "encoding_format": fmt}
                )
            r.raise_for_status()
            for item in r.json()["data"]:
                emb = item["embedding"]
                vec = np.frombuffer(base64.b64decode(emb), "<f4") if isinstance(emb, str) else np.asarray(emb)
                done += vec.shape[0] > 0
            return None

        await asyncio.gather(*(one(texts[i : i + batch]) for i in range(0, len(texts), batch)))
    return done


def contenders(
    base_url: str,
    model: str | None,
    best: tuple[int, int, str],
    ours: dict[str, Any] | None = None,
    gpu_shape_too: bool = False,
) -> dict[str, Callable[[list[str]], int]]:
    """``model`` None: ours learn the served one, the others send ``"default"``."""
    ours = ours or {}
    name = model or "default"
    out: dict[str, Callable[[list[str]], int]] = {
        "raw": lambda t: asyncio.run(raw_embed(base_url, name, t, *best)),
    }
    try:
        from langchain_qwen_sglang import QwenSGLangEmbeddings
        from llama_index_qwen_sglang import QwenSGLangEmbedding
    except ImportError:  # no frameworks here: measure the core they delegate to
        core = EmbeddingClient(base_url=base_url, model=model, **ours)
        out["ours-core-sync"] = lambda t: len(core.embed_documents(t))
        out["ours-core-async"] = lambda t: len(asyncio.run(core.aembed_documents(t)))
    else:
        ours_lc = QwenSGLangEmbeddings(base_url=base_url, model=model, **ours)
        ours_li = QwenSGLangEmbedding(base_url=base_url, model=model, **ours)
        out["ours-langchain-sync"] = lambda t: len(ours_lc.embed_documents(t))
        out["ours-langchain-async"] = lambda t: len(asyncio.run(ours_lc.aembed_documents(t)))
        out["ours-llamaindex"] = lambda t: len(ours_li.get_text_embedding_batch(t))
    if gpu_shape_too:
        gpu = EmbeddingClient(base_url=base_url, model=model, batch_size=32, max_batch_tokens=8192, max_concurrency=8)
        out["ours-core-gpu-shape"] = lambda t: len(gpu.embed(t).indices)
    with contextlib.suppress(ImportError):
        from langchain_openai import OpenAIEmbeddings

        peer_lc = OpenAIEmbeddings(
            model=name,
            base_url=base_url,
            api_key="none",  # type: ignore[arg-type]
            check_embedding_ctx_length=False,
        )
        out["langchain-openai"] = lambda t: len(peer_lc.embed_documents(t))
    with contextlib.suppress(ImportError):
        from llama_index.embeddings.openai_like import OpenAILikeEmbedding

        peer_li = OpenAILikeEmbedding(model_name=name, api_base=base_url, api_key="none")
        out["llamaindex-openai-like"] = lambda t: len(peer_li.get_text_embedding_batch(t))
    return out


def sweep(base_url: str, model: str, texts: list[str], fmt: str) -> tuple[int, int, str]:
    results = []
    shapes = [(b, c) for b in (16, 32, 64) for c in (2, 4, 8, 16)] + [
        (256, 1),
        (256, 2),
        (256, 4),
        (1000, 1),
        (1000, 2),
        (2000, 1),
        (4096, 1),
    ]
    for batch, conc in shapes:
        start = time.perf_counter()
        asyncio.run(raw_embed(base_url, model, texts, batch, conc, fmt))
        rate = len(texts) / (time.perf_counter() - start)
        results.append((rate, batch, conc))
        print(f"  sweep batch={batch:<4} concurrency={conc:<3} {rate:8.1f} vectors/s", flush=True)
    rate, batch, conc = max(results)
    return batch, conc, fmt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_server_args(parser)
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sglang-arg", action="append", default=[], help="extra SGLang argument (repeatable)")
    parser.add_argument("--sweep-n", type=int, default=2000, help="texts per sweep point")
    parser.add_argument("--raw-shape", default=None, metavar="BATCHxCONC", help="skip the sweep: use this raw shape")
    parser.add_argument(
        "--peer-n",
        type=int,
        default=None,
        help="run the peers (langchain-openai, OpenAILike) on the first N texts only (slow peers on big runs); "
        "their rates are per text of the same seeded distribution",
    )
    parser.add_argument(
        "--compute-limit",
        action="store_true",
        help="measure dense bf16 matmul TFLOP/s on this GPU and report tokens/s at that rate for the served model",
    )
    parser.add_argument(
        "--ours-settings",
        default=None,
        metavar="JSON",
        help="settings for our classes instead of the defaults, e.g. '{\"batch_size\": 1000}'",
    )
    parser.add_argument(
        "--model-dir", default=None, help="with --base-url: the served model's folder (--compute-limit)"
    )
    parser.add_argument(
        "--gpu-shape-too",
        action="store_true",
        help="also measure the core client told the package's GPU shape (32 x 8) explicitly",
    )
    parser.add_argument("--json", type=Path, default=None, help="write all numbers here")
    parser.add_argument("--markdown", type=Path, default=None, help="append the table to this file")
    args = parser.parse_args()

    with contextlib.ExitStack() as stack:
        opts: dict[str, Any] = {"extra_args": args.sglang_arg} if args.backend == "sglang" else {}
        base_url, model = open_server(stack, args, **opts)
        texts = make_texts(args.n, args.seed)
        probe = EmbeddingClient(base_url=base_url, model=model)
        counts = [c for i in range(0, len(texts), 512) for c in probe.count_tokens(texts[i : i + 512])]
        tokens = sum(counts)
        model = probe.model  # the served name (ours would learn it too; the raw generator and peers send it)
        assert model is not None
        b64 = isinstance(
            httpx.post(
                base_url + "/embeddings", json={"model": model, "input": ["x"], "encoding_format": "base64"}, timeout=60
            ).json()["data"][0]["embedding"],
            str,
        )
        fmt = "base64" if b64 else "float"
        print(f"{len(texts)} texts, {tokens} tokens ({tokens / len(texts):.0f} per text); server answers {fmt}")
        model_dir = args.serve or args.model_dir
        limit_tps = compute_limit(model_dir) if args.compute_limit and model_dir else None
        if args.raw_shape:
            b, c = (int(x) for x in args.raw_shape.lower().split("x"))
            best = (b, c, fmt)
        else:
            print(f"raw load generator sweep (on the first {args.sweep_n} texts):")
            best = sweep(base_url, model, texts[: args.sweep_n], fmt)
        print(f"  raw shape: batch={best[0]} concurrency={best[1]}")
        peers = {"langchain-openai", "llamaindex-openai-like"}
        runs: dict[str, list[tuple[float, float, float | None]]] = {}
        ours = json.loads(args.ours_settings) if args.ours_settings else None
        table = contenders(base_url, model, best, ours, args.gpu_shape_too)
        ours_shape = probe.request_shape if not ours else dict(ours)
        print(f"  our classes' request shape: {ours_shape}")
        for fn in table.values():  # warm-up: connections, imports, first-call costs
            fn(texts[:64])
        for r in range(args.repeats):
            for name, fn in table.items():
                subset = texts[: args.peer_n] if args.peer_n and name in peers else texts
                s0 = process_cpu_seconds(_server.started_pid)
                c0, t0 = cpu_seconds(), time.perf_counter()
                count = fn(subset)
                wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
                s1 = process_cpu_seconds(_server.started_pid)
                server_cpu = s1 - s0 if s0 is not None and s1 is not None else None
                assert count == len(subset), (name, count)
                runs.setdefault(name, []).append((wall, cpu, server_cpu))
                shown = f"  server cpu {server_cpu:6.1f}s" if server_cpu is not None else ""
                rate = len(subset) / wall
                print(f"  round {r + 1} {name:<24} {rate:8.1f} vectors/s  cpu {cpu:6.1f}s{shown}", flush=True)

    rows = []
    raw_rate = len(texts) / statistics.median(w for w, _, _ in runs["raw"])
    for name, values in runs.items():
        n = min(args.peer_n, len(texts)) if args.peer_n and name in peers else len(texts)
        wall = statistics.median(w for w, _, _ in values)
        cpu = statistics.median(c for _, c, _ in values)
        server = [sc for _, _, sc in values if sc is not None]
        rows.append(
            {
                "client": name,
                "texts": n,
                "vectors_s": n / wall,
                "tokens_s": sum(counts[:n]) / wall,
                "cpu_s_per_1k": 1000 * cpu / n,
                "server_cpu_s_per_1k": 1000 * statistics.median(server) / n if server else None,
                "vs_raw": n / wall / raw_rate,
                # each round's rate over raw's in the same round: robust to a background load
                # that drifts between rounds (a shared machine)
                "vs_raw_paired": statistics.median(
                    (n / w) / (len(texts) / rw) for (w, _, _), (rw, _, _) in zip(values, runs["raw"], strict=True)
                ),
                "rounds_vectors_s": [n / w for w, _, _ in values],
            }
        )
    header = (
        "| client | vectors/s | tokens/s | client CPU s / 1k vectors | server CPU s / 1k vectors | vs raw "
        "| vs raw, median of rounds |\n|---|---|---|---|---|---|---|\n"
    )
    body = "".join(
        f"| {r['client']} | {r['vectors_s']:.1f} | {r['tokens_s']:.0f} | {r['cpu_s_per_1k']:.2f} | "
        + (f"{r['server_cpu_s_per_1k']:.2f}" if r["server_cpu_s_per_1k"] is not None else "-")
        + f" | {r['vs_raw']:.2f} | {r['vs_raw_paired']:.2f} |\n"
        for r in rows
    )
    if limit_tps:
        body += f"\nCompute limit {limit_tps:,.0f} tokens/s; raw reaches {rows[0]['tokens_s'] / limit_tps:.0%} of it.\n"
    print("\n" + header + body)
    versions = {
        p: importlib.metadata.version(p)
        for p in ("qwen-sglang", "langchain-openai", "llama-index-core", "httpx", "torch")
        if _installed(p)
    }
    meta = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {platform.processor() or ''}",
        "command": " ".join(["python", *sys.argv]),
        "n": len(texts),
        "tokens": tokens,
        "repeats": args.repeats,
        "best_raw": {"batch": best[0], "concurrency": best[1], "encoding": fmt},
        "ours_shape": ours_shape,
        "versions": versions,
    }
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    if args.markdown:
        with args.markdown.open("a") as fh:
            fh.write(
                f"\n### Client throughput, {meta['date']}\n\n`{meta['command']}`\n\n{len(texts)} texts, "
                f"{tokens} tokens; raw generator: batch {best[0]}, concurrency {best[1]}, {fmt}; our classes' "
                f"request shape {ours_shape}; "
                f"median of {args.repeats} interleaved rounds"
                + (f"; our classes with `{args.ours_settings}`" if args.ours_settings else "")
                + (f"; the peers ran on the first {args.peer_n} texts" if args.peer_n else "")
                + ". Versions: "
                + ", ".join(f"{k} {v}" for k, v in versions.items())
                + "\n\n"
                + header
                + body
            )


def compute_limit(model_dir: str) -> float:
    """Tokens/s the GPU could reach at its measured dense bf16 matmul rate for this model.

    FLOPs per token = 2 x (non-embedding parameters); attention over ~200-token inputs adds ~1%.
    """
    import torch
    from transformers import AutoConfig

    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(20):
        a @ b
    torch.cuda.synchronize()
    tflops = 2 * n**3 * 20 / (time.perf_counter() - start) / 1e12
    del a, b
    torch.cuda.empty_cache()
    cfg = AutoConfig.from_pretrained(model_dir)
    h, inter, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    q = cfg.num_attention_heads * cfg.head_dim
    kv = cfg.num_key_value_heads * cfg.head_dim
    params = layers * (h * q + 2 * h * kv + q * h + 3 * h * inter)
    flops_per_token = 2 * params
    print(f"dense bf16 matmul: {tflops:.0f} TFLOP/s; {flops_per_token / 1e9:.2f} GFLOP per token")
    return tflops * 1e12 / flops_per_token


def _installed(name: str) -> bool:
    try:
        importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


if __name__ == "__main__":
    main()
