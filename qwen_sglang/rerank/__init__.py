"""Reranking with Qwen3-Reranker served by SGLang: `RerankClient` and its results.

Where each concern lives:

- `qwen_sglang.rerank.client`: `RerankClient`, the public API (sync and async), driven by the
  embedding client's shells (`qwen_sglang.EmbeddingClient.run_flow`).
- `qwen_sglang.rerank.engine`: the flows (discovery, the template from the server's tokenizer,
  ``/v1/score`` batches with the 413 fallback), on the embedding client's engine.
- `qwen_sglang.rerank.plan`: one call with no IO (checks, request items, body-only truncation,
  batches, the answer's checks, the ranking).
- `qwen_sglang.rerank_format`: Qwen3-Reranker's prompt and score, byte for byte.
"""

from __future__ import annotations

from qwen_sglang.rerank.client import RerankClient
from qwen_sglang.rerank.plan import RerankResult

__all__ = ["RerankClient", "RerankResult"]
