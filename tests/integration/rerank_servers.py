"""The local reranker backend as a managed child process, for tests.

Kept for tests written against the stand-in this module held before the managed launcher gained
``task="rerank"``: it is now `qwen_sglang.servers.LocalRerankServer` (``qwen-sglang serve
--backend local --task rerank`` with the lifecycle of every managed server).
"""

from __future__ import annotations

from qwen_sglang.servers import LocalRerankServer

__all__ = ["LocalRerankServer"]
