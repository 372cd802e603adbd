"""The embedding client: one engine, driven by a sync and an async shell.

Where each concern lives:

- `qwen_sglang.client.shells`: `EmbeddingClient`, the public API; its sync and async drivers
  (the only IO; `qwen_sglang.RerankClient` sends through them too: `EmbeddingClient.run_flow`).
- `qwen_sglang.client.fanout`: several flows at once, bounded (threads, or tasks).
- `qwen_sglang.client.connections`: the httpx clients, per process, address and event loop.
- `qwen_sglang.client.engine`: the sans-IO engine, every operation written once as a flow
  (discovery, the plan of a call, one batch with its Matryoshka, encoding and 413 fallbacks).
- `qwen_sglang.client.ops`: what a flow asks its driver (send a request, sleep).
- `qwen_sglang.client.retries`: one request with its retries, backoff and retry deadline.
- `qwen_sglang.client.tokens`: token counts and the long-text policy (chunk, truncate, error).
- `qwen_sglang.client.job`: one call's inputs, items and result (`EmbeddingResult`).
- `qwen_sglang.client.state`: what the client learned from the server (`ServerState`, the lock
  rule) and the terms of a call derived from the settings (`Terms`).
- `qwen_sglang.client.discovery`: reading the server's discovery answers (`ServerFacts`).
- `qwen_sglang.client.answers`: decoding answers and the typed error of a failed one.
- `qwen_sglang.client.roles`: which client a user holds (`EmbeddingClient`, `RerankClient`
  through it): the class its messages name, its default model and model variable.
- `qwen_sglang.client.transport`: one HTTP exchange, bounded in time and size.
"""

from __future__ import annotations

from qwen_sglang.client.discovery import ServerFacts
from qwen_sglang.client.job import EmbeddingResult, Kind, ProgressCallback
from qwen_sglang.client.shells import EmbeddingClient

__all__ = ["EmbeddingClient", "EmbeddingResult", "Kind", "ProgressCallback", "ServerFacts"]
