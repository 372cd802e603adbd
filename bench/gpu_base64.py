"""Base64 answers of real SGLang on a GPU, and our client's default encoding against them.

    python bench/gpu_base64.py --model-dir /tmp/qwen-sglang-test-models/Qwen3-Embedding-test --out results

Starts one ``SGLangServer`` on the test model (built if missing: the 2-layer random-weight Qwen3
with Qwen's real tokenizer, as the GPU suite builds it), then records:

- raw requests with ``encoding_format`` ``base64`` and ``float``: the status, whether the base64
  answer holds strings (SGLang 0.5.15 ignored the field and sent floats), and the largest
  element-wise difference between the decoded base64 and the float answer;
- our ``EmbeddingClient`` with its default encoding (``auto``) against one with
  ``encoding_format="float"`` on the same texts, both sending them as one request like the raw
  ones (the same batch, so bf16 batching cannot differ): the largest difference, and the
  ``encoding_format`` of every request the default client sent (an httpx event hook).

Writes ``base64.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qwen_sglang import EmbeddingClient  # noqa: E402
from qwen_sglang.servers import SGLangServer  # noqa: E402

TEXTS = [
    f"text {i}: " + " ".join(["embedding", "base64", "Qwen3", "向量", "données"][: 1 + i % 5] * (1 + i))
    for i in range(48)
]


def raw_vectors(base_url: str, model: str, encoding: str) -> tuple[int, bool, np.ndarray]:
    r = httpx.post(
        base_url + "/embeddings", json={"model": model, "input": TEXTS, "encoding_format": encoding}, timeout=120
    )
    data = sorted(r.json()["data"], key=lambda d: d["index"]) if r.status_code == 200 else []
    strings = bool(data) and all(isinstance(d["embedding"], str) for d in data)
    if strings:
        rows = [np.frombuffer(base64.b64decode(d["embedding"]), "<f4") for d in data]
    else:
        rows = [np.asarray(d["embedding"], dtype=np.float32) for d in data]
    return r.status_code, strings, np.stack(rows) if rows else np.zeros((0, 0), np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if not (args.model_dir / ".complete").exists():
        from qwen_sglang.testing.models import build_qwen3_embedding_model

        build_qwen3_embedding_model(args.model_dir, shape="small")
        (args.model_dir / ".complete").touch()
    server = SGLangServer(
        args.model_dir,
        attention_backend="triton",
        mem_fraction_static=0.3,
        dtype="bfloat16",
        extra_args=["--disable-cuda-graph", "--grammar-backend", "none", "--sampling-backend", "pytorch"],
    )
    out: dict[str, Any] = {"command": server.display_command(), "texts": len(TEXTS)}
    sent: list[str] = []

    def record(request: httpx.Request) -> None:
        if request.url.path.endswith("/embeddings"):
            sent.append(json.loads(request.content).get("encoding_format", "(none)"))

    with server:
        base, model = server.base_url, server.model
        info = httpx.get(server.root_url + "/server_info", timeout=30).json()
        out["sglang"] = info.get("version")
        s64, strings, b64 = raw_vectors(base, model, "base64")
        sf, _, flt = raw_vectors(base, model, "float")
        out["raw"] = {
            "base64_status": s64,
            "base64_answer_is_strings": strings,
            "float_status": sf,
            "shape": list(b64.shape),
            "max_abs_base64_vs_float": float(np.abs(b64 - flt).max()),
        }
        one = {"batch_size": 64, "max_batch_tokens": 65536, "max_concurrency": 1}  # one request, as raw
        with httpx.Client(event_hooks={"request": [record]}) as http:
            auto = np.array(EmbeddingClient(base_url=base, model=model, http_client=http, **one).embed_documents(TEXTS))
        floats = np.array(
            EmbeddingClient(base_url=base, model=model, encoding_format="float", **one).embed_documents(TEXTS)
        )
        out["client"] = {
            "default_encoding_requests": sent,
            "max_abs_auto_vs_float": float(np.abs(auto - floats).max()),
            "max_abs_auto_vs_raw_float": float(np.abs(auto - flt).max()),
        }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "base64.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
