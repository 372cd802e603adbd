"""What several commands share: the client options and the settings they make, SIGTERM as Ctrl-C."""

from __future__ import annotations

import argparse
import contextlib
import signal
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qwen_sglang.settings import QwenSGLangSettings

__all__ = ["UsageError", "add_client_args", "client_settings", "sigterm_as_interrupt"]


class UsageError(Exception):
    """A wrong combination of options: `qwen_sglang.cli.main` reports it as argparse does (exit 2)."""


def add_client_args(p: argparse.ArgumentParser) -> None:
    """The options every command that talks to a server takes: where it is, its key, its model."""
    p.add_argument(
        "--base-url", default=None, help="server URL (default: $QWEN_SGLANG_BASE_URL or http://127.0.0.1:30000/v1)"
    )
    p.add_argument("--api-key", default=None, help="bearer key (default: $QWEN_SGLANG_API_KEY)")
    p.add_argument(
        "--model",
        default=None,
        help="the served model (default: $QWEN_SGLANG_MODEL, else what the server serves); "
        "a different one than the server's is an error",
    )


def client_settings(args: argparse.Namespace, **options: Any) -> QwenSGLangSettings:
    """The shared settings model from the client options and ``options`` (those not ``None``):
    settings left unset keep room for what the server says (model, request shape)."""
    from qwen_sglang.settings import QwenSGLangSettings

    given = {name: value for name, value in options.items() if value is not None}
    client = {name: value for name in ("base_url", "api_key", "model") if (value := vars(args).get(name)) is not None}
    return QwenSGLangSettings(**(client | given))


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM stops the run like Ctrl-C (the write in progress finishes, a summary is printed)."""

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
