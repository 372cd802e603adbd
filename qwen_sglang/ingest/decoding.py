"""Decoding files: which of the encodings asked for reads a whole file (streaming), and why not."""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qwen_sglang._jsonl import READ_BYTES
from qwen_sglang.errors import ConfigurationError

__all__ = [
    "Scan",
    "check_encodings",
    "codec",
    "has_surrogate",
    "pick_encoding",
    "printable",
    "shown",
    "undecodable",
]


def printable(path: str) -> str:
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def shown(text: str) -> str:
    """``text`` with lone surrogates escaped (printable, unlike the text itself)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def has_surrogate(text: str) -> int:
    """Index of the first lone surrogate in ``text``, or -1."""
    found = _SURROGATE.search(text)
    return found.start() if found else -1


_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass
class Scan:
    error: str | None = None  # why the file does not decode
    offset: int = 0  # byte where it failed
    blank: bool = True  # only whitespace


def codec(encoding: str) -> str:
    """The codec that reads ``encoding`` (UTF-8 with or without a byte-order mark)."""
    name = codecs.lookup(encoding).name
    return "utf-8-sig" if name == "utf-8" else name


def check_encodings(encoding: str | Sequence[str]) -> list[str]:
    """Validate ``encoding`` (a codec name, a comma-separated list, or ``auto``) and return the
    candidates in the order they are tried."""
    names = encoding.split(",") if isinstance(encoding, str) else list(encoding)
    names = [n.strip().lower() for n in names if n.strip()]
    if not names:
        raise ConfigurationError("encoding is empty: give a codec name such as utf-8, gb18030 or latin-1, or auto")
    out = []
    for name in names:
        if name == "auto":  # UTF-8 first: detection only where it fails
            _detector()
            out += [] if "utf-8" in out else ["utf-8"]
            out.append(name)
            continue
        try:
            info = codecs.lookup(name)
        except LookupError:
            raise ConfigurationError(
                f"unknown encoding {name!r}: use a Python codec name (utf-8, gb18030, big5, shift_jis, "
                "latin-1, cp1252, ...) or auto"
            ) from None
        try:
            "a".encode(info.name)  # bytes-to-bytes and str-to-str codecs (base64, rot13) refuse
        except LookupError:
            raise ConfigurationError(f"{name!r} is not a text encoding") from None
        out.append(info.name)
    return out


def _detector() -> Callable[[bytes], Any]:
    try:
        from charset_normalizer import from_bytes
    except ImportError:
        raise ConfigurationError(
            "encoding 'auto' needs charset-normalizer: pip install 'qwen-sglang[detect]' "
            "(or name the encodings, e.g. --encoding utf-8,gb18030)"
        ) from None
    return from_bytes  # type: ignore[no-any-return]


def _detect(path: Path, around: int) -> str | None:
    """Guess the encoding from up to 1 MiB of the file around byte ``around`` (where UTF-8 failed)."""
    start = max(0, around - 4096)
    with path.open("rb") as fh:
        fh.seek(start)
        sample = fh.read(READ_BYTES)
    if start:  # do not start inside a multi-byte character: from the next line
        sample = sample[sample.find(b"\n") + 1 :]
    best = _detector()(sample).best()
    return None if best is None else codecs.lookup(best.encoding).name


def _scan(path: Path, encoding: str) -> Scan:
    """Decode the whole file, streaming: does it decode, and does it hold any text?"""
    decoder = codecs.getincrementaldecoder(codec(encoding))("strict")
    scan, offset, newlines = Scan(), 0, 0
    with path.open("rb") as fh:
        while True:
            raw = fh.read(READ_BYTES)
            pending = len(decoder.getstate()[0])
            try:
                text = decoder.decode(raw, final=not raw)
            except UnicodeDecodeError as exc:  # exc.start counts the bytes held from the last block
                line = newlines + raw[: max(exc.start - pending, 0)].count(b"\n") + 1
                scan.offset = offset - pending + exc.start
                scan.error = f"{exc.reason} at line {line}, byte {scan.offset}"
                return scan
            if (bad := has_surrogate(text)) >= 0:
                scan.error, scan.offset = f"decodes to a lone surrogate near byte {offset}", offset + bad
                return scan
            if scan.blank and text and not text.isspace():
                scan.blank = False
            if not raw:
                return scan
            offset += len(raw)
            newlines += raw.count(b"\n")


def pick_encoding(path: Path, encodings: list[str]) -> tuple[str, Scan]:
    """The first candidate that decodes the whole file (``auto``: detected where UTF-8 failed);
    if none does, the first candidate with the first failure."""
    tried: list[tuple[str, Scan]] = []
    for name in encodings:
        if name == "auto":
            guess = _detect(path, tried[0][1].offset if tried else 0)
            if guess is None or any(guess == t for t, _ in tried):
                continue
            name = guess
        scan = _scan(path, name)
        if scan.error is None:
            return name, scan
        tried.append((name, scan))
    return tried[0]


def undecodable(tried: str, scan: Scan, encodings: list[str]) -> str:
    label = "UTF-8" if tried == "utf-8" else tried
    hint = "" if len(encodings) > 1 else "; name its encoding, e.g. --encoding utf-8,gb18030 (or auto)"
    return f"not {label} ({scan.error}){hint}"
