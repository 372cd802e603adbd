"""`SGLangServer`: a real SGLang embedding server, started with the flags its version takes.

The options are `qwen_sglang.servers.options.SGLangOptions`; the command line is built from
them for the SGLang that will run it (the installed one, read from its metadata without
importing it, or ``sglang_version=``), and on a Hopper GPU whose kernel package lacks FA3 (SGLang's
default there, which it does not fall back from) the attention backend becomes ``triton``.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import SecretStr

from qwen_sglang.errors import ConfigurationError, ServerStartError
from qwen_sglang.servers.lifecycle import ManagedServer
from qwen_sglang.servers.models_path import is_hub_id
from qwen_sglang.servers.options import (
    CONFIG_FILE_SINCE,
    NEWEST_READ,
    SGLangOptions,
    adapt_argv,
    installed_sglang_version,
    parse_version,
    render_flags,
)
from qwen_sglang.servers.ports import MAX_SGLANG_PORT
from qwen_sglang.servers.probe import ServerReport, probe_server

__all__ = [
    "SGLangServer",
    "attention_fallback",
    "cuda_visible",
    "fa3_installed",
    "gpu_compute_capability",
    "sglang_available",
]

logger = logging.getLogger("qwen_sglang.servers")

Task = Literal["embed", "rerank"]


def sglang_available() -> bool:
    """Whether the ``sglang`` package can be imported by this interpreter."""
    return importlib.util.find_spec("sglang") is not None


def _nvidia_smi(*args: str) -> str | None:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run([smi, *args], capture_output=True, text=True, timeout=10, check=False)  # noqa: S603
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def cuda_visible() -> bool:
    """Whether a CUDA GPU is visible (``nvidia-smi -L`` lists one), without importing torch."""
    return "GPU" in (_nvidia_smi("-L") or "")


def gpu_compute_capability() -> str | None:
    """The first GPU's compute capability (``"9.0"`` on Hopper) from ``nvidia-smi``, or None."""
    out = _nvidia_smi("--query-gpu=compute_cap", "--format=csv,noheader")
    lines = (out or "").split()
    return lines[0] if lines else None


def fa3_installed() -> bool | None:
    """Whether SGLang's kernel package (``sgl_kernel``) holds its FA3 extension (``flash_ops``),
    read from its files; None when the package is not found."""
    try:
        spec = importlib.util.find_spec("sgl_kernel")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return any(any(Path(folder).glob("flash_ops*")) for folder in spec.submodule_search_locations)


def attention_fallback(options: SGLangOptions, capability: str | None, has_fa3: bool | None) -> str | None:
    """Why the attention backend must be ``triton`` instead of SGLang's default, or None.

    SGLang's default on Hopper (compute capability 9.x) is FA3, and a kernel package without it
    ends start-up with "Can not import FA3 in sgl_kernel" instead of falling back.
    """
    if options.attention_backend is not None or options.device not in (None, "cuda"):
        return None
    if capability is None or not capability.startswith("9.") or has_fa3 is not False:
        return None
    return (
        f"this GPU (compute capability {capability}) defaults to FA3 attention, which the installed "
        "sgl_kernel lacks (no flash_ops): using attention_backend='triton' (pass attention_backend to choose)"
    )


class SGLangServer(ManagedServer):
    """Start, wait for and stop a real SGLang embedding server.

    Every option maps to SGLang's real flag (`qwen_sglang.servers.options.SGLangOptions`;
    ``--is-embedding`` is always passed; Matryoshka ``dimensions`` are enabled with
    ``--json-model-override-args '{"is_matryoshka": true}'``), in the spelling of the SGLang
    version that runs it (``sglang_version``, default: the installed one). Flags that blog posts
    get wrong are refused with an explanation (`qwen_sglang.servers.WRONG_FLAGS`).

    Setup:
        ```bash
        pip install 'qwen-sglang[sglang]'   # on a machine with a CUDA GPU
        ```

    Instantiate:
        ```python
        from qwen_sglang import SGLangServer

        server = SGLangServer("Qwen/Qwen3-Embedding-4B", mem_fraction_static=0.3)
        print(server.display_command())   # the exact command, key masked
        ```

    Use:
        ```python
        with server:
            print(server.base_url)          # http://127.0.0.1:<port>/v1
        ```
    """

    backend: ClassVar[str] = "sglang"
    options_model: ClassVar[type[SGLangOptions]] = SGLangOptions
    max_port: ClassVar[int] = MAX_SGLANG_PORT
    default_startup_timeout: ClassVar[float] = 900.0
    launcher_args: ClassVar[frozenset[str]] = ManagedServer.launcher_args | {"sglang_version", "task"}
    options: SGLangOptions

    def __init__(
        self,
        model_path: str | os.PathLike[str],
        *,
        task: Task = "embed",
        sglang_version: str | None = None,
        **kwargs: Any,
    ) -> None:
        if task not in ("embed", "rerank"):
            raise ConfigurationError(f"task must be 'embed' or 'rerank', got {task!r}")
        self.task: Task = task
        super().__init__(model_path, **kwargs)
        if sglang_version is not None:
            parse_version(sglang_version)  # a ConfigurationError now, not at start
        self._sglang_version = sglang_version
        self._attention_why: str | None = None
        self._attention_checked = False

    @property
    def sglang_version(self) -> str:
        """The SGLang version the command line is built for: given, else installed, else the
        newest this package read (`qwen_sglang.servers.options.NEWEST_READ`)."""
        return self._sglang_version or installed_sglang_version() or NEWEST_READ

    def _attention(self) -> SGLangOptions:
        """The options with the attention fallback applied (checked once, on this machine)."""
        if not self._attention_checked:
            self._attention_checked = True
            self._attention_why = attention_fallback(self.options, gpu_compute_capability(), fa3_installed())
            if self._attention_why:
                logger.warning("%s", self._attention_why)
        if self._attention_why:
            return self.options.model_copy(update={"attention_backend": "triton"})
        return self.options

    def allowed_extra_flags(self) -> frozenset[str]:
        """A reranker's ``/v1/rerank`` needs SGLang's ``qwen3_reranker.jinja`` as ``--chat-template``
        (docs/reranking.md); an embedding server must not get one."""
        return frozenset({"--chat-template"}) if self.task == "rerank" else frozenset()

    def command(self) -> list[str]:
        argv = [sys.executable, "-m", "sglang.launch_server", "--model-path", self.model_path]
        # An embedding model runs as one (--is-embedding, Matryoshka allowed); a Qwen3-Reranker is
        # a causal LM scored on its next-token logits (/v1/score), so it gets neither.
        options = self._attention()
        if self.task == "embed":
            argv.append("--is-embedding")
        else:
            options = options.model_copy(update={"matryoshka": False})
        argv += ["--host", self.host, "--port", str(self.port)]
        argv += render_flags(options)
        if self.served_model_name:
            argv += ["--served-model-name", self.served_model_name]
        if self.api_key is not None:
            argv += ["--api-key", self.api_key.get_secret_value()]
        return adapt_argv(argv + self.extra_args, self.sglang_version)

    def validate(self) -> None:
        if not sglang_available():
            raise ServerStartError(
                "sglang is not installed for this Python: pip install 'qwen-sglang[sglang]' on a "
                "machine with a CUDA GPU, or use the local backend (LocalEmbeddingServer)"
            )
        path = Path(self.model_path).expanduser()
        if not path.exists() and not is_hub_id(self.model_path):
            raise ServerStartError(f"model directory {self.model_path!r} does not exist")
        if path.exists() and not (path / "config.json").exists():
            raise ServerStartError(f"{self.model_path!r} holds no config.json: not a model directory")

    def _launch_argv(self, argv: list[str]) -> list[str]:
        """SGLang takes its key only as ``--api-key``; from 0.5.5 a ``--config`` YAML file may carry it.

        The key goes to a file only this user can read (removed once the server is ready, or at
        stop), so ``ps`` shows ``--config FILE`` instead of the key.
        """
        if self.api_key is None or "--api-key" not in argv:
            return argv
        if "--config" in argv or parse_version(self.sglang_version) < CONFIG_FILE_SINCE:
            logger.warning(
                "SGLang gets the API key on its command line (visible to local users in ps): %s",
                "extra_args has its own --config" if "--config" in argv else "sglang older than 0.5.5",
            )
            return argv
        i = argv.index("--api-key")
        fd, name = tempfile.mkstemp(prefix="qwen-sglang-args-", suffix=".yaml")  # mode 0600
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps({"api-key": argv[i + 1]}))  # JSON is YAML; the key stays a string
        self._secret_files.append(Path(name))
        return [*argv[:i], *argv[i + 2 :], "--config", name]

    @classmethod
    def attach(cls, base_url: str, api_key: str | SecretStr | None = None, *, timeout: float = 10.0) -> ServerReport:
        """Check an existing server without owning its process; returns a `ServerReport`."""
        return probe_server(base_url, api_key=api_key, timeout=timeout)
