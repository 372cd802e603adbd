"""Where a model lives: a local directory or a Hugging Face hub id (no web framework needed).

The managed servers and the CLI check a ``--model`` argument with these helpers before anything
starts, so a typo fails at once and an install without the ``local`` extra (FastAPI,
sentence-transformers) can still validate and launch SGLang. ``huggingface_hub`` is imported
only when a hub id must be resolved.
"""

from __future__ import annotations

import logging
from pathlib import Path

from qwen_sglang.errors import ModelNotAvailableError

__all__ = ["check_model_arg", "is_hub_id", "resolve_model_path"]

logger = logging.getLogger("qwen_sglang.servers.models_path")


def is_hub_id(model: str) -> bool:
    """Whether ``model`` looks like a Hugging Face repository id (``org/name``), not a path."""
    parts = model.split("/")
    return len(parts) == 2 and all(parts) and not model.startswith((".", "~")) and "\\" not in model


def check_model_arg(model: str) -> None:
    """Fail fast, before any server starts, for a local path that does not hold a model.

    Hub ids that are not local paths are left to the server (it may download them).
    Raises `ModelNotAvailableError`.
    """
    if Path(model).expanduser().exists() or not is_hub_id(model):
        resolve_model_path(model)


def resolve_model_path(model: str) -> Path:
    """Return a local directory for ``model``: the path itself, or a hub snapshot.

    Raises `ModelNotAvailableError` with a clear message when the directory does not exist
    and the model cannot be obtained from the Hugging Face hub (offline machines).
    """
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists() and not (path / "modules.json").exists():
            raise ModelNotAvailableError(f"{path} is a directory but holds no model (no config.json)")
        return path.resolve()
    if path.exists():
        raise ModelNotAvailableError(f"{model!r} is a file, not a model directory")
    if not is_hub_id(model):
        raise ModelNotAvailableError(f"model directory {model!r} does not exist")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:  # pragma: no cover - huggingface_hub comes with the local extra
        raise ModelNotAvailableError(f"{model!r} is not a local directory and huggingface_hub is missing") from exc
    try:
        return Path(snapshot_download(model, local_files_only=True))
    except Exception as exc:
        logger.debug("%s is not in the local hub cache (%s); trying a download", model, exc)
    try:
        return Path(snapshot_download(model, etag_timeout=10))
    except Exception as exc:
        raise ModelNotAvailableError(
            f"model {model!r} is not in the local Hugging Face cache and could not be downloaded "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). Pass a local "
            "model directory, or download it where a model hub is reachable."
        ) from None
