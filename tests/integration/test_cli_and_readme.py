"""The `embed` command, the README's framework snippets, and the SGLang-only checks."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qwen_sglang import EmbeddingClient
from qwen_sglang.servers import ManagedServer, SGLangServer
from tests.conftest import REPO, TOL


def run_embed(server: ManagedServer, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [
        sys.executable,
        "-m",
        "qwen_sglang",
        "embed",
        "--base-url",
        server.base_url,
        "--model",
        "Qwen3-Embedding-test",
    ]
    return subprocess.run([*cmd, *args], input=stdin, capture_output=True, text=True, timeout=120, check=False)


def test_embed_command_writes_json_lines(server: ManagedServer) -> None:
    client = EmbeddingClient(base_url=server.base_url, model="Qwen3-Embedding-test")
    out = run_embed(server, "first text", "second text")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["index"] for r in rows] == [0, 1]
    np.testing.assert_allclose(
        [r["embedding"] for r in rows], client.embed_documents(["first text", "second text"]), atol=TOL
    )

    q = run_embed(server, "--query", "--dimensions", "64", stdin="what is this?\n")
    vec = json.loads(q.stdout.splitlines()[0])["embedding"]
    assert len(vec) == 64
    np.testing.assert_allclose(vec, client.embed_query("what is this?", dimensions=64), atol=TOL)

    bad = run_embed(server, "ok", "   ")
    assert bad.returncode == 1 and bad.stderr.startswith("error: argument 2 (index 1) is empty or blank")


def test_embed_command_empty_lines_follow_empty_text(server: ManagedServer) -> None:
    stdin = "a\n\nb\n"
    refused = run_embed(server, stdin=stdin)
    assert refused.returncode == 1 and refused.stdout == ""
    assert "line 2 (index 1) is empty or blank: pass --empty-text zero" in refused.stderr  # an option that exists

    zero = run_embed(server, "--empty-text", "zero", stdin=stdin)
    assert zero.returncode == 0, zero.stderr
    rows = [json.loads(line) for line in zero.stdout.splitlines()]
    assert [r["index"] for r in rows] == [0, 1, 2]
    assert not any(rows[1]["embedding"]) and all(any(rows[i]["embedding"]) for i in (0, 2))

    skip = run_embed(server, "--empty-text", "skip", stdin=stdin)
    assert skip.returncode == 0, skip.stderr
    kept = [json.loads(line) for line in skip.stdout.splitlines()]
    assert [r["index"] for r in kept] == [0, 2]  # each line keeps its input index
    assert kept[1]["embedding"] == rows[2]["embedding"]
    assert "skipped 1 empty line(s): index 1" in skip.stderr


def test_embed_command_reads_windows_line_ends_as_lines(server: ManagedServer) -> None:
    """A file saved on Windows (CRLF) embeds the same texts as its LF twin: the ``\\r`` is the line
    end, not the text's last character (it was embedded with it)."""
    lf = run_embed(server, stdin="first text\nsecond text\n")
    crlf = run_embed(server, stdin="first text\r\nsecond text\r\n")
    # a byte-order mark (Notepad's UTF-8) is not part of the first text (it was embedded with it)
    bom = run_embed(server, stdin="\ufefffirst text\r\nsecond text\r\n")
    assert lf.returncode == crlf.returncode == bom.returncode == 0, crlf.stderr + bom.stderr
    for other in (crlf, bom):
        assert [json.loads(line) for line in other.stdout.splitlines()] == [
            json.loads(line) for line in lf.stdout.splitlines()
        ]


def test_embed_command_piped_into_head_stops_quietly(server: ManagedServer) -> None:
    """``qwen-sglang embed | head -1``: the reader leaves, the command stops as Unix tools do (exit
    141, as killed by SIGPIPE) without printing "error: [Errno 32] Broken pipe" (it did, exit 1)."""
    cmd = [sys.executable, "-m", "qwen_sglang", "embed", "--base-url", server.base_url]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    proc.stdin.write("".join(f"text number {i}\n" for i in range(300)).encode())  # ~800 kB of JSON out
    proc.stdin.close()
    assert json.loads(proc.stdout.readline())["index"] == 0
    proc.stdout.close()  # what head does after its line
    try:
        assert proc.wait(timeout=120) == 141
    finally:
        proc.kill()
    assert proc.stderr.read() == b""


def test_embed_command_task_without_query_is_an_error(server: ManagedServer) -> None:
    out = run_embed(server, "--task", "qa", "a document")
    assert out.returncode == 2 and out.stdout == ""
    assert "--task applies to queries only: add --query" in out.stderr


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.S)


@pytest.mark.parametrize("readme", ["README.md", "README.zh-CN.md"])
@pytest.mark.parametrize("which", ["langchain", "llama_index"])
def test_readme_framework_snippets_run(
    which: str,
    readme: str,
    server: ManagedServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    blocks = [
        b
        for b in python_blocks((REPO / readme).read_text(encoding="utf-8"))
        if f"from {which}_qwen_sglang import" in b and "launch_server" not in b
    ]
    assert len(blocks) == 1
    # the README's server URL, model and width, pointed at the test server and model
    code = (
        blocks[0]
        .replace("http://127.0.0.1:30000/v1", server.base_url)
        .replace('"Qwen/Qwen3-Embedding-4B"', '"Qwen3-Embedding-test"')
        .replace("dimensions=1024", "dimensions=64")
    )
    assert code != blocks[0]
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {}
    exec(compile(code, f"{readme}[{which}]", "exec"), namespace)
    printed = capsys.readouterr().out
    # a stored document came back (which one is semantics, which a random-weight model lacks)
    stored = ("SGLang serves Qwen3-Embedding.", "Chroma stores the vectors.", "SGLang 部署", "Chroma 保存向量")
    assert any(text in printed for text in stored), printed


@pytest.mark.gpu
def test_sglang_server_serves_with_the_flags_it_should(qwen_model_dir: Path) -> None:
    with SGLangServer(
        qwen_model_dir,
        dtype="bfloat16",
        attention_backend="triton",
        mem_fraction_static=0.3,
        extra_args=["--disable-cuda-graph"],
    ) as srv:
        argv = srv.command()
        assert "--is-embedding" in argv and "--json-model-override-args" in argv
        assert len(EmbeddingClient(server=srv).embed_query("hello", dimensions=64)) == 64
