"""A LangChain text splitter that measures chunks in the served model's own tokens."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from langchain_text_splitters import RecursiveCharacterTextSplitter

from qwen_sglang.client import EmbeddingClient
from qwen_sglang.errors import ConfigurationError

__all__ = ["QwenTokenTextSplitter"]


class _TokenCounter:
    """Exact token counts (no special tokens) from a tokenizer.json or the server's tokenizer."""

    def __init__(self, client: EmbeddingClient | None, tokenizer_path: str | os.PathLike[str] | None) -> None:
        if (client is None) == (tokenizer_path is None):
            raise ConfigurationError("give exactly one of client= (the server's tokenizer) or tokenizer_path=")
        self._client = client
        self._tokenizer: Any = None
        if tokenizer_path is not None:
            from tokenizers import Tokenizer

            path = Path(tokenizer_path)
            file = path / "tokenizer.json" if path.is_dir() else path
            if not file.exists():
                raise ConfigurationError(f"no tokenizer.json at {path}")
            self._tokenizer = Tokenizer.from_file(str(file))
        self._cache: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, text: str) -> int:
        if not text:
            return 0
        if self._tokenizer is not None:
            return len(self._tokenizer.encode(text, add_special_tokens=False).ids)
        with self._lock:
            if text in self._cache:
                self._cache.move_to_end(text)
                return self._cache[text]
        assert self._client is not None
        count = len(self._client.tokenize([text], add_special_tokens=False)[0])
        with self._lock:
            self._cache[text] = count
            if len(self._cache) > 50_000:
                self._cache.popitem(last=False)
        return count


class QwenTokenTextSplitter(RecursiveCharacterTextSplitter):
    """Recursive splitting (paragraphs, lines, words) with chunk sizes counted in Qwen tokens.

    Counts come from the served model's tokenizer: the server's ``/v1/tokenize`` through an
    `qwen_sglang.EmbeddingClient` (or ``QwenSGLangEmbeddings.client``), or a local
    ``tokenizer.json`` (faster for large corpora). Never tiktoken. ``chunk_size`` and
    ``chunk_overlap`` count content tokens; the end token the model appends is not included.

    Instantiate:
        ```python
        from langchain_qwen_sglang import QwenSGLangEmbeddings, QwenTokenTextSplitter

        embeddings = QwenSGLangEmbeddings()
        splitter = QwenTokenTextSplitter(client=embeddings.client, chunk_size=512, chunk_overlap=64)
        # or: QwenTokenTextSplitter(tokenizer_path="/models/Qwen3-Embedding-4B", chunk_size=512)
        docs = splitter.create_documents([long_text])
        ```
    """

    def __init__(
        self,
        *,
        client: EmbeddingClient | None = None,
        tokenizer_path: str | os.PathLike[str] | None = None,
        chunk_size: int = 512,
        chunk_overlap: int = 64,
        **kwargs: Any,
    ) -> None:
        self.count_tokens = _TokenCounter(client, tokenizer_path)
        super().__init__(
            chunk_size=chunk_size, chunk_overlap=chunk_overlap, length_function=self.count_tokens, **kwargs
        )
