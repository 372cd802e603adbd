"""Does a single query wait behind a bulk job? embed_query latency while embed_documents runs,
with the bulk job in another process, in the SAME client (a thread), or in another client of the
same process, and with the query's priority off; modes interleaved in shuffled order over rounds,
so that server state and order cannot favour one. Each query request is recorded on the wire
(whether it carried ``priority``).

    python bench/query_lane.py --base-url URL [--rounds 3] [--bulk 4000] [--out FILE]
    python bench/query_lane.py --serve-local MODEL_DIR ...   # a managed local backend (CPU check)
    python bench/query_lane.py --sglang MODEL_DIR --gpu 0 ... # a managed SGLangServer, its defaults
    python bench/query_lane.py --router MODEL_DIR --gpus 0 1  # a ManagedRouter, one worker per GPU
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import qwen_sglang.client.connections as connections  # noqa: E402
from qwen_sglang import EmbeddingClient  # noqa: E402

#: The ``priority`` of every one-text embeddings request this process sent (None: no field).
SENT: list[Any] = []


def _record(request: httpx.Request) -> None:
    if request.url.path.endswith("/embeddings"):
        body = json.loads(request.content)
        if isinstance(body.get("input"), list) and len(body["input"]) == 1:
            SENT.append(body.get("priority"))


def _recording_client(*args: Any, **kwargs: Any) -> httpx.Client:
    # bench only: the client's own connections (both lanes, as users get them) with a hook that
    # records what went on the wire; passing http_client= would merge the lanes into one pool
    client = _new_sync_client(*args, **kwargs)
    client.event_hooks["request"].append(_record)
    return client


_new_sync_client = connections.new_sync_client
connections.new_sync_client = _recording_client

MODES = ("other-process", "same-client", "same-process-other-client", "same-client-no-priority")
WORDS = ["vector", "store", "index", "query", "passage", "embedding", "server", "model", "token", "batch", "latency"]


def texts(n: int, seed: int, words: int = 120) -> list[str]:
    rng = random.Random(seed)
    return [f"{seed}-{i} " + " ".join(rng.choice(WORDS) for _ in range(words)) for i in range(n)]


def bulk_job(client: EmbeddingClient, batch: list[str], done: Any) -> float:
    """Embed ``batch`` as documents; ``done`` is set as the last answer arrives (not after
    building a list of Python floats, ~1 s for 4,000 x 2,560, while nothing is in flight).
    Texts per second."""
    left = [len(batch)]

    def progress(texts: int, tokens: int) -> None:
        left[0] -= texts
        if left[0] <= 0:
            done.set()

    t0 = time.perf_counter()
    client.embed(batch, kind="document", on_progress=progress)
    done.set()
    return len(batch) / (time.perf_counter() - t0)


def _bulk_in_child(base_url: str, batch: list[str], started: Any, done: Any, conn: Any) -> None:
    client = EmbeddingClient(base_url=base_url, timeout=600)
    client.embed_query("warm-up")  # discovery before the clock
    started.set()
    conn.send(bulk_job(client, batch, done))


def one_round(base_url: str, mode: str, bulk: list[str], queries: list[str]) -> dict[str, Any]:
    """Queries one after another from 1 s after the bulk job starts until it ends; latencies."""
    priority: dict[str, Any] = {"query_priority": None} if mode == "same-client-no-priority" else {}
    client = EmbeddingClient(base_url=base_url, timeout=600, **priority)
    client.embed_query("warm-up")
    del SENT[:]
    done: Any = threading.Event()
    box: dict[str, float] = {}
    proc = parent = None
    if mode == "other-process":
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        started, done = ctx.Event(), ctx.Event()
        proc = ctx.Process(target=_bulk_in_child, args=(base_url, bulk, started, done, child), daemon=True)
        proc.start()
        started.wait(120)
        time.sleep(1.0)
    else:
        bulk_client = EmbeddingClient(base_url=base_url, timeout=600) if mode == "same-process-other-client" else client

        def run_bulk() -> None:
            box["texts_s"] = bulk_job(bulk_client, bulk, done)

        threading.Thread(target=run_bulk, daemon=True).start()
        time.sleep(1.0)
    times: list[float] = []
    for q in queries:
        if done.is_set():
            break
        t0 = time.perf_counter()
        client.embed_query(q)
        times.append(1000 * (time.perf_counter() - t0))
    sent = list(SENT)
    if proc is not None and parent is not None:
        box["texts_s"] = parent.recv() if parent.poll(600) else float("nan")
        proc.join(30)
    else:
        done.wait(600)
    return {"mode": mode, "times_ms": times, "bulk_texts_s": box.get("texts_s"), "priorities_sent": sent}


def summary(times: list[float]) -> dict[str, Any]:
    t = sorted(times)
    if not t:
        return {"n": 0}
    q = statistics.quantiles(t, n=10, method="inclusive") if len(t) > 1 else [t[0]] * 9
    return {"n": len(t), "p50_ms": statistics.median(t), "p90_ms": q[8], "max_ms": t[-1]}


def run(base_url: str, rounds: int, n_bulk: int, seed: int, modes: list[str]) -> dict[str, Any]:
    rng = random.Random(seed)
    res: dict[str, Any] = {"base_url": base_url, "rounds": []}
    idle_client = EmbeddingClient(base_url=base_url, timeout=600)
    idle_client.embed_query("warm-up")
    idle = []
    for q in texts(40, seed + 999, words=12):
        t0 = time.perf_counter()
        idle_client.embed_query(q)
        idle.append(1000 * (time.perf_counter() - t0))
    res["idle"] = summary(idle)
    print("idle", res["idle"], flush=True)
    for r in range(rounds):
        order = list(modes)
        rng.shuffle(order)
        for k, mode in enumerate(order):
            bulk = texts(n_bulk, seed + 100 * r + k)
            queries = texts(400, seed + 100 * r + k + 50, words=12)
            out = one_round(base_url, mode, bulk, queries)
            out["round"] = r
            res["rounds"].append(out)
            sent = out["priorities_sent"]
            print(
                r,
                mode,
                summary(out["times_ms"]),
                "bulk texts/s %.0f" % (out["bulk_texts_s"] or 0),
                "priority on the wire:",
                sorted(set(map(str, sent))),
                flush=True,
            )
    res["by_mode"] = {m: summary([t for o in res["rounds"] if o["mode"] == m for t in o["times_ms"]]) for m in modes}
    return res


def make_server(args: argparse.Namespace, sglang_args: list[str]) -> Any:
    """The managed server the arguments ask for (None: ``--base-url``)."""
    if args.serve_local is not None:
        from qwen_sglang.servers import LocalEmbeddingServer

        return LocalEmbeddingServer(args.serve_local)
    from qwen_sglang.servers import ManagedRouter, SGLangServer

    def worker(model: Path, gpu: str) -> SGLangServer:
        return SGLangServer(
            model,
            attention_backend="triton",
            extra_args=sglang_args,
            env={"CUDA_VISIBLE_DEVICES": gpu},
            log_path=f"/tmp/query-lane-worker{gpu}.log",
        )

    if args.sglang is not None:
        return worker(args.sglang, args.gpu)
    if args.router is not None:
        return ManagedRouter([worker(args.router, str(g)) for g in args.gpus], log_path="/tmp/query-lane-router.log")
    return None


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--base-url")
    p.add_argument("--serve-local", type=Path, help="start a LocalEmbeddingServer of this model")
    p.add_argument("--sglang", type=Path, help="start an SGLangServer of this model (its defaults)")
    p.add_argument("--router", type=Path, help="start a ManagedRouter of one SGLangServer per --gpus")
    p.add_argument("--gpu", default="0")
    p.add_argument("--gpus", nargs="*", type=int, default=[0, 1])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--bulk", type=int, default=4000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--modes", nargs="*", default=list(MODES), choices=MODES)
    p.add_argument(
        "--config",
        action="append",
        default=[],
        help="NAME=SGLANG ARGS: one managed server per config, in turn (default: base=--disable-cuda-graph)",
    )
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    configs = [c.split("=", 1) for c in args.config] or [["base", "--disable-cuda-graph"]]
    results: dict[str, Any] = {"command": " ".join(sys.argv), "configs": {}}
    for name, flags in configs:
        server = make_server(args, flags.split())
        if server is not None:
            t0 = time.time()
            server.start()
            print(name, "ready in %.0f s:" % (time.time() - t0), server.base_url, flush=True)
        try:
            res = run(
                server.base_url if server is not None else args.base_url, args.rounds, args.bulk, args.seed, args.modes
            )
            if server is not None:
                members = server.workers if hasattr(server, "workers") else [server]
                res["server_commands"] = [m.display_command() for m in members]
        finally:
            if server is not None:
                server.stop()
        results["configs"][name] = res
        print(name, json.dumps(res["by_mode"]), flush=True)
        if args.out is not None:
            args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
