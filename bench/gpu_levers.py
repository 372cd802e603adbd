"""One-GPU levers for SGLang embedding servers, query latency under a bulk job, and the API key
through ``--config``: one server per setting on one GPU, distinct texts everywhere.

    python bench/gpu_levers.py --model-dir DIR --gpu 0 --tokenizer /tmp/qtok \
        --config 'base=--disable-cuda-graph' --latency base --out RESULTS_DIR

Each ``--config NAME=ARGS`` starts the project's ``SGLangServer`` (triton attention unless ARGS
hold ``--attention-backend X``, ``--mem-fraction-static 0.7``, no grammar backend, pytorch
sampling) with ARGS appended, on
``--gpu`` alone (``CUDA_VISIBLE_DEVICES``), then measures the contenders of ``--contenders`` in
interleaved rounds (each run gets texts no server has seen, so SGLang's prefix cache never helps):

- ``raw-text``: async httpx, 16 texts per request, 16 in flight, base64 answers;
- ``raw-ids``: the same with the texts tokenised on the client by the Qwen tokenizer in
  ``--tokenizer`` (its post-processor appends ``<|endoftext|>``, as the server's does), so the
  server skips tokenising; the tokenising time is reported apart, and a check compares the
  server's ``prompt_tokens`` and the vectors of both paths on the same texts;
- ``core-default`` / ``core-c16``: our ``EmbeddingClient`` with its defaults / ``max_concurrency=16``.

A config named in ``--latency`` also gets p50/p99 of sequential single-text requests (raw httpx,
so a ``priority`` can be sent) on the idle server, then while a bulk ``embed_documents`` job (our
client, in another process) runs: bulk with the defaults; bulk held to 2 and 4 requests in flight
(a client-side reserved lane); and, on a server started with ``--enable-priority-scheduling``,
queries sent with ``priority`` 10 (the bulk sends none, which that server ranks lowest).
A config named in ``--api-key`` is started with an API key (``SGLangServer(api_key=...)``, which
moves it into a 0600 ``--config`` YAML file): the answers without, with a wrong and with the
right key are recorded, and whether the key shows in the server's command line.

With ``--deadline`` (epoch seconds) a server gets only the start-up time that leaves
``--measure-s`` for measuring before the deadline, and a config with too little left is skipped.

Writes ``levers-gpuN.json`` into ``--out``; prints a table last.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing
import os
import shlex
import stat
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from client_throughput import compute_limit, make_texts  # noqa: E402
from dp_scaling import GpuBusy  # noqa: E402

from qwen_sglang import EmbeddingClient  # noqa: E402
from qwen_sglang.servers import SGLangServer  # noqa: E402

COMMON = ["--grammar-backend", "none", "--sampling-backend", "pytorch"]
KEY = "round1-gpu-check-key-0123456789"


class Texts:
    """Hands out slices of one seeded list, never the same text twice."""

    def __init__(self, n: int, seed: int) -> None:
        self.texts = make_texts(n, seed)
        self.at = 0

    def take(self, n: int) -> list[str]:
        part = self.texts[self.at : self.at + n]
        if len(part) < n:
            raise RuntimeError("out of distinct texts: raise --pool")
        self.at += n
        return part


async def raw(
    base_url: str,
    model: str,
    inputs: list[Any],
    batch: int = 16,
    concurrency: int = 16,
    headers: dict[str, str] | None = None,
) -> int:
    """The load generator (texts or token-id lists); returns the prompt tokens the server counted."""
    limit = asyncio.Semaphore(concurrency)
    tokens = 0
    async with httpx.AsyncClient(
        timeout=600, headers=headers, limits=httpx.Limits(max_connections=concurrency + 2)
    ) as client:

        async def one(chunk: list[Any]) -> None:
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

        await asyncio.gather(*(one(inputs[i : i + batch]) for i in range(0, len(inputs), batch)))
    return tokens


def vectors(base_url: str, model: str, inputs: list[Any], headers: dict[str, str]) -> tuple[np.ndarray, int]:
    r = httpx.post(
        base_url + "/embeddings",
        json={"model": model, "input": inputs, "encoding_format": "base64"},
        headers=headers,
        timeout=120,
    )
    r.raise_for_status()
    body = r.json()
    rows = [
        np.frombuffer(base64.b64decode(d["embedding"]), "<f4") for d in sorted(body["data"], key=lambda d: d["index"])
    ]
    return np.stack(rows), body["usage"]["prompt_tokens"]


def ids_check(base_url: str, model: str, tok: Any, texts: list[str], headers: dict[str, str]) -> dict[str, Any]:
    """Same texts as text and as client-side token ids: same prompt tokens, same vectors?"""
    ids = [e.ids for e in tok.encode_batch(texts)]
    a, ta = vectors(base_url, model, texts, headers)
    b, tb = vectors(base_url, model, ids, headers)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {
        "texts": len(texts),
        "prompt_tokens_text": ta,
        "prompt_tokens_ids": tb,
        "client_tokens": sum(len(i) for i in ids),
        "ends_with_endoftext": all(i[-1] == 151643 for i in ids),
        "min_cosine": float(cos.min()),
    }


def _bulk_job(base_url: str, model: str, texts: list[str], settings: dict[str, Any], conn: Any) -> None:
    client = EmbeddingClient(base_url=base_url, model=model, **settings)
    t0 = time.perf_counter()
    client.embed_documents(texts)
    conn.send(len(texts) / (time.perf_counter() - t0))


def latency(
    base_url: str,
    model: str,
    queries: list[str],
    bulk_texts: list[str] | None,
    bulk: dict[str, Any],
    headers: dict[str, str],
    priority: int | None = None,
) -> dict[str, Any]:
    """Sequential single-text requests, alone or while a bulk job runs in another process."""
    body: dict[str, Any] = {"model": model, "encoding_format": "base64"}
    if priority is not None:
        body["priority"] = priority
    times: list[float] = []
    info: dict[str, Any] = {"bulk": {k: v for k, v in bulk.items() if k != "api_key"}, "priority": priority}
    with httpx.Client(timeout=300, headers=headers) as client:
        client.post(base_url + "/embeddings", json=body | {"input": ["warm-up"]}).raise_for_status()
        proc = None
        if bulk_texts:
            parent, child = multiprocessing.get_context("fork").Pipe()
            proc = multiprocessing.get_context("fork").Process(
                target=_bulk_job, args=(base_url, model, bulk_texts, bulk, child), daemon=True
            )
            proc.start()
            time.sleep(2.0)  # the bulk job is under way
        for q in queries:
            if proc is not None and not proc.is_alive():
                break
            t0 = time.perf_counter()
            client.post(base_url + "/embeddings", json=body | {"input": [q]}).raise_for_status()
            times.append(1000 * (time.perf_counter() - t0))
        if proc is not None:
            proc.join(600)
            info["bulk_texts_s"] = parent.recv() if parent.poll(1) else None
    times.sort()
    if not times:
        return info | {"n": 0}
    return info | {
        "n": len(times),
        "p50_ms": times[len(times) // 2],
        "p90_ms": times[min(len(times) - 1, int(0.9 * len(times)))],
        "p99_ms": times[min(len(times) - 1, int(0.99 * len(times)))],
        "max_ms": times[-1],
    }


def key_check(server: SGLangServer) -> dict[str, Any]:
    """What a key in a --config file gives: 401 without it, 200 with it, nothing in argv."""
    out: dict[str, Any] = {}
    cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes().split(b"\0")
    out["argv_has_key"] = any(KEY.encode() in a for a in cmdline)
    out["argv_has_config"] = b"--config" in cmdline
    root, base = server.root_url, server.base_url
    payload = {"model": server.model, "input": ["key check"]}
    for label, headers in (
        ("none", {}),
        ("wrong", {"Authorization": "Bearer nope"}),
        ("right", {"Authorization": f"Bearer {KEY}"}),
    ):
        out[f"embeddings_{label}"] = httpx.post(
            base + "/embeddings", json=payload, headers=headers, timeout=60
        ).status_code
        out[f"models_{label}"] = httpx.get(base + "/models", headers=headers, timeout=60).status_code
    out["health_none"] = httpx.get(root + "/health", timeout=60).status_code
    out["body_none"] = httpx.post(base + "/embeddings", json=payload, timeout=60).text[:200]
    with EmbeddingClient(base_url=base, model=server.model, api_key=KEY) as client:
        out["client_with_key_dims"] = len(client.embed_query("key check"))
    return out


def split_attention(extra: str) -> tuple[str, list[str]]:
    """``--attention-backend X`` among a config's ARGS picks the backend (default triton)."""
    words = shlex.split(extra)
    if "--attention-backend" not in words:
        return "triton", words
    at = words.index("--attention-backend")
    return words[at + 1], words[:at] + words[at + 2 :]


def startup_budget(args: argparse.Namespace) -> float | None:
    """Seconds a server may take to start, or None when ``--deadline`` leaves too little to measure."""
    if args.deadline is None:
        return float(args.startup_timeout)
    left = args.deadline - time.time() - args.measure_s
    return min(float(args.startup_timeout), left) if left >= 60 else None


def run_config(name: str, extra: str, args: argparse.Namespace, pool: Texts, tok: Any, busy: GpuBusy) -> dict[str, Any]:
    keyed = name in args.api_key
    attention, words = split_attention(extra)
    timeout = startup_budget(args)
    if timeout is None:
        print(f"[gpu{args.gpu}] {name} skipped: the deadline leaves no time to start and measure it", flush=True)
        return {"config": name, "args": extra, "skipped": "deadline"}
    server = SGLangServer(
        args.model_dir,
        attention_backend=attention,
        mem_fraction_static=0.7,
        api_key=KEY if keyed else None,
        extra_args=COMMON + words,
        env={"CUDA_VISIBLE_DEVICES": str(args.gpu)},
        log_path=args.work / f"gpu{args.gpu}-{name}.log",
        startup_timeout=timeout,
    )
    headers = {"Authorization": f"Bearer {KEY}"} if keyed else {}
    auth = {"api_key": KEY} if keyed else {}
    row: dict[str, Any] = {"config": name, "args": extra, "command": server.display_command()}
    print(f"[gpu{args.gpu}] {row['command']}", flush=True)
    t0 = time.time()
    try:
        server.start(wait=False)
        if keyed:
            cmd = Path(f"/proc/{server.pid}/cmdline").read_bytes().split(b"\0")
            cfg = Path(cmd[cmd.index(b"--config") + 1].decode()) if b"--config" in cmd else None
            row["config_file_mode"] = oct(stat.S_IMODE(cfg.stat().st_mode)) if cfg and cfg.exists() else None
        server.wait_ready()
    except Exception as exc:  # a setting that does not start is a result too
        row["error"] = str(exc)[:2000]
        row["gave_up_after_s"] = time.time() - t0
        print(f"[gpu{args.gpu}] {name} did not start: {row['error'][:300]}", flush=True)
        server.stop()
        return row
    try:
        row["ready_s"] = time.time() - t0
        if keyed:
            cmd = Path(f"/proc/{server.pid}/cmdline").read_bytes().split(b"\0")
            cfg = Path(cmd[cmd.index(b"--config") + 1].decode()) if b"--config" in cmd else None
            row["config_file_left_after_ready"] = bool(cfg and cfg.exists())
            row["key_check"] = key_check(server)
            print(f"[gpu{args.gpu}] key check {row['key_check']} mode {row.get('config_file_mode')}", flush=True)
        info = httpx.get(server.root_url + "/server_info", headers=headers, timeout=30).json()
        keys = (
            "chunked_prefill_size",
            "max_prefill_tokens",
            "max_running_requests",
            "max_total_num_tokens",
            "cuda_graph_config",
            "enable_priority_scheduling",
            "tokenizer_worker_num",
            "version",
        )
        row["server_info"] = {k: info.get(k) for k in keys}
        base, model = server.base_url, server.model
        row["ids_check"] = ids_check(base, model, tok, pool.take(64), headers)
        print(f"[gpu{args.gpu}] {name} ready {row['ready_s']:.0f}s ids check {row['ids_check']}", flush=True)
        clients = {
            "core-default": EmbeddingClient(base_url=base, model=model, **auth),
            "core-c16": EmbeddingClient(base_url=base, model=model, max_concurrency=16, **auth),
        }
        for c in clients.values():
            c.embed_documents(pool.take(32))  # discovery and warm-up
        asyncio.run(raw(base, model, pool.take(256), headers=headers))
        runs: dict[str, list[dict[str, Any]]] = {}
        contenders = [c for c in args.contenders if c.startswith("raw") or name in args.core]
        for r in range(args.rounds):
            for cname in contenders:
                texts = pool.take(args.n)
                prep = 0.0
                if cname == "raw-ids":
                    p0 = time.perf_counter()
                    inputs: list[Any] = [e.ids for e in tok.encode_batch(texts)]
                    prep = time.perf_counter() - p0
                with busy:
                    t1 = time.perf_counter()
                    if cname == "raw-text":
                        tokens = asyncio.run(raw(base, model, texts, headers=headers))
                    elif cname == "raw-ids":
                        tokens = asyncio.run(raw(base, model, inputs, headers=headers))
                    else:
                        client = clients[cname]
                        before = client.prompt_tokens
                        assert len(client.embed_documents(texts)) == len(texts)
                        tokens = client.prompt_tokens - before
                    wall = time.perf_counter() - t1
                res = {"texts_s": args.n / wall, "tokens_s": tokens / wall, "gpu_busy": busy.mean()[args.gpu]}
                if prep:
                    res["client_tokenize_s_per_1k"] = 1000 * prep / args.n
                runs.setdefault(cname, []).append(res)
                print(
                    f"[gpu{args.gpu}] {name} r{r + 1} {cname:<12} {res['tokens_s']:8.0f} tok/s busy {res['gpu_busy']}",
                    flush=True,
                )
        row["runs"] = runs
        if name in args.latency:
            prio = "enable-priority-scheduling" in extra
            queries = [f"question {i}: {t[:160]}" for i, t in enumerate(pool.take(600))]
            plan: list[tuple[str, dict[str, Any], int | None]] = [("bulk-default", {}, None)]
            if prio:
                plan.append(("bulk-default+query-priority", {}, 10))
            else:
                plan += [("lane-bulk-c4", {"max_concurrency": 4}, None), ("lane-bulk-c2", {"max_concurrency": 2}, None)]
            row["latency"] = {"idle": latency(base, model, queries[:40], None, {}, headers)}
            at = 40
            for label, bulk, p in plan:
                lat = latency(base, model, queries[at:], pool.take(args.bulk), bulk | auth, headers, priority=p)
                at += lat["n"]
                row["latency"][label] = lat
                print(f"[gpu{args.gpu}] {name} latency {label}: {lat}", flush=True)
    finally:
        t2 = time.time()
        server.stop()
        row["stop_s"] = time.time() - t2
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--tokenizer", type=Path, required=True, help="folder with the Qwen tokenizer.json")
    parser.add_argument("--gpu", type=int, default=0)
    parser.add_argument("--config", action="append", required=True, metavar="NAME=ARGS")
    parser.add_argument("--contenders", default="raw-text,raw-ids,core-default,core-c16")
    parser.add_argument("--core", nargs="*", default=[], help="configs that also measure our client")
    parser.add_argument("--latency", nargs="*", default=[], help="configs that also measure query latency")
    parser.add_argument("--api-key", nargs="*", default=[], help="configs started with an API key")
    parser.add_argument("--n", type=int, default=2400, help="texts per run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--bulk", type=int, default=4000, help="texts of each bulk job")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--startup-timeout", type=float, default=240)
    parser.add_argument("--deadline", type=float, help="epoch seconds: no server start that cannot finish by then")
    parser.add_argument("--measure-s", type=float, default=60, help="seconds kept for measuring, with --deadline")
    parser.add_argument("--work", type=Path, default=Path("/tmp/levers"))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.contenders = args.contenders.split(",")
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ["CUDA_VISIBLE_DEVICES"] = str(args.gpu)  # the compute-limit matmul runs on this GPU
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(args.tokenizer / "tokenizer.json"))
    import torch

    result: dict[str, Any] = {
        "command": " ".join(["python", *sys.argv]),
        "gpu": torch.cuda.get_device_name(0),
        "compute_limit_tokens_s": compute_limit(str(args.model_dir)),
        "configs": [],
    }
    del os.environ["CUDA_VISIBLE_DEVICES"]  # NVML and the servers' env name the GPU themselves
    pool = Texts(len(args.config) * (args.rounds * 4 * args.n + 3 * args.bulk + 1100), args.seed)
    busy = GpuBusy()
    out = args.out / f"levers-gpu{args.gpu}.json"
    for spec in args.config:
        name, extra = spec.split("=", 1)
        result["configs"].append(run_config(name, extra, args, pool, tok, busy))
        out.write_text(json.dumps(result, indent=1))
    limit = result["compute_limit_tokens_s"]
    print(f"\n[gpu{args.gpu}] {result['gpu']}: compute limit {limit:,.0f} tokens/s")
    print("| config | contender | tokens/s (median) | of limit | GPU busy % |\n|---|---|---|---|---|")
    for row in result["configs"]:
        for cname, rs in row.get("runs", {}).items():
            med = statistics.median(r["tokens_s"] for r in rs)
            gpu_busy = statistics.fmean(r["gpu_busy"] for r in rs)
            print(f"| {row['config']} | {cname} | {med:,.0f} | {med / limit:.0%} | {gpu_busy:.0f} |")
        for label, lat in row.get("latency", {}).items():
            if lat.get("n"):
                print(
                    f"| {row['config']} | latency {label} | p50 {lat['p50_ms']:.0f} ms | p99 {lat['p99_ms']:.0f} ms "
                    f"| n={lat['n']} bulk {lat.get('bulk_texts_s')} texts/s |"
                )


if __name__ == "__main__":
    main()
