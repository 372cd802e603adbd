"""The local backend under hostile requests: the server's memory (RSS) and how long each refusal takes.

    python bench/local_backend_limits.py MODEL_DIR [--json out.json]

Starts a `LocalEmbeddingServer` on loopback, then for each attack samples the server process's
RSS every 10 ms (psutil) and reports its baseline, its peak during the attack and what it kept
afterwards, with the seconds until the server answered (or closed). Then: a one-word request
sent while a 1M-token request runs (seconds until it is answered), 300 connections that never
send a request (seconds until the server closed them all), and SIGTERM while busy (seconds to
exit). Everything is bounded and loopback only.
"""

from __future__ import annotations

import argparse
import json
import select
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import psutil  # noqa: E402

from qwen_sglang.servers import LocalEmbeddingServer  # noqa: E402

MB = 1 << 20


@contextmanager
def rss_peak(pid: int) -> Iterator[dict[str, float]]:
    """Sample the RSS of ``pid`` every 10 ms while the block runs: baseline, peak, after (MB)."""
    proc = psutil.Process(pid)
    out = {"baseline_mb": proc.memory_info().rss / MB}
    peak = [out["baseline_mb"]]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss / MB)
            time.sleep(0.01)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield out
    finally:
        done.set()
        thread.join()
        time.sleep(0.5)
        out["peak_mb"] = peak[0]
        out["after_mb"] = proc.memory_info().rss / MB


def head(port: int, length: int | None) -> bytes:
    size = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return (
        f"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n{size}\r\n\r\n"
    ).encode()


def status_of(answer: bytes) -> str:
    return answer.split(b"\r\n", 1)[0].decode(errors="replace") if answer else "closed"


def declared_gib(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(head(port, 1 << 30))
        return status_of(sock.recv(65536))


def streamed_gib(port: int) -> str:
    chunk = b"a" * MB
    frame = b"%x\r\n%s\r\n" % (len(chunk), chunk)
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(head(port, None) + b'5\r\n{"inp\r\n')
        try:
            while sent < 1024 and not select.select([sock], [], [], 0)[0]:
                sock.sendall(frame)
                sent += 1
        except (BrokenPipeError, ConnectionResetError):
            pass
        return f"{status_of(sock.recv(65536))} after {sent} MiB sent"


def post_raw(port: int, body: bytes) -> str:
    r = httpx.post(
        f"http://127.0.0.1:{port}/v1/embeddings",
        content=body,
        headers={"Content-Type": "application/json"},
        timeout=600,
    )
    return f"HTTP {r.status_code}: {r.text[:90]}"


def ids_body(rows: int, width: int) -> bytes:
    return b'{"input": [' + b",".join([b"[" + b",".join([b"1000"] * width) + b"]"] * rows) + b"]}"


def attacks(port: int) -> dict[str, Callable[[], str]]:
    bomb = b'{"input": [' + b",".join([b"[]"] * ((30 * MB) // 3)) + b"]}"
    strings = b'{"input": [' + b",".join([b'"ab"'] * ((30 * MB) // 5)) + b"]}"
    return {
        "1 GiB announced (Content-Length), nothing sent": lambda: declared_gib(port),
        "1 GiB streamed (chunked)": lambda: streamed_gib(port),
        "4096 x 3000 token ids (61 MB body)": lambda: post_raw(port, ids_body(4096, 3000)),
        "2 x 1,000,000 token ids (16 MB body)": lambda: post_raw(port, ids_body(2, 1_000_000)),
        "30 MB of empty arrays ([[],[],...])": lambda: post_raw(port, bomb),
        '30 MB of short strings (["ab","ab",...])': lambda: post_raw(port, strings),
    }


def big_request(port: int) -> socket.socket:
    body = json.dumps({"input": [[1000 + i] * 1000 for i in range(1000)]}).encode()  # 1M tokens
    sock = socket.create_connection(("127.0.0.1", port), timeout=600)
    sock.sendall(head(port, len(body)) + body)
    return sock


def behaviour(server: LocalEmbeddingServer) -> dict[str, Any]:
    port, out = server.port, {}
    big = big_request(port)
    time.sleep(1.0)
    start = time.perf_counter()
    httpx.post(server.base_url + "/embeddings", json={"input": "one word"}, timeout=600).raise_for_status()
    out["one-word request during a 1M-token request: seconds"] = round(time.perf_counter() - start, 2)
    start = time.perf_counter()
    big.recv(65536)
    out["the 1M-token request itself: seconds left after that"] = round(time.perf_counter() - start, 2)
    big.close()
    idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(300)]
    start = time.perf_counter()
    while not all(select.select([s], [], [], 0)[0] and s.recv(1) == b"" for s in idle):
        time.sleep(0.1)
        if time.perf_counter() - start > 120:
            break
    out["300 idle connections: seconds until all closed"] = round(time.perf_counter() - start, 2)
    for sock in idle:
        sock.close()
    big = big_request(port)
    time.sleep(1.0)
    start = time.perf_counter()
    server.stop(timeout=60)
    out["SIGTERM while busy: seconds to exit"] = round(time.perf_counter() - start, 2)
    out["exit status"] = server.returncode
    big.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with LocalEmbeddingServer(args.model) as server:
        assert server.pid is not None
        for name, attack in attacks(server.port).items():
            with rss_peak(server.pid) as rss:
                start = time.perf_counter()
                answer = attack()
                seconds = time.perf_counter() - start
            results[name] = {"answer": answer, "seconds": round(seconds, 2), **{k: round(v) for k, v in rss.items()}}
            print(f"{name}: {results[name]}", flush=True)
        results["behaviour"] = behaviour(server)
        print(results["behaviour"], flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
