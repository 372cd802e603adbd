"""Issue 18 on a GPU: OUR RerankClient against a real SGLang reranker started by OUR
launch_server(task="rerank"): parity vs transformers (bf16 floor as in round 1) and throughput
(ours vs raw generator vs transformers in-process, bench/rerank_throughput.py's run()).

    python bench/gpu_rerank_client.py --tokenizer /tmp/qtok --work /tmp/rerank2 --out OUT --gpu 1 \\
        [--backend sglang|local]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

T0 = time.time()


def log(*a: Any) -> None:
    print(f"[{time.time() - T0:6.1f}s]", *a, flush=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--tokenizer", type=Path, required=True)
    p.add_argument("--work", type=Path, default=Path("/tmp/rerank2"))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--gpu", default="1")
    p.add_argument("--backend", default="sglang")
    p.add_argument("--device", default="cuda")
    p.add_argument("--queries", type=int, default=20)
    p.add_argument("--docs", type=int, default=100)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--parity-queries", type=int, default=50)
    p.add_argument("--model-dir", type=Path, default=None, help="skip the build: use this model")
    args = p.parse_args()
    os.environ["CUDA_VISIBLE_DEVICES"] = args.gpu
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    import rerank_parity as rp

    from qwen_sglang import RerankClient
    from qwen_sglang.servers import launch_server

    result: dict[str, Any] = {"errors": {}}
    out = args.out / "rerank_client.json"

    def save() -> None:
        out.write_text(json.dumps(result, indent=1))

    if args.model_dir is None:
        model_dir = args.work / "Qwen3-Reranker-0.6B-random"
        meta = rp.build_model(model_dir, args.tokenizer)
    else:
        model_dir = args.model_dir
        meta = {}
        from transformers import AutoTokenizer

        t = AutoTokenizer.from_pretrained(str(model_dir))
        meta["yes_id"], meta["no_id"] = t.convert_tokens_to_ids("yes"), t.convert_tokens_to_ids("no")
    result["meta"] = meta
    log("model", model_dir, meta)
    yes, no = meta["yes_id"], meta["no_id"]

    # the server, started by our launch_server in a thread while the references are computed
    opts: dict[str, Any] = {}
    if args.backend == "sglang":
        opts = {
            "env": {"CUDA_VISIBLE_DEVICES": args.gpu},
            "attention_backend": "triton",
            "dtype": "bfloat16",
            "extra_args": ["--disable-cuda-graph", "--grammar-backend", "none", "--sampling-backend", "pytorch"],
            "log_path": str(args.work / "server.log"),
        }
    server = launch_server(model_dir, args.backend, task="rerank", start=False, **opts)  # type: ignore[arg-type]
    result["server_command"] = server.display_command() if hasattr(server, "display_command") else None
    log("server command", result["server_command"])
    box: dict[str, Any] = {}

    def start() -> None:
        t0 = time.time()
        try:
            server.start()
            box["ready_s"] = time.time() - t0
        except BaseException as exc:
            box["error"] = f"{type(exc).__name__}: {exc}"[:2000]

    th = threading.Thread(target=start, daemon=True)
    th.start()
    try:
        tok = rp.load_tokenizer(model_dir)
        qs, docs = rp.parity_set()
        qs, docs = qs[: args.parity_queries], docs[: args.parity_queries]
        ids = [rp.prompt_ids(tok, q, d) for q, ds in zip(qs, docs, strict=True) for d in ds]
        ref: dict[str, list[float]] = {}
        rates: dict[str, float] = {}
        tq, td = rp.throughput_set(20, 100, 0)
        timed = [rp.prompt_ids(tok, q, d) for q, ds in zip(tq, td, strict=True) for d in ds]
        if args.device == "cuda":
            for dt in ("float32", "bfloat16"):
                ref[dt], rates[dt] = rp.reference(model_dir, ids, dt, yes, no, timed)
        log("references done", rates)
        th.join(450)
        if th.is_alive() or "error" in box:
            raise RuntimeError(f"launch_server(task='rerank') failed: {box.get('error')}")
        result["server_ready_s"] = box.get("ready_s")
        log("server ready", box, server.base_url)
        client = RerankClient(base_url=server.base_url, timeout=600)
        got: dict[str, list[float]] = {"ours": []}
        t0 = time.perf_counter()
        for q, ds in zip(qs, docs, strict=True):
            by = {r.index: r.score for r in client.rerank(q, ds)}
            got["ours"] += [by[i] for i in range(len(ds))]
        result["ours_parity_wall_s"] = time.perf_counter() - t0
        try:
            got["raw_score_text"] = rp.route_scores(
                server.root_url, "/v1/score", rp.score_bodies(tok, qs, docs, yes, no, as_ids=False)
            )
        except Exception as exc:
            result["errors"]["raw_score_text"] = repr(exc)[:500]
        if ref:
            got["hf_bf16"] = ref["bfloat16"]
            result["parity"] = {
                name: {"vs_fp32": rp.compare(s, ref["float32"]), "vs_bf16": rp.compare(s, ref["bfloat16"])}
                for name, s in got.items()
            }
            result["reference_pairs_s"] = rates
        if "raw_score_text" in got:
            result["ours_vs_raw_max_abs"] = max(
                abs(a - b) for a, b in zip(got["ours"], got["raw_score_text"], strict=True)
            )
        result["scores_first_query"] = {k: v[:20] for k, v in got.items()}
        save()
        log("parity", json.dumps(result.get("parity"), indent=None))
        # throughput: RR's bench, same server
        import rerank_throughput as rt

        targs = argparse.Namespace(
            queries=args.queries,
            docs=args.docs,
            words=150,
            batch=20,
            parallel=4,
            rounds=args.rounds,
            model_dir=str(model_dir),
            device=args.device,
            dtype="bfloat16" if args.device == "cuda" else "float32",
            serve=None,
            backend=args.backend,
            base_url=server.base_url,
        )
        result["throughput"] = rt.run(targs, server.base_url)
        save()
        log("throughput", json.dumps(result["throughput"]))
    except Exception:
        result["errors"]["main"] = traceback.format_exc()[-3000:]
        log("FAILED", result["errors"]["main"])
    finally:
        t0 = time.time()
        server.stop()
        result["stop_s"] = time.time() - t0
        save()
        if args.backend == "sglang":
            os.system(
                "nvidia-smi --query-gpu=index,memory.used --format=csv; "
                "pgrep -fa sglang.launch_server || echo 'no sglang server left'"
            )
    log("done")


if __name__ == "__main__":
    main()
