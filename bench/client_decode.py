"""Client CPU per 1,000 vectors spent reading answers, with no server in the way.

    python bench/client_decode.py [--dim 2560] [--n 4096]

An ``httpx.MockTransport`` answers every request at once with prepared bodies (32 vectors of
``--dim`` floats, bf16-rounded like SGLang's), so the process CPU time of ``embed_documents``
is the client's own: building requests, parsing JSON, decoding, checking, converting to the
lists the frameworks want. Measured for JSON floats (what SGLang < 0.5.17 sends) and base64,
each with orjson (the default where installed) and with the standard library's json.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import qwen_sglang.client.answers as client_module
from qwen_sglang import EmbeddingClient


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=2560)
    parser.add_argument("--n", type=int, default=4096)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((32, args.dim)).astype(np.float32)
    vecs = (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float16).astype(np.float32)
    bodies: dict[tuple[str, int], bytes] = {}

    def body(fmt: str, n: int) -> bytes:
        if (fmt, n) not in bodies:
            data = [
                {
                    "object": "embedding",
                    "index": i,
                    "embedding": base64.b64encode(vecs[i % 32].tobytes()).decode()
                    if fmt == "base64"
                    else vecs[i % 32].tolist(),
                }
                for i in range(n)
            ]
            usage = {"prompt_tokens": 167 * n, "total_tokens": 167 * n}
            bodies[(fmt, n)] = json.dumps({"object": "list", "data": data, "usage": usage}).encode()
        return bodies[(fmt, n)]

    fast = client_module._orjson_loads
    texts = [f"text {i}" for i in range(args.n)]
    print(f"| answer format | JSON parser | client CPU s / 1k vectors ({args.dim}-d) |\n|---|---|---|")
    for fmt in ("float", "base64"):
        for parser_name, loads in (("orjson", fast), ("json (stdlib)", None)):
            if parser_name == "orjson" and fast is None:
                continue
            client_module._orjson_loads = loads

            def handler(request: httpx.Request, fmt: str = fmt) -> httpx.Response:
                n = len(json.loads(request.content)["input"])
                return httpx.Response(200, content=body(fmt, n), headers={"content-type": "application/json"})

            client = EmbeddingClient(
                base_url="http://bench.invalid/v1",
                model="bench",
                encoding_format=fmt,
                http_client=httpx.Client(transport=httpx.MockTransport(handler)),
            )
            client.embed_documents(texts[:64])
            start = time.process_time()
            client.embed_documents(texts)
            cpu = time.process_time() - start
            print(f"| {fmt} | {parser_name} | {1000 * cpu / args.n:.3f} |")
    client_module._orjson_loads = fast


if __name__ == "__main__":
    main()
