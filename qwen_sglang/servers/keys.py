"""A server's API key: where it comes from (flag, file, environment) and what an HTTP header can carry.

The local backends read the key from `SERVER_API_KEY_ENV`, never from their command line, which
every local user can read with ``ps``; ``qwen-sglang serve`` reads it the same way for SGLang.
"""

from __future__ import annotations

import os
from pathlib import Path

from qwen_sglang.errors import ConfigurationError

__all__ = ["SERVER_API_KEY_ENV", "check_api_key", "read_api_key"]

#: The environment variable the local backends read their API key from (``qwen-sglang serve``
#: reads it for SGLang too). Unlike ``--api-key KEY``, it is not shown by ``ps`` to other users.
SERVER_API_KEY_ENV = "QWEN_SGLANG_SERVER_API_KEY"


def check_api_key(key: str) -> str:
    """Return ``key`` if an HTTP client can send it as ``Authorization: Bearer KEY``; else raise.

    Raises `ConfigurationError` (empty, or characters other than printable ASCII, such as a
    newline pasted with it).
    """
    if not key:
        raise ConfigurationError("the API key is empty")
    if not all(33 <= ord(c) <= 126 for c in key):
        raise ConfigurationError(
            "the API key must be printable ASCII without spaces or newlines (it travels in an HTTP header)"
        )
    return key


def read_api_key(key: str | None = None, key_file: str | os.PathLike[str] | None = None) -> str | None:
    """The server's API key: ``key``, else the first line of ``key_file``, else `SERVER_API_KEY_ENV`.

    A key file (``chmod 600``, or a Docker/Kubernetes secret) and the environment variable keep
    the key out of the command line, which every local user can read with ``ps``.
    Raises `ConfigurationError` when both ``key`` and ``key_file`` are given, or the key is not
    usable (`check_api_key`).

    Example:
        ```python
        from qwen_sglang.servers import read_api_key

        key = read_api_key(key_file="/run/secrets/embedding-key")
        ```
    """
    if key is not None and key_file is not None:
        raise ConfigurationError("give the API key once: --api-key or --api-key-file, not both")
    if key_file is not None:
        try:
            text = Path(key_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigurationError(f"could not read the API key file {key_file}: {exc}") from None
        lines = text.strip().splitlines()
        return check_api_key(lines[0].strip() if lines else "")
    if key is None:
        key = os.environ.get(SERVER_API_KEY_ENV) or None
    return check_api_key(key) if key is not None else None
