"""The local reranker backend as a managed child process, for tests.

A stand-in until the managed launcher gains ``task="rerank"``: the same `ManagedServer`
lifecycle (free port, own process group, log file, ``/health`` polled, SIGTERM then SIGKILL)
around ``python -m qwen_sglang.local_backend.rerank``.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from qwen_sglang.servers import ManagedServer


class LocalRerankServer(ManagedServer):
    """``python -m qwen_sglang.local_backend.rerank`` as a managed server."""

    backend = "local-rerank"

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        context_length: int | None = None,
        rerank_prompt: str = "sglang",
        **options: Any,
    ) -> None:
        super().__init__(str(model), **options)
        self.context_length = context_length
        self.rerank_prompt = rerank_prompt

    def command(self) -> list[str]:
        argv = [sys.executable, "-m", "qwen_sglang.local_backend.rerank", "--model", self.model_path]
        argv += ["--host", self.host, "--port", str(self.port), "--rerank-prompt", self.rerank_prompt]
        if self.served_model_name:
            argv += ["--served-model-name", self.served_model_name]
        if self.context_length is not None:
            argv += ["--context-length", str(self.context_length)]
        if self.api_key is not None:
            argv += ["--api-key", self.api_key.get_secret_value()]
        return argv + self.extra_args
