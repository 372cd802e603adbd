"""``qwen-sglang rerank`` as a user runs it: a real process against the local reranker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from qwen_sglang import RerankClient
from qwen_sglang.servers import ManagedServer

DOCS = ["The giant panda's diet is 99% bamboo.", "Bananas are yellow.", "大熊猫主要以竹子为食。"]


def run_rerank(server: ManagedServer | None, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    where = ["--base-url", server.base_url] if server is not None else ["--base-url", "http://127.0.0.1:9/v1"]
    cmd = [sys.executable, "-m", "qwen_sglang", "rerank", *where, *args]
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=120, check=False)


def test_rerank_command_prints_the_ranking_as_json_lines(rerank_server: ManagedServer, tmp_path: Path) -> None:
    query = "What do pandas eat?"
    expected = RerankClient(base_url=rerank_server.base_url).rerank(query, DOCS)
    out = run_rerank(rerank_server, "--query", query, stdin="\n".join(DOCS) + "\n")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["index"] for r in rows] == [r.index for r in expected]
    assert all(abs(r["score"] - e.score) <= 1e-6 for r, e in zip(rows, expected, strict=True))
    assert [r["document"] for r in rows] == [DOCS[r.index] for r in expected]
    path = tmp_path / "docs.txt"
    path.write_text("\n".join(DOCS), encoding="utf-8")
    top = run_rerank(rerank_server, "--query", query, str(path), "--top-n", "1", "--no-documents")
    assert top.returncode == 0, top.stderr
    assert [json.loads(line) for line in top.stdout.splitlines()] == [
        {"index": rows[0]["index"], "score": rows[0]["score"]}
    ]
    # more than there are: all of them, as `head -n` (it was the Python API's error, "pass None");
    # a byte-order mark (a file saved by a Windows editor) is not part of the first document
    path.write_text("\ufeff" + "\n".join(DOCS), encoding="utf-8")
    every = run_rerank(rerank_server, "--query", query, str(path), "--top-n", "10")
    assert every.returncode == 0, every.stderr
    assert [json.loads(line) for line in every.stdout.splitlines()] == rows


def test_rerank_command_bad_input_exits_before_any_request() -> None:
    out = run_rerank(None, "--query", "q", stdin="a\n\nb\n")  # a closed port: no request may be made
    assert out.returncode != 0 and "document at index 1 is empty" in out.stderr and "--empty-text" in out.stderr
    out = run_rerank(None, "--query", " ", stdin="a\n")
    assert out.returncode != 0 and "query is empty" in out.stderr
    out = run_rerank(None, "--query", "q", "--top-n", "0", stdin="a\nb\n")
    assert out.returncode == 2 and "--top-n: must be at least 1, got 0" in out.stderr


def test_rerank_help_names_the_environment_it_reads(rerank_server: ManagedServer) -> None:
    """``--help`` says where the reranker's server and model come from: the reranker's variables
    first (``QWEN_SGLANG_MODEL`` names the embedding model and is not read), as the command does."""
    cmd = [sys.executable, "-m", "qwen_sglang", "rerank"]
    shown = subprocess.run([*cmd, "--help"], capture_output=True, text=True, timeout=60, check=True).stdout
    flat = " ".join(shown.split())
    assert "$QWEN_SGLANG_RERANK_BASE_URL, else $QWEN_SGLANG_BASE_URL" in flat
    assert "$QWEN_SGLANG_RERANK_MODEL" in flat and "$QWEN_SGLANG_MODEL" not in flat
    assert "embedding" not in flat  # its requests are /v1/score requests of documents
    env = os.environ | {
        "QWEN_SGLANG_RERANK_BASE_URL": rerank_server.base_url,
        "QWEN_SGLANG_BASE_URL": "http://127.0.0.1:9/v1",  # the embedding server's: not used
        "QWEN_SGLANG_MODEL": "Qwen/Qwen3-Embedding-4B",  # would be a model mismatch if it were read
    }
    env.pop("QWEN_SGLANG_RERANK_MODEL", None)
    out = subprocess.run([*cmd, "--query", "q"], input="a doc\n", capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["index"] == 0
