"""What several commands share: the client options and the settings they make, SIGTERM as Ctrl-C."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import signal
import sys
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from qwen_sglang.errors import ConfigurationError

if TYPE_CHECKING:
    from qwen_sglang.settings import QwenSGLangSettings

__all__ = [
    "DeprecatedAlias",
    "read_lines",
    "require_extras",
    "UsageError",
    "add_client_args",
    "add_request_shape_args",
    "client_settings",
    "sigterm_as_interrupt",
]

#: The client settings the request-shape options set (one name each, as in the settings model).
REQUEST_SHAPE = ("batch_size", "max_batch_tokens", "max_concurrency")


class UsageError(Exception):
    """A wrong combination of options: `qwen_sglang.cli.main` reports it as argparse does (exit 2)."""


def add_client_args(p: argparse.ArgumentParser, *, reranker: bool = False) -> None:
    """The options every command that talks to a server takes: where it is, its key, its model
    (``reranker``: a reranker server, whose URL and model the reranker's variables name first)."""
    url_env = "$QWEN_SGLANG_RERANK_BASE_URL, else $QWEN_SGLANG_BASE_URL" if reranker else "$QWEN_SGLANG_BASE_URL"
    model_env = "$QWEN_SGLANG_RERANK_MODEL" if reranker else "$QWEN_SGLANG_MODEL"
    p.add_argument(
        "--base-url",
        default=None,
        help=f"server URL, or several separated by commas (default: {url_env}, else http://127.0.0.1:30000/v1)",
    )
    p.add_argument("--api-key", default=None, help="bearer key (default: $QWEN_SGLANG_API_KEY)")
    p.add_argument(
        "--model",
        default=None,
        help=f"the served model (default: {model_env}, else what the server serves); "
        "a different one than the server's is an error",
    )


class DeprecatedAlias(argparse.Action):
    """An old spelling of an option: stores into the new option's ``dest`` and says, on stderr,
    which spelling replaces it."""

    def __init__(self, option_strings: list[str], dest: str, *, new: str, **kwargs: Any) -> None:
        self.new = new
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: Any = None
    ) -> None:
        print(f"warning: {option} is deprecated: use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def require_extras(what: str, modules: dict[str, str]) -> None:
    """Say which extras to install when any of ``modules`` (module name -> extra) cannot be
    imported, before anything starts (found without importing them)."""
    missing: dict[str, None] = {}
    for module, extra in modules.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing[extra] = None
    if missing:
        raise ConfigurationError(
            f'{what} needs the {", ".join(missing)} extra: pip install "qwen-sglang[{",".join(missing)}]"'
        )


def add_request_shape_args(p: argparse.ArgumentParser, *, items: str = "texts per embedding request") -> None:
    """How the client shapes its requests: ``items`` and tokens per request, requests in flight
    (default: the settings' defaults, or what the server asks for)."""
    request = items.split(" per ", 1)[1]
    g = p.add_argument_group("request shape (the client's batch_size, max_batch_tokens, max_concurrency)")
    g.add_argument("--batch-size", type=int, default=None, help=f"most {items} (default 32)")
    g.add_argument("--max-batch-tokens", type=int, default=None, help=f"token budget per {request} (default 8192)")
    g.add_argument(
        "--max-concurrency",
        type=int,
        default=None,
        help=f"{request}s in flight (default 8, or fewer where the server asks for it)",
    )
    g.add_argument("--request-size", type=int, dest="batch_size", action=DeprecatedAlias, new="--batch-size")
    p.add_argument(
        "--max-tokens",
        type=int,
        default=None,
        help="most tokens per text, longer ones are cut (default: the model's context, or the server's "
        "max_model_len; behind a router whose workers serve less, the value `serve --router` prints)",
    )
    g.add_argument(
        "--request-tokens", type=int, dest="max_batch_tokens", action=DeprecatedAlias, new="--max-batch-tokens"
    )


def client_settings(args: argparse.Namespace, **options: Any) -> QwenSGLangSettings:
    """The shared settings model from the client and request-shape options and ``options``
    (those not ``None``): settings left unset keep room for what the server says (model, request
    shape) and for the environment, which the settings model reads."""
    from qwen_sglang.settings import QwenSGLangSettings

    given = {name: value for name, value in options.items() if value is not None}
    names = ("base_url", "api_key", "model", "max_tokens", *REQUEST_SHAPE)
    client = {name: value for name in names if (value := vars(args).get(name)) is not None}
    return QwenSGLangSettings(**(client | given))


def read_lines(stream: Iterable[str]) -> list[str]:
    """The lines of ``stream`` (a file or stdin), one text each: without their line end (``\\n`` or
    ``\\r\\n``: stdin is not newline-translated) and without a leading byte-order mark (files
    saved as UTF-8 by Windows editors start with one; it is not the first text's)."""
    lines = [line.rstrip("\r\n") for line in stream]
    if lines:
        lines[0] = lines[0].removeprefix("\ufeff")
    return lines


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
