"""Managed embedding servers: start SGLang (or the local backend) from Python, safely.

- `ManagedServer` (`qwen_sglang.servers.lifecycle`): the lifecycle every backend shares (ports,
  the process group and its watchdog, signals, ``atexit``, readiness, the log) and the public
  handle clients use (`ManagedServer.get_client`).
- `SGLangServer` (`qwen_sglang.servers.sglang`): SGLang, with the flags of the installed version
  (`qwen_sglang.servers.options`: the options table, field → flag, by version).
- `LocalEmbeddingServer`, `LocalRerankServer` (`qwen_sglang.servers.local`): the local CPU backends.
- `ManagedRouter` (`qwen_sglang.servers.router`): N workers behind ``sglang-router`` as one.
- `launch_server`: the right one for this machine; `qwen_sglang.servers.probe`: ``doctor``'s checks.

API keys never reach the command line of the local backends (an environment variable) nor of
SGLang (a private config file).

Example::

    from qwen_sglang import SGLangServer
    from langchain_qwen_sglang import QwenSGLangEmbeddings

    with SGLangServer("Qwen/Qwen3-Embedding-4B", mem_fraction_static=0.3) as server:
        embeddings = QwenSGLangEmbeddings(server=server)
        vectors = embeddings.embed_documents(["hello"])
"""

from __future__ import annotations

import logging
import os
from typing import Any, Literal

from qwen_sglang.errors import ConfigurationError, ServerStartError
from qwen_sglang.servers.keys import SERVER_API_KEY_ENV, check_api_key, read_api_key
from qwen_sglang.servers.lifecycle import ManagedServer
from qwen_sglang.servers.local import (
    LocalEmbeddingOptions,
    LocalEmbeddingServer,
    LocalRerankOptions,
    LocalRerankServer,
    local_extra_hint,
    missing_local_extra,
)
from qwen_sglang.servers.options import WRONG_FLAGS, SGLangOptions
from qwen_sglang.servers.ports import MAX_SGLANG_PORT, free_port, port_in_use_message
from qwen_sglang.servers.router import ManagedRouter, RouterProcess, router_available
from qwen_sglang.servers.sglang import SGLangServer, cuda_visible, sglang_available

__all__ = [
    "MAX_SGLANG_PORT",
    "SERVER_API_KEY_ENV",
    "WRONG_FLAGS",
    "LocalEmbeddingOptions",
    "LocalEmbeddingServer",
    "LocalRerankOptions",
    "LocalRerankServer",
    "ManagedRouter",
    "ManagedServer",
    "RouterProcess",
    "SGLangOptions",
    "SGLangServer",
    "ServerStartError",
    "check_api_key",
    "choose_backend",
    "cuda_visible",
    "free_port",
    "launch_server",
    "local_extra_hint",
    "missing_local_extra",
    "port_in_use_message",
    "read_api_key",
    "router_available",
    "sglang_available",
]

logger = logging.getLogger("qwen_sglang.servers")


def choose_backend() -> tuple[Literal["sglang", "local"], str]:
    """What ``backend="auto"`` means here, and why: SGLang with a CUDA GPU, else the local backend."""
    has_sglang, has_gpu = sglang_available(), cuda_visible()
    if has_sglang and has_gpu:
        return "sglang", "sglang is installed and a CUDA GPU is visible"
    return "local", "no CUDA GPU is visible" if not has_gpu else "sglang is not installed"


def launch_server(
    model: str | os.PathLike[str],
    backend: Literal["auto", "sglang", "local"] = "auto",
    *,
    task: Literal["embed", "rerank"] = "embed",
    start: bool = True,
    **options: Any,
) -> ManagedServer:
    """Create (and by default start) a managed server.

    ``backend="auto"`` picks SGLang when it is importable and a CUDA GPU is visible, otherwise
    the local backend, and logs which and why. ``task="rerank"`` serves a Qwen3-Reranker
    (`SGLangServer` without ``--is-embedding``, or `LocalRerankServer`). Options are those of the
    chosen class; with ``"auto"``, options the chosen backend does not have (GPU tuning such as
    ``mem_fraction_static`` on the CPU backend) are left out and logged, so one call works on both
    kinds of machine. With an explicit backend they are a `ConfigurationError`.

    Example:
        ```python
        from qwen_sglang import launch_server

        with launch_server("/models/Qwen3-Reranker-0.6B", task="rerank") as server:
            print(server.root_url + "/v1/score")
        ```
    """
    if task not in ("embed", "rerank"):
        raise ConfigurationError(f"task must be 'embed' or 'rerank', not {task!r}")
    local: type[ManagedServer] = LocalRerankServer if task == "rerank" else LocalEmbeddingServer
    classes: dict[str, type[ManagedServer]] = {"sglang": SGLangServer, "local": local}
    if backend == "auto":
        backend, why = choose_backend()
        logger.info("backend=auto chose the %s backend: %s", backend, why)
        options, dropped = classes[backend].split_options(options)
        if dropped:
            logger.info("the %s backend has no %s: left out", backend, ", ".join(dropped))
    if backend not in classes:
        raise ConfigurationError(f"backend must be 'auto', 'sglang' or 'local', not {backend!r}")
    if backend == "sglang":
        options["task"] = task
    server = classes[backend](model, **options)
    return server.start() if start else server
