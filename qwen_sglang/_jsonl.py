"""JSON lines, read one way: bounded lines, strict JSON (no ``NaN``), one object per line.

Used by `qwen_sglang.ingest` (records, reported and skipped when bad) and `qwen_sglang.eval`
(queries and corpus, an error naming the file and line when bad).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from qwen_sglang.errors import InvalidInputError

__all__ = ["MAX_LINE_BYTES", "READ_BYTES", "JSONLineError", "iter_lines", "parse_object", "read_objects"]

#: Bytes read at a time past an over-long line, and the longest line accepted.
READ_BYTES = 1 << 20
MAX_LINE_BYTES = 1 << 24


class JSONLineError(ValueError):
    """One line is not a JSON object; the message says why (without the file and line)."""


def iter_lines(fh: BinaryIO, on_read: Callable[[int], None] | None = None) -> Iterator[tuple[int, bytes | None]]:
    """``(line number, bytes)`` of each line of ``fh``, or ``None`` for a line longer than
    `MAX_LINE_BYTES` (read past without holding it); ``on_read`` gets the bytes consumed."""
    number = 0
    while raw := fh.readline(MAX_LINE_BYTES + 1):
        number += 1
        if on_read is not None:
            on_read(len(raw))
        if len(raw) <= MAX_LINE_BYTES or raw.endswith(b"\n"):
            yield number, raw
            continue
        while raw and not raw.endswith(b"\n"):
            raw = fh.readline(READ_BYTES)
            if on_read is not None:
                on_read(len(raw))
        yield number, None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_object(line: str) -> dict[str, Any]:
    """The JSON object on ``line``.

    Raises:
        JSONLineError: not JSON (``NaN`` and ``Infinity`` included, too deep a nesting), or not
            an object.
    """
    try:
        obj = json.loads(line, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise JSONLineError(f"malformed JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise JSONLineError(f"expected a JSON object, not {type(obj).__name__}")
    return obj


def read_objects(path: str | os.PathLike[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each non-blank line of a UTF-8 JSON-lines file.

    Raises:
        InvalidInputError: a line that is not UTF-8, too long or not a JSON object, as
            ``path:line: why``.
    """
    p = Path(path)
    with p.open("rb") as fh:
        for number, raw in iter_lines(fh):
            if raw is None:
                raise InvalidInputError(f"{p}:{number}: line longer than {MAX_LINE_BYTES:,} bytes")
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidInputError(f"{p}:{number}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
            if not line.strip():
                continue
            try:
                yield number, parse_object(line)
            except JSONLineError as exc:
                raise InvalidInputError(f"{p}:{number}: {exc}") from None
