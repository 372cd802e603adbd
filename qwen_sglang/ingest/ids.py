"""Chunk ids: deterministic, content-addressed (a rerun finds what is stored by id)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from qwen_sglang.client.discovery import hub_id

__all__ = ["canonical", "chunk_id", "digest", "model_name", "sha16", "with_model"]


def canonical(metadata: Mapping[str, Any]) -> str:
    """``metadata`` as one JSON text, keys sorted (equal metadata, equal text)."""
    return json.dumps(metadata, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def sha16(text: str) -> str:
    """The first 16 hex digits of the SHA-256 of ``text``."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def model_name(model: str) -> str:
    """What a chunk id keeps of the model that embedded it: the last part of its path or hub id
    (``/models/Qwen3-Embedding-4B``, ``Qwen/Qwen3-Embedding-4B`` and the hub cache's snapshot
    folder of it, whose last part is a revision's hash, are one model)."""
    path = hub_id(model) or model.replace("\\", "/").rstrip("/")
    return path.rsplit("/", 1)[-1] or model


def with_model(cid: str, model: str | None) -> str:
    """``cid`` for the vectors of ``model``: ``-`` and ``sha256(model_name(model))[:8]``
    appended (``None``: a store that embeds the texts itself; ``cid`` as it is)."""
    return cid if model is None else f"{cid}-{sha16(model_name(model))[:8]}"


def chunk_id(
    source: str, index: int, text: str, metadata: Mapping[str, Any] | None = None, *, model: str | None = None
) -> str:
    """Deterministic id: ``sha256(source)[:16]-index-sha256(text, metadata)[:16]-sha256(model)[:8]``.

    ``source`` is the file's resolved path, or ``path#id`` for a JSON-lines record (see
    docs/ingestion.md); ``metadata`` is the document's own metadata (a change of it is a new
    chunk, so the store never keeps stale metadata); ``model`` the model whose vectors are stored
    under the id (`with_model`: another model is a new chunk, and the first model's are stale
    chunks, deleted where ingest deletes them: Chroma, LlamaIndex stores).
    """
    content = text if not metadata else f"{text}\x00{canonical(metadata)}"
    return with_model(f"{sha16(source)}-{index}-{sha16(content)}", model)


def digest(text: str) -> int:
    """An 8-byte hash of ``text`` (what a run keeps per chunk to find stale ones)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")
