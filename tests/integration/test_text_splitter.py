"""QwenTokenTextSplitter: chunk sizes in the served model's tokens, server or local tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest

from langchain_qwen_sglang import QwenSGLangEmbeddings, QwenTokenTextSplitter
from qwen_sglang.servers import ManagedServer

TEXT = "\n\n".join(
    f"Paragraph {p}. " + " ".join(f"Sentence {p}.{s} talks about 向量 and embeddings 🚀." for s in range(6))
    for p in range(12)
)


@pytest.mark.parametrize("source", ["server", "tokenizer.json"])
def test_chunks_fit_the_token_budget_exactly(source: str, server: ManagedServer, qwen_model_dir: Path) -> None:
    emb = QwenSGLangEmbeddings(base_url=server.base_url, model="Qwen3-Embedding-test")
    if source == "server":
        splitter = QwenTokenTextSplitter(client=emb.client, chunk_size=60, chunk_overlap=10)
    else:
        splitter = QwenTokenTextSplitter(tokenizer_path=qwen_model_dir, chunk_size=60, chunk_overlap=10)
    chunks = splitter.split_text(TEXT)
    assert len(chunks) > 5
    # exact counts from the server (end token excluded), whatever counted them
    counts = [n - 1 for n in emb.client.count_tokens(chunks)]
    assert max(counts) <= 60 and max(counts) > 30
    words = [w for c in chunks for w in c.split()]
    assert set(words) == set(TEXT.split())  # nothing lost


def test_needs_exactly_one_token_source(qwen_model_dir: Path) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        QwenTokenTextSplitter()
    with pytest.raises(ValueError, match="no tokenizer.json"):
        QwenTokenTextSplitter(tokenizer_path=qwen_model_dir / "nope")
