"""Reading and splitting cost of `qwen-sglang ingest`, without a server: time and peak memory.

    python bench/ingest_reading.py [--split-mb 1,4,16,64] [--sparse-mb 1024] [--json OUT]

- ``split``: ``split_text`` on 1/4/16/64 MB of unbroken text (no space, no sentence end: the
  case that was quadratic), CPU seconds each.
- ``sparse``: ``ingest()`` of one sparse file (``--sparse-mb`` of NUL bytes, the worst case for
  a splitter: one unbroken paragraph) in a fresh process, into a collection that already holds
  every chunk, so the run reads, decodes, splits, hashes and looks up every chunk but embeds
  nothing. Reports wall time the process's RSS before the run and its peak RSS (Linux).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


class AllStored:
    """A Chroma-like collection that already holds every chunk: nothing is embedded or written."""

    def get(self, ids: list[str] | None = None, **kwargs: Any) -> dict[str, list[Any]]:
        return {"ids": list(ids or []), "embeddings": [], "metadatas": []}

    def upsert(self, **kwargs: Any) -> None:
        raise AssertionError("nothing should be written")

    def delete(self, ids: list[str]) -> None:
        raise AssertionError("nothing should be deleted")


def _current_rss_kb() -> int:
    """The resident set now (``ru_maxrss`` is the peak so far, import-time included)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def child(path: Path) -> None:
    """Ingest ``path`` into an :class:`AllStored` collection; print the numbers as JSON."""
    import httpx

    from qwen_sglang import EmbeddingClient
    from qwen_sglang.ingest import ingest

    def server(request: httpx.Request) -> httpx.Response:
        # what the run asks: the served model (its chunk ids carry it); no embedding is ever asked
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"object": "list", "data": [{"id": "unused", "object": "model"}]})
        return httpx.Response(404, json={"detail": "Not Found"})

    http = httpx.Client(transport=httpx.MockTransport(server))
    client = EmbeddingClient(base_url="http://127.0.0.1:9/v1", model="unused", http_client=http)
    before = _current_rss_kb()
    start = time.perf_counter()
    report = ingest([path], client=client, collection=AllStored(), show_progress=False)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "seconds": seconds,
                "rss_before_mb": before / 1024,
                "rss_peak_mb": peak / 1024,
                "chunks": report.chunks,
                "embedded": report.embedded,
                "problems": len(report.problems),
            }
        )
    )


def sparse(megabytes: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="qwen-sglang-bench-sparse-") as tmp:
        path = Path(tmp) / "sparse.txt"
        with path.open("wb") as fh:
            fh.truncate(megabytes << 20)
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(path)], capture_output=True, text=True, check=True
        )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return {"file_mb": megabytes, **result}


def split(megabytes: list[int]) -> list[dict[str, Any]]:
    from qwen_sglang.ingest import split_text

    rows = []
    for mb in megabytes:
        text = "x" * (mb << 20)
        start = time.process_time()
        chunks = split_text(text)
        rows.append({"text_mb": mb, "cpu_seconds": time.process_time() - start, "chunks": len(chunks)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split-mb", default="1,4,16,64", help="sizes of unbroken text ('' to skip)")
    parser.add_argument("--sparse-mb", type=int, default=1024, help="size of the sparse file (0 to skip)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child)
        return
    results: dict[str, Any] = {}
    if args.sparse_mb:  # first: a child inherits its parent's peak RSS (ru_maxrss survives exec)
        row = results["sparse"] = sparse(args.sparse_mb)
        print(
            f"ingest of a {row['file_mb']} MB sparse file: {row['seconds']:.1f} s, {row['chunks']} chunks, "
            f"RSS {row['rss_before_mb']:.0f} MB before the run, peak {row['rss_peak_mb']:.0f} MB"
        )
    if args.split_mb:
        results["split"] = split([int(x) for x in args.split_mb.split(",")])
        for row in results["split"]:
            print(
                f"split_text, {row['text_mb']:>4} MB unbroken: {row['cpu_seconds']:.2f} CPU s, {row['chunks']} chunks"
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
