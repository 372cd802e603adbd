"""The local backend server against its limit: sentence-transformers ``encode`` in-process.

    python bench/local_backend.py MODEL_DIR [--n 4000] [--repeats 3] [--markdown docs/benchmarks.md]

Same model, same texts, same machine. The server is driven by our client with settings suited
to a CPU backend (large requests) and with the defaults; ``encode`` runs in this process with its
default batch size (32, length-sorted). Reports the median vectors/s and the ratio to ``encode``.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from client_throughput import make_texts  # noqa: E402

from qwen_sglang import EmbeddingClient  # noqa: E402
from qwen_sglang.servers import LocalEmbeddingServer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args()
    texts = make_texts(args.n, 0)

    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(args.model, device="cpu")
    runs: dict[str, list[float]] = {}
    with LocalEmbeddingServer(args.model) as server:
        tuned = EmbeddingClient(server=server, batch_size=256, max_concurrency=2)
        default = EmbeddingClient(server=server)
        contenders: dict[str, Callable[[list[str]], object]] = {
            "sentence-transformers encode (in-process)": lambda t: model.encode(t, batch_size=32),
            "local backend, client batch 256 x 2": tuned.embed_documents,
            "local backend, client defaults (32 x 8)": default.embed_documents,
        }
        for fn in contenders.values():
            fn(texts[:64])  # warm-up
        for r in range(args.repeats):
            for name, fn in contenders.items():
                start = time.perf_counter()
                fn(texts)
                rate = len(texts) / (time.perf_counter() - start)
                runs.setdefault(name, []).append(rate)
                print(f"  round {r + 1} {name:<42} {rate:8.1f} vectors/s", flush=True)
    limit = statistics.median(next(iter(runs.values())))
    header = "| path | vectors/s | vs in-process encode |\n|---|---|---|\n"
    body = "".join(
        f"| {name} | {statistics.median(v):.1f} | {statistics.median(v) / limit:.2f} |\n" for name, v in runs.items()
    )
    print("\n" + header + body)
    if args.markdown:
        with args.markdown.open("a") as fh:
            fh.write(
                f"\n### Local backend vs in-process sentence-transformers, {datetime.date.today()}\n\n"
                f"`python {' '.join(sys.argv)}`\n\n{len(texts)} texts, median of {args.repeats} interleaved "
                f"rounds, client and server on the same 2 cores.\n\n{header}{body}"
            )


if __name__ == "__main__":
    main()
