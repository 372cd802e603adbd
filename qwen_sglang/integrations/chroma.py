"""Chroma for the application: an embedded collection opened by path, its storage measured, and
Chroma's ``EmbeddingFunction`` (`QwenSGLangEmbeddingFunction`).

Importing this module does not import chromadb: each function imports it when called, and a
missing ``chroma`` extra is a `qwen_sglang.errors.ConfigurationError` that says how to install it.

Example:
    ```python
    from qwen_sglang import EmbeddingClient
    from qwen_sglang.ingest import ingest
    from qwen_sglang.integrations.chroma import open_collection

    client = EmbeddingClient(base_url="http://127.0.0.1:30000/v1")
    report = ingest(["./docs"], client=client, store=open_collection("./chroma", "docs"))
    ```
"""

from __future__ import annotations

import os
import tempfile
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from qwen_sglang.errors import ConfigurationError

if TYPE_CHECKING:
    from qwen_sglang.integrations.chroma_function import QwenSGLangEmbeddingFunction

__all__ = ["CHROMA_EXTRA_HINT", "QwenSGLangEmbeddingFunction", "bytes_per_vector", "chromadb", "open_collection"]

#: What to install when chromadb is missing.
CHROMA_EXTRA_HINT = 'Chroma needs the chroma extra: pip install "qwen-sglang[chroma]"'


def chromadb() -> ModuleType:
    """The chromadb module, or a `ConfigurationError` naming the extra to install."""
    try:
        import chromadb as module
    except ImportError as exc:
        raise ConfigurationError(f"{CHROMA_EXTRA_HINT} ({exc})") from None
    return module


def open_collection(persist_dir: str | os.PathLike[str], name: str) -> Any:
    """The embedded Chroma collection ``name`` in ``persist_dir`` (cosine space), created if new.

    Raises:
        ConfigurationError: chromadb is not installed, or the collection cannot be opened (a
            bad name, path or Chroma version), with Chroma's reason.
    """
    module = chromadb()
    try:
        client = module.PersistentClient(path=str(persist_dir))
        return client.get_or_create_collection(name, metadata={"hnsw:space": "cosine"})
    except Exception as exc:  # chromadb raises its own types for bad names, paths, versions
        raise ConfigurationError(f"could not open Chroma collection {name!r} in {persist_dir}: {exc}") from None


def bytes_per_vector(vectors: npt.NDArray[np.float32]) -> float:
    """Measured on-disk bytes per vector of an embedded Chroma collection holding ``vectors``
    (ids and vectors only, no documents), in a scratch folder removed after."""
    module = chromadb()

    def size(path: str) -> int:
        return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)

    n = len(vectors)
    with tempfile.TemporaryDirectory(prefix="qwen-sglang-eval-chroma-") as tmp:
        client = module.PersistentClient(path=tmp)
        collection = client.create_collection("eval-size", metadata={"hnsw:space": "cosine"})
        empty = size(tmp)
        for a in range(0, n, 1000):
            collection.add(ids=[str(i) for i in range(a, min(n, a + 1000))], embeddings=vectors[a : a + 1000])
        collection.count()
        del collection, client
        return (size(tmp) - empty) / n


def __getattr__(name: str) -> Any:
    if name == "QwenSGLangEmbeddingFunction":
        chromadb()  # the extra's message, not a traceback, when chromadb is missing
        from qwen_sglang.integrations.chroma_function import QwenSGLangEmbeddingFunction

        return QwenSGLangEmbeddingFunction
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
