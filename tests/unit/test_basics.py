"""Instructions, presets, package hygiene."""

from __future__ import annotations

import subprocess
import sys

import pytest

import qwen_sglang
from qwen_sglang import DEFAULT_TASK, TASKS, find_preset, format_query
from qwen_sglang.instructions import resolve_task


def test_query_template_is_exact() -> None:
    assert format_query("hi", DEFAULT_TASK) == (
        "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:hi"
    )
    assert format_query("a\nb", "t") == "Instruct: t\nQuery:a\nb"  # newlines kept


@pytest.mark.parametrize("off", [None, "", "   "])
def test_instruction_can_be_disabled(off: str | None) -> None:
    assert format_query("hi", off) == "hi"


def test_task_presets_resolve() -> None:
    assert resolve_task("sts") == TASKS["sts"] == "Retrieve semantically similar text"
    assert resolve_task("my own task") == "my own task"
    with pytest.raises(TypeError):
        resolve_task(3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "dim"),
    [
        ("Qwen/Qwen3-Embedding-0.6B", 1024),
        ("Qwen/Qwen3-Embedding-4B", 2560),
        ("Qwen/Qwen3-Embedding-8B", 4096),
        ("/models/Qwen3-Embedding-4B/", 2560),
        ("qwen3-embedding-8b", 4096),
    ],
)
def test_presets(name: str, dim: int) -> None:
    preset = find_preset(name)
    assert preset is not None and preset.native_dim == dim and preset.dim_range == (32, dim)
    assert preset.context_length == 32768


def test_unknown_models_have_no_preset() -> None:
    assert find_preset("my-org/Qwen3-Embedding-4B-finetuned") is None
    assert find_preset("BAAI/bge-m3") is None


def test_core_import_pulls_no_framework_or_torch() -> None:
    code = (
        "import sys, qwen_sglang, qwen_sglang.client, qwen_sglang.rerank, qwen_sglang.servers, qwen_sglang.servers.probe, "
        "qwen_sglang.cli;"
        "heavy = [m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'langchain_core', 'llama_index', 'sentence_transformers', 'transformers', 'chromadb', 'fastapi', 'ray')];"
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_public_api() -> None:
    for name in qwen_sglang.__all__:
        assert hasattr(qwen_sglang, name), name
    import langchain_qwen_sglang
    import llama_index_qwen_sglang

    assert {"QwenSGLangEmbeddings", "QwenSGLangReranker"} <= set(langchain_qwen_sglang.__all__)
    assert llama_index_qwen_sglang.__all__ == ["LlamaIndexStoreTarget", "QwenSGLangEmbedding", "QwenSGLangRerank"]
    assert {"RerankClient", "RerankResult"} <= set(qwen_sglang.__all__)
