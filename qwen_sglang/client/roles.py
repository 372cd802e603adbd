"""Which client a user holds: what the shared engine's messages call it, and what it assumes.

`qwen_sglang.RerankClient` sends through an `qwen_sglang.EmbeddingClient`'s shells and engine;
a `ClientRole` is what differs, declared once here, so that an error or a warning names the
class the user holds, its default model and the environment variable that names its model.
"""

from __future__ import annotations

from dataclasses import dataclass

from qwen_sglang.settings import DEFAULT_MODEL, DEFAULT_RERANK_MODEL

__all__ = ["EMBEDDING", "RERANKING", "ClientRole"]


@dataclass(frozen=True)
class ClientRole:
    """What messages say of a client and what it assumes of a server that names no model."""

    client: str
    """The public class, as messages name it (``"EmbeddingClient"``)."""
    server: str
    """What its server serves, for messages (``"embedding"``: "the embedding server at ...")."""
    default_model: str
    """The model assumed for a server that names none (a warning says so)."""
    model_env: str
    """The environment variable that names its model."""
    serve: str
    """The command that starts a server of its kind, ``--model`` left to add."""


EMBEDDING = ClientRole("EmbeddingClient", "embedding", DEFAULT_MODEL, "QWEN_SGLANG_MODEL", "qwen-sglang serve")
RERANKING = ClientRole(
    "RerankClient", "reranker", DEFAULT_RERANK_MODEL, "QWEN_SGLANG_RERANK_MODEL", "qwen-sglang serve --task rerank"
)
