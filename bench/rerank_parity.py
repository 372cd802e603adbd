"""Qwen3-Reranker on SGLang: which route reproduces Qwen's exact score, and how fast.

    python bench/rerank_parity.py --tokenizer TOKENIZER_DIR --work /tmp/rerank --out RESULTS_DIR

Needs a CUDA GPU, sglang (0.5.17 tested), torch and transformers. On the GPU it builds a
random-weight ``Qwen3ForCausalLM`` of the real Qwen3-Reranker-0.6B shape with Qwen's real
tokenizer (``TOKENIZER_DIR``: a ``tokenizer.json`` as ``qwen_sglang.testing.models`` builds it; the
reranker's tokenizer appends no end token, so the post-processor is dropped), scales the tied
"yes"/"no" rows so that P(yes) spreads over (0, 1), saves it in bf16 and starts one SGLang server
WITHOUT ``--is-embedding``, with ``--chat-template`` = SGLang's
``examples/chat_template/qwen3_reranker.jinja`` (no ``<think>\\n\\n</think>\\n\\n`` suffix; its
default instruction ends with a period).

The reference is Qwen's formula computed with transformers on the same GPU (bf16 and fp32
forward of the exact prompt ids: prefix + body + suffix, softmax over the "yes"/"no" logits of the
next token). Routes compared on 50 queries x 20 documents (20-400 tokens): ``/v1/score`` with
the client-built prompt as text and as token ids; ``/v1/rerank`` through the template, with and
without ``instruct``; and ``/v1/score`` fed the template's prompt rendered by the client, which
must equal ``/v1/rerank`` (the handler renders the template, scores the text through the same
``score_request`` and returns p_yes / (p_yes + p_no)): so a template WITH the suffix would
reproduce the reference exactly as ``/v1/score`` text does. Then pairs/s of ``/v1/score`` at
~300-token documents, 20 documents per request, several requests in flight, against
transformers in-process.

Writes ``rerank_parity.json`` (all numbers) and ``rerank_samples.json`` (exact requests and
answers of each route) into ``--out``; prints a table last.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"

# sgl-project/sglang examples/chat_template/qwen3_reranker.jinja (read 2026-11-27). SGLang strips
# the file's trailing newlines and turns the two characters "\n" into newlines when it loads it.
SGLANG_TEMPLATE = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the Instruct "
    'provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
    '<Instruct>: {{ instruct | default("Given a web search query, retrieve relevant passages that answer the '
    'query.") }}\n<Query>: {{ messages[0]["content"] }}\n<Document>: {{ messages[1]["content"] }}<|im_end|>\n'
    "<|im_start|>assistant{{ '\\n' }}"
)
SHAPE = {
    "hidden_size": 1024,
    "intermediate_size": 3072,
    "num_hidden_layers": 28,
    "num_attention_heads": 16,
    "num_key_value_heads": 8,
    "head_dim": 128,
}
VOCAB = 151669
DEVICE = "cuda"


def sglang_template_prompt(query: str, document: str) -> str:
    """What SGLang's qwen3_reranker.jinja renders with ``instruct`` = Qwen's default: Qwen's
    prompt without the ``<think>\\n\\n</think>\\n\\n`` suffix."""
    return PREFIX + body(query, document) + "<|im_end|>\n<|im_start|>assistant\n"


def body(query: str, document: str, instruction: str = DEFAULT_INSTRUCTION) -> str:
    return f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}"


# ----------------------------------------------------------------------------- data
def corpus() -> tuple[list[str], list[str]]:
    data = ROOT / "qwen_sglang" / "data"
    docs = [json.loads(line)["text"] for line in (data / "demo_corpus.jsonl").read_text().splitlines() if line]
    queries = [json.loads(line)["text"] for line in (data / "eval_queries.jsonl").read_text().splitlines() if line]
    return queries, docs


def parity_set(seed: int = 0) -> tuple[list[str], list[list[str]]]:
    """50 queries x 20 documents of 1-12 corpus passages (~20-400 tokens), seeded."""
    rng = random.Random(seed)
    queries, docs = corpus()
    qs = rng.sample(queries, 50)
    return qs, [[" ".join(rng.sample(docs, rng.randint(1, 12))) for _ in range(20)] for _ in qs]


def throughput_set(n_queries: int, n_docs: int, seed: int) -> tuple[list[str], list[list[str]]]:
    """Distinct ~300-token documents (the seed keeps sets of different runs apart)."""
    rng = random.Random(seed)
    queries, docs = corpus()
    words = [w for d in docs for w in d.split()]
    out = []
    for _ in range(n_queries):
        out.append(
            [f"[{seed}:{rng.random():.6f}] " + " ".join(rng.choice(words) for _ in range(150)) for _ in range(n_docs)]
        )
    return [rng.choice(queries) for _ in range(n_queries)], out


# ----------------------------------------------------------------------------- model
def load_tokenizer(tokenizer_dir: Path) -> Any:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    tok.post_processor = None  # Qwen3-Reranker's tokenizer appends no <|endoftext|>
    return tok


def prompt_ids(tok: Any, query: str, document: str, instruction: str = DEFAULT_INSTRUCTION) -> list[int]:
    """Qwen's reference: prefix ids + body ids + suffix ids, each without special tokens."""
    enc = [tok.encode(t, add_special_tokens=False).ids for t in (PREFIX, body(query, document, instruction), SUFFIX)]
    return [i for part in enc for i in part]


def build_model(out: Path, tokenizer_dir: Path, seed: int = 0, init: float = 0.2) -> dict[str, Any]:
    """Random-weight reranker of the 0.6B shape, bf16, with the yes/no rows scaled for spread."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    tok = load_tokenizer(tokenizer_dir)
    yes, no = tok.token_to_id("yes"), tok.token_to_id("no")
    torch.manual_seed(seed)
    config = Qwen3Config(
        vocab_size=VOCAB,
        **SHAPE,
        max_position_embeddings=40960,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        initializer_range=init,
        bos_token_id=151643,
        eos_token_id=151645,
        pad_token_id=151643,
    )
    with torch.device(DEVICE):
        model = Qwen3ForCausalLM(config).eval()
    qs, docs = parity_set(seed=99)  # calibration prompts, not the measured ones
    ids = [prompt_ids(tok, q, d) for q, ds in zip(qs[:5], docs[:5], strict=True) for d in ds]
    w = model.get_output_embeddings().weight
    h = last_hidden(model.model, ids).float()
    with torch.no_grad():
        # Centre the yes-no logit gap (move w_yes along the mean hidden state), then scale both
        # rows so that its standard deviation is 2: P(yes) spreads over (0, 1).
        gap = h @ (w[yes] - w[no])
        mean_h = h.mean(0)
        w[yes] -= gap.mean() * mean_h / mean_h.dot(mean_h)
        gap = h @ (w[yes] - w[no])
        scale = 2.0 / float(gap.std())
        w[yes] *= scale
        w[no] *= scale
    model = model.to(torch.bfloat16)
    if out.exists():
        shutil.rmtree(out)
    model.save_pretrained(str(out), safe_serialization=True)
    cfg = json.loads((out / "config.json").read_text())
    cfg.update(architectures=["Qwen3ForCausalLM"], rope_theta=1_000_000.0, torch_dtype="bfloat16", dtype="bfloat16")
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    tok.save(str(out / "tokenizer.json"))
    tcfg = json.loads((tokenizer_dir / "tokenizer_config.json").read_text())
    tcfg.update(eos_token="<|im_end|>", pad_token="<|endoftext|>", padding_side="left")
    (out / "tokenizer_config.json").write_text(json.dumps(tcfg, indent=2))
    del model
    torch.cuda.empty_cache()
    return {"yes_id": yes, "no_id": no, "row_scale": scale, "initializer_range": init}


def last_hidden(base: Any, batch_ids: list[list[int]], chunk: int = 20) -> Any:
    """Final-norm hidden state at each prompt's last token (right padding: a causal model never
    attends to later positions, so the real tokens are untouched by the padding)."""
    import torch

    out = []
    with torch.inference_mode():
        for i in range(0, len(batch_ids), chunk):
            part = batch_ids[i : i + chunk]
            x = torch.full((len(part), max(len(p) for p in part)), 151643, dtype=torch.long, device=DEVICE)
            for j, p in enumerate(part):
                x[j, : len(p)] = torch.tensor(p, device=DEVICE)
            h = base(input_ids=x).last_hidden_state
            ends = torch.tensor([len(p) - 1 for p in part], device=DEVICE)
            out.append(h[torch.arange(len(part), device=DEVICE), ends])
    return torch.cat(out)


def logit_pairs(base: Any, rows: Any, batch_ids: list[list[int]], dtype: Any) -> Any:
    """The yes/no logits of the next token after each prompt, computed in ``dtype``."""
    return (last_hidden(base, batch_ids).to(dtype) @ rows.to(dtype).T).float()


def reference(
    model_dir: Path, ids: list[list[int]], dtype_name: str, yes: int, no: int, timed: list[list[int]]
) -> tuple[list[float], float]:
    """P(yes) = softmax over the yes/no logits, transformers on this GPU; and pairs/s on ``timed``
    (batches of 20, right padding)."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype = getattr(torch, dtype_name)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype).to(DEVICE).eval()
    rows = model.get_output_embeddings().weight[[yes, no]]
    logit_pairs(model.model, rows, ids[:20], dtype)  # warm-up
    pairs = logit_pairs(model.model, rows, ids, dtype)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    logit_pairs(model.model, rows, timed, dtype)
    torch.cuda.synchronize()
    rate = len(timed) / (time.perf_counter() - t0)
    p = torch.softmax(pairs, dim=-1)[:, 0].tolist()
    del model
    torch.cuda.empty_cache()
    return p, rate


# ----------------------------------------------------------------------------- servers
def start_server(model_dir: Path, port: int, template: Path, log: Path, gpu: str) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "sglang.launch_server", "--model-path", str(model_dir), "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--chat-template", str(template), "--mem-fraction-static", "0.35"]
    argv += ["--attention-backend", "triton", "--disable-cuda-graph", "--grammar-backend", "none"]
    argv += ["--sampling-backend", "pytorch", "--dtype", "bfloat16", "--context-length", "8192"]
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=gpu, PYTHONUNBUFFERED="1")
    return subprocess.Popen(argv, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env, start_new_session=True)


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float) -> float:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server {url} exited with {proc.returncode}")
        try:
            if httpx.get(url + "/health", timeout=5).status_code == 200:
                return time.time() - t0
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise TimeoutError(url)


# ----------------------------------------------------------------------------- routes
async def post_all(url: str, bodies: list[dict[str, Any]], concurrency: int) -> list[Any]:
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=concurrency + 2)) as client:

        async def one(b: dict[str, Any]) -> Any:
            async with limit:
                r = await client.post(url, json=b)
            if r.status_code != 200:
                raise RuntimeError(f"{url}: {r.status_code} {r.text[:300]}")
            return r.json()

        return await asyncio.gather(*(one(b) for b in bodies))


def score_bodies(tok: Any, qs: list[str], docs: list[list[str]], yes: int, no: int, as_ids: bool) -> list[Any]:
    out = []
    for q, ds in zip(qs, docs, strict=True):
        head = PREFIX + f"<Instruct>: {DEFAULT_INSTRUCTION}\n<Query>: {q}\n<Document>: "
        if as_ids:
            prefix_ids = tok.encode(PREFIX, add_special_tokens=False).ids
            items = [prompt_ids(tok, q, d)[len(prefix_ids) :] for d in ds]
            out.append({"query": prefix_ids, "items": items, "label_token_ids": [yes, no], "apply_softmax": True})
        else:
            items_text = [d + SUFFIX for d in ds]
            out.append({"query": head, "items": items_text, "label_token_ids": [yes, no], "apply_softmax": True})
    return out


def route_scores(url: str, route: str, bodies: list[dict[str, Any]]) -> list[float]:
    answers = asyncio.run(post_all(url + route, bodies, 8))
    if route == "/v1/score":
        return [s[0] for a in answers for s in a["scores"]]
    flat: list[float] = []
    for a, b in zip(answers, bodies, strict=True):
        by_index = {item["index"]: item["score"] for item in a}
        flat += [by_index[i] for i in range(len(b["documents"]))]
    return flat


def compare(got: list[float], ref: list[float], per: int = 20) -> dict[str, float]:
    deltas = [abs(a - b) for a, b in zip(got, ref, strict=True)]
    same_order = same_top = 0
    groups = len(ref) // per
    for g in range(groups):
        a, b = got[g * per : (g + 1) * per], ref[g * per : (g + 1) * per]
        oa = sorted(range(per), key=lambda i: -a[i])
        ob = sorted(range(per), key=lambda i: -b[i])
        same_order += oa == ob
        same_top += set(oa[:5]) == set(ob[:5])
    deltas.sort()
    return {
        "max_abs": deltas[-1],
        "mean_abs": statistics.fmean(deltas),
        "p99_abs": deltas[int(0.99 * (len(deltas) - 1))],
        "same_order": same_order / groups,
        "same_top5_set": same_top / groups,
    }


def samples(url: str, tok: Any, yes: int, no: int) -> dict[str, Any]:
    """Exact request and answer bodies of each route (short documents), and some error answers."""
    q, docs = "What is SGLang?", ["SGLang is a serving engine.", "Paris is in France."]
    reqs = {
        "score_text": score_bodies(tok, [q], [docs], yes, no, as_ids=False)[0],
        "score_ids": score_bodies(tok, [q], [docs], yes, no, as_ids=True)[0],
        "score_no_softmax": dict(score_bodies(tok, [q], [docs], yes, no, as_ids=False)[0], apply_softmax=False),
        "score_missing_labels": {"query": "a", "items": ["b"]},
        "score_empty_items": {"query": "a", "items": [], "label_token_ids": [yes, no]},
        "rerank": {"query": q, "documents": docs, "instruct": DEFAULT_INSTRUCTION},
        "rerank_top_n_no_docs": {"query": q, "documents": docs, "top_n": 1, "return_documents": False},
        "rerank_empty_doc": {"query": q, "documents": ["ok", " "]},
    }
    out = {}
    for name, req in reqs.items():
        route = "/v1/rerank" if name.startswith("rerank") else "/v1/score"
        r = httpx.post(url + route, json=req, timeout=60)
        try:
            answer = r.json()
        except ValueError:
            answer = r.text
        out[name] = {"route": route, "request": req, "status": r.status_code, "response": answer}
    for path in ("/server_info", "/model_info"):
        info = httpx.get(url + path, timeout=30).json()
        keep = ("is_generation", "model_path", "dp_size", "tp_size", "chat_template", "version")
        out[path] = {k: info[k] for k in keep if k in info}
    return out


def throughput(url: str, tok: Any, yes: int, no: int, concurrency: int, seed: int, route: str) -> dict[str, Any]:
    """20 queries x 100 distinct ~300-token documents, 20 documents per request."""
    qs, docs = throughput_set(20, 100, seed)
    groups = [(q, ds[i : i + 20]) for q, ds in zip(qs, docs, strict=True) for i in range(0, len(ds), 20)]
    if route == "rerank":
        bodies = [
            {"query": q, "documents": ds, "instruct": DEFAULT_INSTRUCTION, "return_documents": False}
            for q, ds in groups
        ]
    else:
        bodies = [score_bodies(tok, [q], [ds], yes, no, route == "ids")[0] for q, ds in groups]
    tokens = sum(len(prompt_ids(tok, q, d)) for q, ds in groups for d in ds)
    t0 = time.perf_counter()
    answers = asyncio.run(post_all(url + ("/v1/rerank" if route == "rerank" else "/v1/score"), bodies, concurrency))
    wall = time.perf_counter() - t0
    assert sum(len(a["scores"] if route != "rerank" else a) for a in answers) == 2000
    return {
        "route": route,
        "concurrency": concurrency,
        "pairs_s": 2000 / wall,
        "tokens_s": tokens / wall,
        "mean_tokens": tokens / 2000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/rerank"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--gpu", default="1", help="CUDA_VISIBLE_DEVICES for the servers and the reference")
    args = parser.parse_args()
    os.environ["CUDA_VISIBLE_DEVICES"] = args.gpu
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    model_dir = args.work / "Qwen3-Reranker-0.6B-random"
    t0 = time.time()
    meta = build_model(model_dir, args.tokenizer)
    meta["build_s"] = time.time() - t0
    yes, no = meta["yes_id"], meta["no_id"]
    print("model built", meta, flush=True)
    template = args.work / "qwen3_reranker.jinja"
    template.write_text(SGLANG_TEMPLATE)
    log = args.work / "server.log"
    proc = start_server(model_dir, 31000, template, log, args.gpu)
    try:
        run(args, model_dir, meta, ("http://127.0.0.1:31000", proc), yes, no)
    except BaseException:
        print("server log tail:\n" + "\n".join(log.read_text(errors="replace").splitlines()[-60:]), flush=True)
        raise
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its scheduler/detokenizer children
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        time.sleep(3)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def run(args: argparse.Namespace, model_dir: Path, meta: dict[str, Any], server: Any, yes: int, no: int) -> None:
    tok = load_tokenizer(model_dir)
    qs, docs = parity_set()
    ids = [prompt_ids(tok, q, d) for q, ds in zip(qs, docs, strict=True) for d in ds]
    text_ids = [
        tok.encode(PREFIX + body(q, d) + SUFFIX, add_special_tokens=False).ids
        for q, ds in zip(qs, docs, strict=True)
        for d in ds
    ]
    meta["whole_text_tokenises_like_parts"] = sum(a == b for a, b in zip(ids, text_ids, strict=True)) / len(ids)
    meta["prompt_tokens"] = {
        "min": min(map(len, ids)),
        "max": max(map(len, ids)),
        "mean": statistics.fmean(map(len, ids)),
    }
    ref: dict[str, list[float]] = {}
    rates: dict[str, float] = {}
    tq, td = throughput_set(20, 100, 0)
    timed = [prompt_ids(tok, q, d) for q, ds in zip(tq, td, strict=True) for d in ds]
    for dt in ("float32", "bfloat16"):  # while the server warms up
        ref[dt], rates[dt] = reference(model_dir, ids, dt, yes, no, timed)
    meta["p_yes_ref_fp32"] = {
        "min": min(ref["float32"]),
        "max": max(ref["float32"]),
        "stdev": statistics.stdev(ref["float32"]),
    }
    url, proc = server
    meta["server_ready_s"] = wait_ready(url, proc, 400)
    rerank = [{"query": q, "documents": ds, "return_documents": False} for q, ds in zip(qs, docs, strict=True)]
    with_instr = [dict(b, instruct=DEFAULT_INSTRUCTION) for b in rerank]
    template_prompts = [
        {
            "query": "",
            "items": [sglang_template_prompt(q, d) for d in ds],
            "label_token_ids": [yes, no],
            "apply_softmax": True,
        }
        for q, ds in zip(qs, docs, strict=True)
    ]
    routes = {
        "score_text": ("/v1/score", score_bodies(tok, qs, docs, yes, no, as_ids=False)),
        "score_ids": ("/v1/score", score_bodies(tok, qs, docs, yes, no, as_ids=True)),
        "rerank_template_instruct": ("/v1/rerank", with_instr),
        "rerank_template_default": ("/v1/rerank", rerank),
        "score_text_template_prompt": ("/v1/score", template_prompts),
    }
    got: dict[str, list[float]] = {}
    errors: dict[str, str] = {}
    for name, (route, bodies) in routes.items():
        try:
            got[name] = route_scores(url, route, bodies)
        except Exception as exc:  # keep measuring the other routes
            errors[name] = repr(exc)[:500]
            print(f"{name} failed: {exc!r}", flush=True)
    got["hf_bf16"] = ref["bfloat16"]
    if "rerank_template_instruct" in got and "score_text_template_prompt" in got:
        same = got["rerank_template_instruct"], got["score_text_template_prompt"]
        meta["rerank_equals_score_of_template_prompt_max_abs"] = max(abs(a - b) for a, b in zip(*same, strict=True))
    results: dict[str, Any] = {"meta": meta, "reference_pairs_s": rates, "routes": {}, "errors": errors}
    for name, scores in got.items():
        results["routes"][name] = {
            "vs_fp32": compare(scores, ref["float32"]),
            "vs_bf16": compare(scores, ref["bfloat16"]),
        }
    results["scores_first_query"] = {k: v[:20] for k, v in got.items()} | {"hf_fp32": ref["float32"][:20]}
    (args.out / "rerank_parity.json").write_text(json.dumps(results, indent=1))
    (args.out / "rerank_samples.json").write_text(json.dumps(samples(url, tok, yes, no), indent=1))
    tp = []
    for seed, conc, route in ((1, 4, "ids"), (2, 8, "ids"), (3, 16, "ids"), (4, 8, "text"), (5, 8, "rerank")):
        try:
            tp.append(throughput(url, tok, yes, no, conc, seed, route))
        except Exception as exc:
            errors[f"throughput_{route}_{conc}"] = repr(exc)[:500]
    results["throughput"] = tp
    (args.out / "rerank_parity.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(meta, indent=1))
    print(
        "\n| route | vs fp32 max | mean | same order | vs bf16 max | mean | same order |\n|---|---|---|---|---|---|---|"
    )
    for name, r in results["routes"].items():
        a, b = r["vs_fp32"], r["vs_bf16"]
        print(
            f"| {name} | {a['max_abs']:.4f} | {a['mean_abs']:.5f} | {a['same_order']:.2f} | "
            f"{b['max_abs']:.4f} | {b['mean_abs']:.5f} | {b['same_order']:.2f} |"
        )
    print(f"\nerrors: {errors}")
    print(f"transformers in-process pairs/s: {rates}")
    for t in tp:
        print(
            f"{t['route']} c={t['concurrency']}: {t['pairs_s']:.0f} pairs/s, {t['tokens_s']:.0f} tokens/s, "
            f"{t['mean_tokens']:.0f} tokens/pair"
        )


if __name__ == "__main__":
    main()
