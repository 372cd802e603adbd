"""Launchers of the local CPU backends: `LocalEmbeddingServer` and `LocalRerankServer`.

Both run ``python -m qwen_sglang serve --backend local`` (``--task rerank`` for the reranker) as
a managed child, with the lifecycle of every backend (`qwen_sglang.servers.lifecycle`). Their
options are typed models whose fields carry the ``serve`` flag they become; an API key reaches
the child through `qwen_sglang.servers.keys.SERVER_API_KEY_ENV`, never its command line. Nothing
here imports the backend itself (FastAPI, torch): a missing ``local`` extra is found from the
installed files and named with the command that installs it.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from qwen_sglang.errors import ModelNotAvailableError, ServerStartError
from qwen_sglang.servers.keys import SERVER_API_KEY_ENV
from qwen_sglang.servers.lifecycle import ManagedServer
from qwen_sglang.servers.models_path import check_model_arg
from qwen_sglang.servers.options import ALWAYS, Flag, render_flags

__all__ = [
    "LocalEmbeddingOptions",
    "LocalEmbeddingServer",
    "LocalRerankOptions",
    "LocalRerankServer",
    "local_extra_hint",
    "missing_local_extra",
]

Task = Literal["embed", "rerank"]

#: What each local backend imports: the ``local`` extra, plus torch, which the user installs.
_LOCAL_MODULES: dict[Task, tuple[str, ...]] = {
    "embed": ("fastapi", "uvicorn", "sentence_transformers", "torch"),
    "rerank": ("fastapi", "uvicorn", "transformers", "torch"),
}


def missing_local_extra(task: Task = "embed") -> list[str]:
    """The modules of the local backend for ``task`` this interpreter cannot import (found without importing)."""
    missing = []
    for name in _LOCAL_MODULES[task]:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    return missing


def local_extra_hint(missing: Sequence[str]) -> str:
    """How to install what `missing_local_extra` reports."""
    hint = f"the local backend needs {', '.join(missing)}: pip install 'qwen-sglang[local]'"
    if "torch" in missing:
        hint += " and a CPU build of torch (pip install torch --index-url https://download.pytorch.org/whl/cpu)"
    return hint


def _host_names(hosts: tuple[str, ...]) -> tuple[str, ...]:
    if any(not h or "," in h for h in hosts):
        raise ValueError("must be a list of host names, for example ['gpu-box.lan']")
    return hosts


class _LocalOptions(BaseModel):
    """What both local backends take (each field is the ``qwen-sglang serve`` flag of its name)."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, use_attribute_docstrings=True)

    context_length: Annotated[int | None, Field(ge=2), Flag("--context-length")] = None
    """Most tokens per input (default: the model's)."""
    device: Annotated[str, Flag("--device", omit=ALWAYS)] = "cpu"
    """sglang: cuda (default), xpu, hpu, npu, cpu, musa; local: cpu (default), cuda."""
    log_level: Annotated[str, Flag("--log-level", omit=ALWAYS)] = "info"
    """The server's log level (default info)."""
    allowed_hosts: Annotated[
        tuple[str, ...], Field(strict=False), AfterValidator(_host_names), Flag("--allowed-hosts")
    ] = ()
    """Host names to answer to besides localhost, IP addresses and the bound host (comma-separated
    on the command line, for clients that use a DNS name); '*' for any."""
    max_request_tokens: Annotated[int | None, Field(ge=1), Flag("--max-request-tokens")] = None
    """Most tokens in one request (embeddings: 1048576; reranker: 2000000)."""
    max_request_bytes: Annotated[int | None, Field(ge=1), Flag("--max-request-bytes")] = None
    """Largest request body in bytes (embeddings: 32 MiB; reranker: 64 MB)."""
    header_timeout: Annotated[float | None, Field(gt=0), Flag("--header-timeout")] = None
    """Seconds a connection may take to send a request's headers (default 10)."""


class LocalEmbeddingOptions(_LocalOptions):
    """The options of `LocalEmbeddingServer` (``qwen-sglang serve --backend local``)."""

    matryoshka: Annotated[bool, Flag("--no-matryoshka", kind="negated")] = True
    """Allow the 'dimensions' request field (default on)."""


class LocalRerankOptions(_LocalOptions):
    """The options of `LocalRerankServer` (``qwen-sglang serve --backend local --task rerank``)."""

    rerank_prompt: Annotated[Literal["sglang", "qwen"] | None, Flag("--rerank-prompt")] = None
    """What /v1/rerank renders: sglang (SGLang's template, the default) or qwen (Qwen's exact prompt)."""
    dtype: Annotated[str | None, Flag("--dtype")] = None
    """The torch dtype of the weights (local reranker default float32)."""


class _LocalServer(ManagedServer):
    """What both local launchers share: the ``serve`` command, the key by environment, the checks."""

    task: ClassVar[Task] = "embed"
    options: _LocalOptions

    def command(self) -> list[str]:
        argv = [sys.executable, "-m", "qwen_sglang", "serve", "--backend", "local"]
        argv += ["--task", self.task] if self.task != "embed" else []
        argv += ["--model", self.model_path, "--host", self.host, "--port", str(self.port)]
        if self.served_model_name:
            argv += ["--served-model-name", self.served_model_name]
        return argv + render_flags(self.options) + self.extra_args

    def _secret_env(self) -> dict[str, str]:
        return {SERVER_API_KEY_ENV: self.api_key.get_secret_value()} if self.api_key is not None else {}

    def validate(self) -> None:
        missing = missing_local_extra(self.task)
        if missing:
            raise ServerStartError(local_extra_hint(missing))
        try:
            check_model_arg(self.model_path)
        except ModelNotAvailableError as exc:
            raise ServerStartError(str(exc)) from None


class LocalEmbeddingServer(_LocalServer):
    """The same lifecycle for the local CPU backend (``qwen-sglang serve --backend local``).

    Instantiate:
        ```python
        from qwen_sglang import LocalEmbeddingServer

        with LocalEmbeddingServer("/models/Qwen3-Embedding-0.6B") as server:
            print(server.base_url)
        ```

    Options: `LocalEmbeddingOptions` (``matryoshka``, ``context_length``, ``allowed_hosts``,
    ``device``, ``log_level``, the request limits). An ``api_key`` reaches the server through the
    `SERVER_API_KEY_ENV` environment variable, not its command line; ``allowed_hosts`` adds names
    the server answers to besides ``localhost``, IP addresses and ``host`` (``["*"]``: any), for
    clients that reach it through a DNS name.
    """

    backend: ClassVar[str] = "local"
    options_model: ClassVar[type[LocalEmbeddingOptions]] = LocalEmbeddingOptions
    options: LocalEmbeddingOptions


class LocalRerankServer(_LocalServer):
    """The local reranker backend (SGLang's ``/v1/score`` and ``/v1/rerank`` on CPU) as a managed server.

    Instantiate:
        ```python
        from qwen_sglang.servers import LocalRerankServer

        with LocalRerankServer("/models/Qwen3-Reranker-0.6B", rerank_prompt="qwen") as server:
            print(server.root_url + "/v1/rerank")
        ```

    Options: `LocalRerankOptions`; the key travels as for `LocalEmbeddingServer`.
    """

    backend: ClassVar[str] = "local-rerank"
    task: ClassVar[Task] = "rerank"
    options_model: ClassVar[type[LocalRerankOptions]] = LocalRerankOptions
    options: LocalRerankOptions
