"""What hostile answers cost the client: a gzip bomb's peak RSS, a dripping server's wall time.

    python bench/hostile_answers.py [--bomb-mib 1024] [--drip-every 0.5] [--timeout 2] [--compare-httpx]

Against `tests.integration.hostile_server` (a real socket on 127.0.0.1, in this process):

- a gzip bomb (``--bomb-mib`` MiB of zeros, about 1 KB of gzip per MiB) as the answer to a one-text
  ``embed_documents``: each client runs in a fresh child process that reports its peak RSS
  (``ru_maxrss``) before and after the call, and what the call raised;
- a server dripping its headers, or its body, one byte every ``--drip-every`` seconds: the wall
  time of one call with ``timeout=--timeout`` and ``max_retries=0``, sync and async.

``--compare-httpx`` also reads the bomb with plain ``httpx.post(...).content`` (what the client
did before it decoded bodies itself): expect gigabytes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qwen_sglang import EmbeddingClient  # noqa: E402
from tests.integration.hostile_server import drip, gzip_bomb, hostile_server, response_head  # noqa: E402

_CHILD = """
import json, resource, sys, time
import httpx
from qwen_sglang import EmbeddingClient
url, how = sys.argv[1], sys.argv[2]
client = EmbeddingClient(base_url=url, model="m", max_retries=0, timeout=600)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
try:
    if how == "client":
        client.embed_documents(["a"])
    else:
        httpx.post(url + "/embeddings", json={"input": ["a"]}, timeout=600).content
    outcome = "accepted"
except Exception as exc:
    outcome = f"{type(exc).__name__}: {str(exc)[:160]}"
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"outcome": outcome, "rss_before_mib": before / 1024, "rss_peak_mib": after / 1024,
                  "seconds": time.perf_counter() - start}))
"""

ANSWER = json.dumps({"object": "list", "data": [{"index": 0, "embedding": [0.5, -0.5, 0.5, -0.5]}]}).encode()


def bomb(mib: int, how: str) -> dict[str, object]:
    length, pieces = gzip_bomb(mib)
    body = list(pieces)

    def script(request: bytes) -> Iterator[tuple[float, bytes]]:
        yield 0, response_head(content_type="application/json", content_encoding="gzip", content_length=length)
        for piece in body:
            yield 0, piece

    with hostile_server(script) as url:
        run = subprocess.run([sys.executable, "-c", _CHILD, url, how], capture_output=True, text=True, check=True)
    result: dict[str, object] = json.loads(run.stdout)
    result["compressed_bytes"] = length
    return result


def dripping(part: str, every: float, timeout: float, use_async: bool) -> dict[str, object]:
    def script(request: bytes) -> Iterator[tuple[float, bytes]]:
        if part == "headers":
            yield 0, b"HTTP/1.1 200 OK\r\n"
            yield from drip(b"X-Slow: " + b"a" * 64 + b"\r\n", every)
            yield 0, f"Content-Length: {len(ANSWER)}\r\n\r\n".encode() + ANSWER
        else:
            yield 0, response_head(content_type="application/json", content_length=len(ANSWER))
            yield from drip(ANSWER, every)

    with hostile_server(script) as url:
        client = EmbeddingClient(base_url=url, model="m", timeout=timeout, max_retries=0)
        start = time.perf_counter()
        try:
            if use_async:
                asyncio.run(client.aembed_documents(["a"]))
            else:
                client.embed_documents(["a"])
            outcome = "accepted"
        except Exception as exc:
            outcome = type(exc).__name__
        client.close()
    seconds = time.perf_counter() - start
    return {"part": part, "path": "async" if use_async else "sync", "seconds": seconds, "outcome": outcome}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bomb-mib", type=int, default=1024)
    parser.add_argument("--drip-every", type=float, default=0.5)
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("--compare-httpx", action="store_true")
    args = parser.parse_args()
    for how in ["client"] + (["httpx"] if args.compare_httpx else []):
        r = bomb(args.bomb_mib, how)
        print(
            f"gzip bomb {args.bomb_mib} MiB ({r['compressed_bytes']:,} bytes of gzip), {how}: peak RSS "
            f"{r['rss_before_mib']:.0f} -> {r['rss_peak_mib']:.0f} MiB in {r['seconds']:.2f} s; {r['outcome']}",
            flush=True,
        )
    for part in ("headers", "body"):
        for use_async in (False, True):
            r = dripping(part, args.drip_every, args.timeout, use_async)
            print(
                f"{part} dripping a byte every {args.drip_every} s, timeout={args.timeout:g}, {r['path']}: "
                f"{r['seconds']:.2f} s; {r['outcome']}",
                flush=True,
            )


if __name__ == "__main__":
    main()
