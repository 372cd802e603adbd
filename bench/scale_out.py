"""Two GPUs, three ways: two single-GPU SGLang servers behind ``sglang-router``, one server with
``dp_size=2``, one with ``tp_size=2``; throughput of the raw generator and of our client, and the
router's own facts (argv, readiness endpoints, process tree, routes, shutdown).

    python bench/scale_out.py --model-dir DIR --out RESULTS_DIR [--workers FILE] [--tp] [--deadline S]
    python bench/scale_out.py --model-dir DIR --launch-workers FILE   # start the two workers, return

``--launch-workers`` starts the two single-GPU workers (the argv of ``SGLangServer(...).command()``,
one per GPU) in sessions of their own and returns at once, so a later command on the same machine
finds them warm (``--workers FILE``). Each target is measured with ``raw-16x16`` / ``raw-16x32``
(async httpx, 16 texts per request, 16 or 32 in flight, base64), ``raw-32x8`` (the client's default
request shape), ``core-default`` (our
``EmbeddingClient`` defaults) and ``core-c16`` (``max_concurrency=16``), interleaved rounds,
distinct texts; a target that fails is recorded with its error. Needs sglang and sglang-router
importable, 2 CUDA GPUs. Writes ``scale_out.json`` into ``--out``; prints a table last.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from dp_scaling import GpuBusy  # noqa: E402
from gpu_levers import Texts, raw  # noqa: E402

from qwen_sglang import EmbeddingClient  # noqa: E402
from qwen_sglang.servers import SGLangServer  # noqa: E402

COMMON = ["--disable-cuda-graph", "--grammar-backend", "none", "--sampling-backend", "pytorch"]
T0 = time.time()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server(model_dir: Path, gpus: str, **kw: Any) -> SGLangServer:
    return SGLangServer(
        model_dir,
        attention_backend="triton",
        mem_fraction_static=0.7,
        extra_args=COMMON,
        env={"CUDA_VISIBLE_DEVICES": gpus},
        log_path=Path(f"/tmp/scale-out/{kw.pop('name')}.log"),
        **kw,
    )


def launch_workers(model_dir: Path, file: Path) -> None:
    """Two workers, one per GPU, each in a session of its own (they outlive this command)."""
    Path("/tmp/scale-out").mkdir(exist_ok=True)
    workers = []
    for gpu in (0, 1):
        s = server(model_dir, str(gpu), name=f"worker{gpu}", port=31000 + 1000 * gpu)
        argv = s.command()
        log = open(f"/tmp/scale-out/worker{gpu}.log", "ab")  # noqa: SIM115  # the child keeps it
        env = dict(os.environ, CUDA_VISIBLE_DEVICES=str(gpu), PYTHONUNBUFFERED="1")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        workers.append(
            {"gpu": gpu, "pid": proc.pid, "url": s.root_url, "model": s.model, "argv": argv, "started": time.time()}
        )
    file.write_text(json.dumps(workers, indent=1))
    print(f"workers launched: {[w['url'] for w in workers]}", flush=True)


def wait_health(url: str, timeout: float = 400) -> float:
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            if httpx.get(url + "/health", timeout=5).status_code == 200:
                return time.time() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} not healthy after {timeout}s")


def contenders(base_url: str, model: str, names: list[str]) -> dict[str, Callable[[list[str]], int]]:
    def core(**settings: Any) -> Callable[[list[str]], int]:
        client = EmbeddingClient(base_url=base_url, model=model, **settings)

        def go(texts: list[str]) -> int:
            before = client.prompt_tokens
            assert len(client.embed_documents(texts)) == len(texts)
            return client.prompt_tokens - before

        return go

    table: dict[str, Callable[[list[str]], int]] = {
        "raw-16x16": lambda t: asyncio.run(raw(base_url, model, t, 16, 16)),
        "raw-16x32": lambda t: asyncio.run(raw(base_url, model, t, 16, 32)),
        "raw-32x8": lambda t: asyncio.run(raw(base_url, model, t, 32, 8)),  # the client's default shape
        "core-default": core(),
        "core-c16": core(max_concurrency=16),
    }
    return {k: v for k, v in table.items() if k in names}


def measure(
    label: str, base_url: str, model: str, args: argparse.Namespace, pool: Texts, busy: GpuBusy, names: list[str]
) -> dict[str, Any]:
    out: dict[str, Any] = {"target": label, "base_url": base_url}
    try:
        table = contenders(base_url, model, names)
        for fn in table.values():
            fn(pool.take(64))  # discovery and warm-up
        runs: dict[str, list[dict[str, Any]]] = {}
        for r in range(args.rounds):
            for name, fn in table.items():
                texts = pool.take(args.n)
                with busy:
                    t1 = time.perf_counter()
                    tokens = fn(texts)
                    wall = time.perf_counter() - t1
                row = {"texts_s": args.n / wall, "tokens_s": tokens / wall, "gpu_busy": busy.mean()}
                runs.setdefault(name, []).append(row)
                print(f"  {label} r{r + 1} {name:<12} {row['tokens_s']:8.0f} tok/s busy {row['gpu_busy']}", flush=True)
        out["runs"] = runs
    except Exception as exc:  # a target that fails is a result too
        out["error"] = f"{type(exc).__name__}: {exc}"[:1500]
        print(f"  {label} failed: {out['error'][:300]}", flush=True)
    return out


def probe(url: str, method: str, path: str, body: Any = None) -> dict[str, Any]:
    try:
        r = httpx.request(method, url + path, json=body, timeout=30)
        return {"status": r.status_code, "body": r.text[:300]}
    except httpx.HTTPError as exc:
        return {"error": f"{type(exc).__name__}: {exc}"[:300]}


ROUTES = [
    ("GET", "/health", None),
    ("GET", "/readiness", None),
    ("GET", "/liveness", None),
    ("GET", "/v1/models", None),
    ("GET", "/workers", None),
    ("GET", "/server_info", None),
    ("GET", "/get_server_info", None),
    ("GET", "/model_info", None),
    ("GET", "/get_model_info", None),
    ("POST", "/v1/embeddings", {"model": "default", "input": ["route check"], "encoding_format": "base64"}),
    ("POST", "/v1/score", {"query": "what is a cat", "items": ["a cat is an animal"], "label_token_ids": [9693, 2152]}),
    ("POST", "/v1/rerank", {"query": "what is a cat", "documents": ["a cat is an animal"]}),
    ("POST", "/v1/tokenize", {"prompt": "route check"}),
]


def process_tree(pid: int) -> list[str]:
    out = subprocess.run(
        ["ps", "-o", "pid,ppid,pgid,sid,nlwp,rss,args", "--forest", "--sid", str(os.getsid(pid))],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.splitlines()


def router_run(
    policy: str, workers: list[dict[str, Any]], args: argparse.Namespace, pool: Texts, busy: GpuBusy, names: list[str]
) -> dict[str, Any]:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "sglang_router.launch_router",
        "--worker-urls",
        *[w["url"] for w in workers],
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--policy",
        policy,
        "--log-level",
        "info",
    ]
    res: dict[str, Any] = {"policy": policy, "argv": argv}
    log = open(f"/tmp/scale-out/router-{policy}.log", "ab")  # noqa: SIM115
    t0 = time.time()
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    first: dict[str, float] = {}
    while time.time() - t0 < 120 and len(first) < 3 and proc.poll() is None:
        for path in ("/health", "/readiness", "/liveness"):
            if path not in first:
                try:
                    if httpx.get(url + path, timeout=2).status_code == 200:
                        first[path] = time.time() - t0
                except httpx.HTTPError:
                    pass
        time.sleep(0.1)
    res["first_200_s"] = first
    res["exited_early"] = proc.poll()
    print(f"router {policy}: first 200 {first} rc {proc.poll()}", flush=True)
    if proc.poll() is None:
        res["process_tree"] = process_tree(proc.pid)
        if policy == args.policies[0]:
            res["routes"] = {
                f"{m} {p}": {"router": probe(url, m, p, b), "worker": probe(workers[0]["url"], m, p, b)}
                for m, p, b in ROUTES
            }
            for k, v in res["routes"].items():
                via = {side: v[side].get("status", v[side].get("error")) for side in ("router", "worker")}
                print(f"  {k}: router {via['router']} worker {via['worker']}", flush=True)
        res["measure"] = measure(f"router-{policy}", url + "/v1", workers[0]["model"], args, pool, busy, names)
        t1 = time.time()
        proc.send_signal(signal.SIGTERM)
        try:
            res["sigterm_exit_s"] = proc.wait(60) is not None and time.time() - t1
        except subprocess.TimeoutExpired:
            res["sigterm_exit_s"] = None
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        res["returncode"] = proc.returncode
        res["workers_alive_after"] = [Path(f"/proc/{w['pid']}").exists() for w in workers]
    else:
        proc.wait()
    log.close()
    res["log_tail"] = Path(f"/tmp/scale-out/router-{policy}.log").read_text(errors="replace").splitlines()[-40:]
    return res


def stop_workers(workers: list[dict[str, Any]]) -> float:
    t0 = time.time()
    for w in workers:
        try:
            os.killpg(w["pid"], signal.SIGTERM)
        except ProcessLookupError:
            pass
    while time.time() - t0 < 60 and any(Path(f"/proc/{w['pid']}").exists() for w in workers):
        time.sleep(0.2)
    for w in workers:
        try:
            os.killpg(w["pid"], signal.SIGKILL)
        except ProcessLookupError:
            pass
    time.sleep(3)
    return time.time() - t0


def managed(
    label: str, args: argparse.Namespace, pool: Texts, busy: GpuBusy, names: list[str], **kw: Any
) -> dict[str, Any]:
    s = server(args.model_dir, "0,1", name=label, **kw)
    print(s.display_command(), flush=True)
    t0 = time.time()
    try:
        s.start()
    except Exception as exc:
        s.stop()
        return {"target": label, "error": str(exc)[:1500]}
    ready_s = time.time() - t0
    try:
        res = measure(label, s.base_url, s.model, args, pool, busy, names) | {"ready_s": ready_s}
        info = httpx.get(s.root_url + "/server_info", timeout=30).json()
        res["server_info"] = {k: info.get(k) for k in ("dp_size", "tp_size", "version")}
    finally:
        s.stop()
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--launch-workers", type=Path, default=None, help="start the two workers, write FILE, return")
    parser.add_argument("--workers", type=Path, default=None, help="use the workers FILE names (else start them)")
    parser.add_argument("--policies", nargs="+", default=["round_robin", "cache_aware"])
    parser.add_argument("--tp", action="store_true", help="also measure tp_size=2")
    parser.add_argument("--n", type=int, default=2400)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--deadline", type=float, default=330, help="skip what would start after this many seconds")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.launch_workers:
        launch_workers(args.model_dir, args.launch_workers)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    Path("/tmp/scale-out").mkdir(exist_ok=True)
    if args.workers is None:
        args.workers = Path("/tmp/scale-out/workers.json")
        launch_workers(args.model_dir, args.workers)
    workers = json.loads(args.workers.read_text())
    result: dict[str, Any] = {"command": " ".join(["python", *sys.argv]), "workers": workers, "targets": []}
    import torch

    result["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    out = args.out / "scale_out.json"
    for w in workers:
        w["health_wait_s"] = wait_health(w["url"])
        w["ready_since_start_s"] = time.time() - w["started"]
    print(f"workers healthy at {time.time() - T0:.0f}s: {[w['ready_since_start_s'] for w in workers]}", flush=True)
    pool = Texts(14 * args.rounds * args.n + 2000, seed=7)
    busy = GpuBusy()
    all4 = ["raw-16x16", "raw-16x32", "raw-32x8", "core-default", "core-c16"]
    result["targets"].append(
        measure(
            "worker0-direct",
            workers[0]["url"] + "/v1",
            workers[0]["model"],
            args,
            pool,
            busy,
            ["raw-16x16", "core-default"],
        )
    )
    result["routers"] = []
    for i, policy in enumerate(args.policies):
        names = all4 if i == 0 else ["raw-16x16", "core-default"]
        result["routers"].append(router_run(policy, workers, args, pool, busy, names))
        out.write_text(json.dumps(result, indent=1))
    result["workers_stop_s"] = stop_workers(workers)
    if time.time() - T0 < args.deadline - 150:
        result["targets"].append(managed("dp2", args, pool, busy, all4, dp_size=2))
        out.write_text(json.dumps(result, indent=1))
    if args.tp and time.time() - T0 < args.deadline - 150:
        result["targets"].append(managed("tp2", args, pool, busy, ["raw-16x16", "core-default"], tp_size=2))
    out.write_text(json.dumps(result, indent=1))
    print("\n| target | contender | tokens/s (median) | GPU busy % |\n|---|---|---|---|")
    rows = result["targets"] + [r["measure"] for r in result["routers"] if "measure" in r]
    for t in rows:
        for name, rs in t.get("runs", {}).items():
            med = statistics.median(r["tokens_s"] for r in rs)
            busy_pct = [round(statistics.fmean(c), 1) for c in zip(*(r["gpu_busy"] for r in rs), strict=True)]
            print(f"| {t['target']} | {name} | {med:,.0f} | {busy_pct} |")
        if "error" in t:
            print(f"| {t['target']} | error | {t['error'][:150]} | |")
    print(f"total {time.time() - T0:.0f}s")


if __name__ == "__main__":
    main()
