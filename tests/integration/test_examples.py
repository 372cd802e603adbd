"""Each example runs end to end as a script (offline: the stated MiniLM fallback, real semantics)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from qwen_sglang.servers import ManagedServer
from tests.conftest import REPO


def run_example(name: str, *args: str, cwd: Path) -> str:
    temp = cwd / "tmp"  # the example's temporary files go here, to be checked
    temp.mkdir(exist_ok=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO), TMPDIR=str(temp))
    out = subprocess.run(
        [sys.executable, str(REPO / "examples" / name), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Falling back to all-MiniLM-L6-v2" in out.stdout  # never a silent stand-in
    ours = [p.name for p in temp.iterdir() if p.name.startswith(("qwen-sglang", "li-chroma"))]
    assert ours == []  # no Chroma directory or server log left behind (torch's own caches aside)
    return out.stdout


def test_langchain_rag_chroma(tmp_path: Path) -> None:
    out = run_example(
        "langchain_rag_chroma.py", "--backend", "local", "--question", "Why does bread dough rise?", cwd=tmp_path
    )
    assert "Sources: [bread]" in out and "extractive" in out


def test_llama_index_rag_chroma(tmp_path: Path) -> None:
    out = run_example(
        "llama_index_rag_chroma.py", "--backend", "local", "--persist-dir", str(tmp_path / "db"), cwd=tmp_path
    )
    assert "Indexed 170 passages" in out  # the English half: all the fallback model reads
    for source in ("eiffel", "bread", "sglang"):
        assert f"Sources: [{source}]" in out


def test_agent_retrieval_tool(tmp_path: Path) -> None:
    out = run_example("agent_retrieval_tool.py", "--backend", "local", cwd=tmp_path)
    langchain_part, llama_part = out.split("LlamaIndex tool")
    assert "waggle dance" in langchain_part and "waggle dance" in llama_part


def test_bulk_ingest(tmp_path: Path) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(json.dumps({"id": i, "text": f"document {i} about bees"}) for i in range(300)))
    args = [str(data), "--persist-dir", str(tmp_path / "db")]
    assert "300 embedded, 0 already stored" in run_example("bulk_ingest.py", *args, cwd=tmp_path)
    assert "0 embedded, 300 already stored" in run_example("bulk_ingest.py", *args, cwd=tmp_path)


def test_cross_lingual(tmp_path: Path) -> None:
    out = run_example("cross_lingual.py", "--backend", "local", cwd=tmp_path)
    assert "Embedded 270 passages" in out
    blocks = [b for b in out.split("\n[")[1:]]
    assert len(blocks) == 10
    for block in blocks:
        arrow, *rest = block.splitlines()
        hits = [line.split(". ", 1)[1].split(" ", 1)[0] for line in rest if line.startswith("    ")]
        assert len(hits) == 3
        # each question searches only the other language's passages
        if arrow.startswith("zh -> en"):
            assert not any(h.startswith("zh-") for h in hits), block
        else:
            assert all(h.startswith("zh-") for h in hits), block
    assert "Answer in the top 3 of the other language's passages:" in out
    assert "English-only: expect misses" in out  # the fallback says what it cannot show


def test_rag_examples_and_the_agent_tool_with_a_rerank_stage(tmp_path: Path, rerank_server: ManagedServer) -> None:
    """The optional rerank stage of each (``--rerank-url``, the local reranker as a real process):
    the scripts run end to end with it and keep 3 (2 for the tool) of the wider candidates; the
    reranker's weights are random, so which passages win is not checked here (the classes'
    ranking is, in test_rerank_adapters.py)."""
    url = rerank_server.base_url
    out = run_example(
        "langchain_rag_chroma.py", "--backend", "local", "--question", "Why does bread dough rise?",
        "--rerank-url", url, cwd=tmp_path,
    )  # fmt: skip
    assert "Sources: [" in out and "extractive" in out
    out = run_example(
        "llama_index_rag_chroma.py", "--backend", "local", "--question", "Why does bread dough rise?",
        "--rerank-url", url, "--rerank-candidates", "8", cwd=tmp_path,
    )  # fmt: skip
    assert out.count("Sources: [") == 1 and len(out.split("Sources: ")[1].split(", ")) == 3
    out = run_example("agent_retrieval_tool.py", "--backend", "local", "--rerank-url", url, cwd=tmp_path)
    langchain_part, llama_part = out.split("LlamaIndex tool")
    assert "search_corpus" in langchain_part and llama_part.strip()
