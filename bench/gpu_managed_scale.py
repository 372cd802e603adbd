"""Issue 19 on 2 GPUs with OUR managed servers: ManagedRouter.for_gpus (2 SGLang workers +
sglang-router, round_robin) and SGLangServer(dp_size=2); our client with its defaults vs raw 16x16
and raw 32x8; one GPU (worker 0 direct) in the same run; the query latency of embed_query while an
embed_documents job runs in another process and in the same client; teardown leaves no process.

    python bench/gpu_managed_scale.py --model-dir DIR --out OUT [--deadline S] [--tp] [--backend sglang|local]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from gpu_levers import Texts  # noqa: E402
from scale_out import COMMON, measure  # noqa: E402

from qwen_sglang import EmbeddingClient  # noqa: E402

T0 = time.time()


def log(*a: Any) -> None:
    print(f"[{time.time() - T0:6.1f}s]", *a, flush=True)


class NoBusy:
    def __enter__(self) -> NoBusy:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def mean(self) -> list[float]:
        return []


def busy_meter() -> Any:
    try:
        from dp_scaling import GpuBusy

        return GpuBusy()
    except Exception:
        return NoBusy()


def gpu_state() -> str:
    smi = subprocess.run(
        "nvidia-smi --query-gpu=index,memory.used --format=csv,noheader; "
        "nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader",
        shell=True,
        capture_output=True,
        text=True,
    ).stdout
    ps = subprocess.run(
        "pgrep -fa 'sglang|router_main' | grep -v g2_scale || true", shell=True, capture_output=True, text=True
    ).stdout
    return (smi + "procs: " + (ps.strip() or "none")).strip()


def pct(times: list[float]) -> dict[str, Any]:
    times = sorted(times)
    if not times:
        return {"n": 0}
    n = len(times)
    return {
        "n": n,
        "p50_ms": times[n // 2],
        "p90_ms": times[min(n - 1, int(0.9 * n))],
        "p99_ms": times[min(n - 1, int(0.99 * n))],
        "max_ms": times[-1],
    }


def _bulk_proc(base_url: str, model: str, texts: list[str], conn: Any) -> None:
    client = EmbeddingClient(base_url=base_url, model=model, timeout=600)
    t0 = time.perf_counter()
    client.embed_documents(texts)
    conn.send(len(texts) / (time.perf_counter() - t0))


def latency(base_url: str, model: str, pool: Texts, mode: str, n_bulk: int, n_q: int = 200) -> dict[str, Any]:
    """embed_query latencies: idle, while a bulk job runs in another process, or in the same client."""
    client = EmbeddingClient(base_url=base_url, model=model, timeout=600)
    client.embed_query("warm-up")
    queries = pool.take(n_q)
    info: dict[str, Any] = {"mode": mode}
    done = threading.Event()
    proc = parent = None
    th = None
    if mode == "other-process":
        parent, child = multiprocessing.get_context("fork").Pipe()
        proc = multiprocessing.get_context("fork").Process(
            target=_bulk_proc, args=(base_url, model, pool.take(n_bulk), child), daemon=True
        )
        proc.start()
        time.sleep(3.0)
    elif mode == "same-client":
        texts = pool.take(n_bulk)
        box: dict[str, float] = {}

        def bulk() -> None:
            t0 = time.perf_counter()
            client.embed_documents(texts)
            box["texts_s"] = len(texts) / (time.perf_counter() - t0)
            done.set()

        th = threading.Thread(target=bulk, daemon=True)
        th.start()
        time.sleep(1.0)
    times: list[float] = []
    for q in queries:
        if proc is not None and not proc.is_alive():
            break
        if th is not None and done.is_set():
            break
        t0 = time.perf_counter()
        client.embed_query(q)
        times.append(1000 * (time.perf_counter() - t0))
    if proc is not None and parent is not None:
        proc.join(300)
        info["bulk_texts_s"] = parent.recv() if parent.poll(1) else None
    if th is not None:
        th.join(300)
        info["bulk_texts_s"] = box.get("texts_s")
    info |= pct(times)
    log("latency", base_url, info)
    return info


def med(res: dict[str, Any]) -> dict[str, float]:
    return {k: statistics.median(r["tokens_s"] for r in v) for k, v in res.get("runs", {}).items()}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model-dir", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--backend", default="sglang", choices=["sglang", "local"])
    p.add_argument("--n", type=int, default=2400)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--bulk", type=int, default=3000, help="texts in the bulk job of the latency runs")
    p.add_argument("--deadline", type=float, default=480)
    p.add_argument("--tp", action="store_true")
    p.add_argument("--skip", nargs="*", default=[])
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    Path("/tmp/scale-out").mkdir(exist_ok=True)
    out = args.out / "scale_managed.json"
    res: dict[str, Any] = {"command": " ".join(sys.argv), "gpu_before": gpu_state(), "targets": {}}

    def save() -> None:
        out.write_text(json.dumps(res, indent=1))

    pool = Texts(12 * args.rounds * args.n + 6 * args.bulk + 4000, seed=11)
    busy = busy_meter()
    from qwen_sglang.servers import LocalEmbeddingServer, ManagedRouter, SGLangServer

    def sg(gpus: str, name: str, **kw: Any) -> Any:
        if args.backend == "local":
            return LocalEmbeddingServer(args.model_dir, log_path=f"/tmp/scale-out/{name}.log")
        return SGLangServer(
            args.model_dir,
            attention_backend="triton",
            mem_fraction_static=0.7,
            extra_args=COMMON,
            env={"CUDA_VISIBLE_DEVICES": gpus},
            log_path=f"/tmp/scale-out/{name}.log",
            **kw,
        )

    # ---- A: the managed router (2 workers, round_robin)
    if "router" not in args.skip:
        router = ManagedRouter(
            [sg("0", "w0"), sg("1", "w1")], policy="round_robin", log_path="/tmp/scale-out/router.log"
        )
        res["router_commands"] = [w.display_command() for w in router.workers]
        log("router workers", res["router_commands"])
        t0 = time.time()
        try:
            router.start()
            res["router_ready_s"] = time.time() - t0
            log("router ready", res["router_ready_s"], router.base_url)
            w0, w1 = router.workers[0].base_url, router.workers[1].base_url
            model = router.model
            res["targets"]["1gpu-worker0"] = measure(
                "1gpu-worker0", w0, model, args, pool, busy, ["raw-16x16", "raw-32x8", "core-default"]
            )
            res["targets"]["router"] = measure(
                "router", router.base_url, model, args, pool, busy, ["raw-16x16", "raw-32x8", "core-default"]
            )
            res["targets"]["two-urls"] = measure("two-urls", f"{w0},{w1}", model, args, pool, busy, ["core-default"])
            save()
            res["latency_router"] = [
                latency(router.base_url, model, pool, m, args.bulk) for m in ("idle", "other-process", "same-client")
            ]
            save()
        except Exception as exc:
            res["router_error"] = f"{type(exc).__name__}: {exc}"[:2000]
            log("router failed", res["router_error"])
        finally:
            t0 = time.time()
            router.stop()
            res["router_stop_s"] = time.time() - t0
            time.sleep(2)
            res["gpu_after_router"] = gpu_state()
            log("after router stop", res["router_stop_s"], res["gpu_after_router"])
            save()
    # ---- B: dp_size=2 (and tp_size=2 if time is left)
    for label, kw in (("dp2", {"dp_size": 2}), ("tp2", {"tp_size": 2})):
        if label in args.skip or (label == "tp2" and not args.tp) or args.backend == "local":
            continue
        if time.time() - T0 > args.deadline - 140:
            res[f"{label}_skipped"] = f"no time left at {time.time() - T0:.0f}s"
            log(label, "skipped: no time")
            continue
        s = sg("0,1", label, **kw)
        res[f"{label}_command"] = s.display_command()
        log(label, res[f"{label}_command"])
        t0 = time.time()
        try:
            s.start()
            res[f"{label}_ready_s"] = time.time() - t0
            names = ["raw-16x16", "raw-32x8", "core-default"] if label == "dp2" else ["raw-16x16", "core-default"]
            res["targets"][label] = measure(label, s.base_url, s.model, args, pool, busy, names)
            save()
            if label == "dp2" and time.time() - T0 < args.deadline - 60:
                res["latency_dp2"] = [
                    latency(s.base_url, s.model, pool, m, args.bulk) for m in ("other-process", "same-client")
                ]
        except Exception as exc:
            res[f"{label}_error"] = f"{type(exc).__name__}: {exc}"[:2000]
            log(label, "failed", res[f"{label}_error"])
        finally:
            t0 = time.time()
            s.stop()
            res[f"{label}_stop_s"] = time.time() - t0
            time.sleep(2)
            res[f"gpu_after_{label}"] = gpu_state()
            log(f"after {label} stop", res[f"gpu_after_{label}"])
            save()
    # ---- summary
    one = med(res["targets"].get("1gpu-worker0", {}))
    print("\n| target | contender | tokens/s (median) | vs 1 GPU same contender |\n|---|---|---|---|")
    for t, r in res["targets"].items():
        for name, v in med(r).items():
            base = one.get(name) or one.get("core-default")
            print(f"| {t} | {name} | {v:,.0f} | {v / base:.2f}x |" if base else f"| {t} | {name} | {v:,.0f} | |")
        if "error" in r:
            print(f"| {t} | error | {r['error'][:200]} | |")
    res["summary"] = {t: med(r) for t, r in res["targets"].items()}
    save()
    log("total")


if __name__ == "__main__":
    main()
