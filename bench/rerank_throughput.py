"""Reranking throughput: `RerankClient` vs a raw generator on the same ``/v1/score`` server vs
transformers in-process. Pairs (query, document) per second.

    # CPU, the local reranker backend started here (launch_server(task="rerank"); small sizes):
    python bench/rerank_throughput.py --serve .test-models/Qwen3-Reranker-test --queries 2 --docs 10
    # GPU: an SGLang reranker already running (served without --is-embedding), and the same
    # model directory for the in-process reference:
    python bench/rerank_throughput.py --base-url http://127.0.0.1:30001/v1 --model-dir DIR --device cuda \\
        --dtype bfloat16 --out results.json

The workload is the issue's: ``--queries`` queries (20) x ``--docs`` distinct documents (100) of
``--words`` random corpus words each (150: ~300 tokens with the prompt), ``--batch`` documents per
request (20), ``--parallel`` queries in flight (4). Both HTTP contenders have the same shape:
each query's requests go out together, queries at most ``--parallel`` at a time.

- ``raw``: ``httpx.AsyncClient`` posting prebuilt ``/v1/score`` bodies (Qwen's prompt as text,
  labels yes/no, ``apply_softmax``), nothing checked: the ceiling for any client;
- ``ours``: ``RerankClient.arerank`` (``batch_size=--batch``), prompt built, answers checked,
  results sorted;
- ``transformers``: Qwen's recipe in this process (``--model-dir``; left-padded batches of
  ``--batch`` pairs, the last position's logits), on ``--device``.

Rounds are interleaved (``--rounds``, 3) so a drifting machine load hits every contender alike;
the report gives each contender's median pairs/s and ours/raw per round (median). Also the
largest |score difference| between ours and raw (the same server: 0 up to batching noise).
Writes JSON to ``--out`` (and stdout).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qwen_sglang import RerankClient  # noqa: E402
from qwen_sglang.rerank_format import (  # noqa: E402
    DEFAULT_RERANK_INSTRUCTION,
    PREFIX,
    SUFFIX,
    RerankTemplate,
    format_body,
)

Workload = list[tuple[str, list[str]]]


def workload(n_queries: int, n_docs: int, words: int, seed: int) -> Workload:
    """Queries from the shipped eval set, documents of random corpus words (distinct: no cache hit)."""
    data = ROOT / "qwen_sglang" / "data"
    queries = [json.loads(line)["text"] for line in (data / "eval_queries.jsonl").read_text().splitlines() if line]
    corpus = [json.loads(line)["text"] for line in (data / "demo_corpus.jsonl").read_text().splitlines() if line]
    vocab = [w for doc in corpus for w in doc.split()]
    rng = random.Random(seed)
    return [
        (
            rng.choice(queries),
            [
                f"[{seed}:{rng.random():.6f}] " + " ".join(rng.choice(vocab) for _ in range(words))
                for _ in range(n_docs)
            ],
        )
        for _ in range(n_queries)
    ]


# ----------------------------------------------------------------------------- contenders
async def run_raw(url: str, bodies: list[list[dict[str, Any]]], parallel: int) -> tuple[list[list[float]], int]:
    """Post each query's prebuilt bodies together, ``parallel`` queries at a time."""
    gate = asyncio.Semaphore(parallel)
    tokens = 0
    limits = httpx.Limits(max_connections=parallel * max(len(b) for b in bodies) + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:

        async def post(body: dict[str, Any]) -> list[float]:
            nonlocal tokens
            r = await client.post(url + "/score", json=body)
            r.raise_for_status()
            answer = r.json()
            tokens += int((answer.get("usage") or {}).get("prompt_tokens") or 0)
            return [row[0] for row in answer["scores"]]

        async def query(requests: list[dict[str, Any]]) -> list[float]:
            async with gate:
                parts = await asyncio.gather(*(post(b) for b in requests))
            return [s for part in parts for s in part]

        scores = await asyncio.gather(*(query(b) for b in bodies))
    return scores, tokens


async def run_ours(client: RerankClient, work: Workload, parallel: int) -> list[list[float]]:
    gate = asyncio.Semaphore(parallel)

    async def query(q: str, docs: list[str]) -> list[float]:
        async with gate:
            results = await client.arerank(q, docs)
        by_index = {r.index: r.score for r in results}
        return [by_index[i] for i in range(len(docs))]

    return list(await asyncio.gather(*(query(q, d) for q, d in work)))


def raw_bodies(work: Workload, batch: int, template: RerankTemplate) -> list[list[dict[str, Any]]]:
    labels = [template.yes_id, template.no_id]
    out = []
    for q, docs in work:
        head = PREFIX + format_body(q, "", DEFAULT_RERANK_INSTRUCTION)
        out.append(
            [
                {
                    "query": head,
                    "items": [d + SUFFIX for d in docs[i : i + batch]],
                    "label_token_ids": labels,
                    "apply_softmax": True,
                }
                for i in range(0, len(docs), batch)
            ]
        )
    return out


class Reference:
    """Qwen's recipe with transformers, in this process."""

    def __init__(self, model_dir: str, device: str, dtype: str) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.device = device
        self.tok = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
        model: Any = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype))
        self.model = model.to(device).eval()
        self.template = RerankTemplate.from_tokenizer(
            lambda texts: self.tok(texts, add_special_tokens=False)["input_ids"]
        )

    def score(self, work: Workload, batch: int, max_length: int) -> list[list[float]]:
        torch = self.torch
        out = []
        for q, docs in work:
            bodies = self.tok([format_body(q, d) for d in docs], add_special_tokens=False)["input_ids"]
            ids = [self.template.pair_ids(b, max_length=max_length) for b in bodies]
            scores: list[float] = []
            for i in range(0, len(ids), batch):
                padded = self.tok.pad({"input_ids": ids[i : i + batch]}, padding=True, return_tensors="pt").to(
                    self.device
                )
                with torch.no_grad():
                    logits = self.model(**padded, logits_to_keep=1).logits[:, -1, :].float()
                pair = torch.stack([logits[:, self.template.yes_id], logits[:, self.template.no_id]], dim=1)
                scores += torch.softmax(pair, dim=1)[:, 0].tolist()
            if self.device.startswith("cuda"):
                torch.cuda.synchronize()
            out.append(scores)
        return out


# ----------------------------------------------------------------------------- the run
def run(args: argparse.Namespace, base_url: str) -> dict[str, Any]:
    client = RerankClient(base_url=base_url, batch_size=args.batch, max_concurrency=args.batch + 4, timeout=600)
    facts = client.discover()
    template = RerankTemplate.from_tokenizer(lambda texts: client_tokenize(base_url, texts))
    max_length = (facts.max_model_len or 32768) - 1
    reference = Reference(args.model_dir, args.device, args.dtype) if args.model_dir else None
    asyncio.run(run_ours(client, workload(1, args.batch, args.words, seed=10_000), 1))  # warm-up (and discovery)
    pairs = args.queries * args.docs
    rates: dict[str, list[float]] = {"ours": [], "raw": []}
    if reference is not None:
        rates["transformers"] = []
    ratios, deltas, ref_deltas, tokens = [], [], [], 0
    for r in range(args.rounds):
        work = workload(args.queries, args.docs, args.words, seed=r + 1)  # distinct documents each round
        bodies = raw_bodies(work, args.batch, template)
        order = ["raw", "ours"] if r % 2 == 0 else ["ours", "raw"]
        got: dict[str, Any] = {}
        for name in order:
            if name == "raw":
                t0 = time.perf_counter()
                got["raw"], tokens = asyncio.run(run_raw(base_url, bodies, args.parallel))
            else:
                t0 = time.perf_counter()
                got["ours"] = asyncio.run(run_ours(client, work, args.parallel))
            rates[name].append(pairs / (time.perf_counter() - t0))
        ratios.append(rates["ours"][-1] / rates["raw"][-1])
        deltas.append(
            max(abs(a - b) for x, y in zip(got["ours"], got["raw"], strict=True) for a, b in zip(x, y, strict=True))
        )
        if reference is not None:
            t0 = time.perf_counter()
            ref = reference.score(work, args.batch, max_length)
            rates["transformers"].append(pairs / (time.perf_counter() - t0))
            ref_deltas.append(
                max(abs(a - b) for x, y in zip(got["ours"], ref, strict=True) for a, b in zip(x, y, strict=True))
            )
    report: dict[str, Any] = {
        "server": base_url if not args.serve else f"{args.backend} backend: {args.serve}",
        "model": facts.served_name,
        "workload": {k: getattr(args, k) for k in ("queries", "docs", "words", "batch", "parallel", "rounds")},
        "mean_prompt_tokens": tokens / pairs if tokens else None,
        "pairs_s": {name: statistics.median(v) for name, v in rates.items()},
        "pairs_s_rounds": rates,
        "ours_over_raw": statistics.median(ratios),
        "ours_over_raw_rounds": ratios,
        "max_abs_delta_ours_raw": max(deltas),
    }
    if reference is not None:
        report["max_abs_delta_ours_transformers"] = max(ref_deltas)
        report["transformers"] = {"device": args.device, "dtype": args.dtype}
    return report


def client_tokenize(base_url: str, texts: list[str]) -> list[list[int]]:
    root = base_url.removesuffix("/v1")
    r = httpx.post(root + "/v1/tokenize", json={"prompt": texts, "add_special_tokens": False}, timeout=60)
    r.raise_for_status()
    tokens: list[list[int]] = r.json()["tokens"]
    return tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--base-url", help="a reranker server that is already running (…/v1)")
    src.add_argument("--serve", metavar="MODEL_DIR", help="start a managed reranker server for this model")
    parser.add_argument("--backend", choices=["auto", "sglang", "local"], default="local", help="for --serve")
    parser.add_argument("--model-dir", default=None, help="the same model, for the transformers contender")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--docs", type=int, default=100)
    parser.add_argument("--words", type=int, default=150)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.serve and args.model_dir is None:
        args.model_dir = args.serve
    with contextlib.ExitStack() as stack:
        if args.serve:
            from qwen_sglang.servers import launch_server

            base_url = stack.enter_context(launch_server(args.serve, args.backend, task="rerank")).base_url
        else:
            base_url = args.base_url.rstrip("/")
        report = run(args, base_url)
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
