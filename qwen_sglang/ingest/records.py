"""One JSON-lines record: its key, its text and its metadata as a store keeps it exactly, or why not."""

from __future__ import annotations

import json
import math
from typing import Any

from qwen_sglang._jsonl import JSONLineError, parse_object
from qwen_sglang.ingest.decoding import codec, has_surrogate, shown
from qwen_sglang.ingest.ids import canonical, sha16

__all__ = ["RESERVED_KEYS", "parse_record"]

#: Metadata keys the ingester sets on every chunk (a record's own metadata may not use them).
RESERVED_KEYS = ("source", "chunk", "record_id")


def parse_record(raw: bytes, encoding: str) -> tuple[str, dict[str, Any], str] | str | None:
    """(record key, metadata, text) of one JSON line, an error message, or None for a blank line."""
    try:
        line = raw.decode(codec(encoding))
    except UnicodeDecodeError as exc:
        return f"not {'UTF-8' if encoding == 'utf-8' else encoding} ({exc.reason} at byte {exc.start} of the line)"
    if not line.strip():
        return None
    try:
        obj = parse_object(line)
    except JSONLineError as exc:
        return str(exc)
    if not isinstance(obj.get("text"), str):
        return "expected an object with a string 'text'"
    text: str = obj["text"]
    if not text.strip():
        return "empty text"
    if (bad := has_surrogate(text)) >= 0:
        return f"text has a lone surrogate ({text[bad]!a}) at character {bad}"
    metadata = _user_metadata(obj.get("metadata"))
    if isinstance(metadata, str):
        return metadata
    rid = obj.get("id")
    if rid is None:  # no id: the record is known by its content
        return f"~{sha16(text + chr(0) + canonical(metadata))}", metadata, text
    if isinstance(rid, bool) or not isinstance(rid, str | int):
        return f"'id' must be a string or an integer, not {type(rid).__name__}"
    if isinstance(rid, str) and has_surrogate(rid) >= 0:
        return "'id' has a lone surrogate"
    return str(rid), {**metadata, "record_id": str(rid)}, text


def _user_metadata(meta: Any) -> dict[str, Any] | str:
    """A record's metadata as stores keep it exactly (scalars; lists and objects as JSON text),
    or why it cannot be stored as given."""
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        return f"'metadata' must be an object, not {type(meta).__name__}"
    out: dict[str, Any] = {}
    for key, value in meta.items():
        problem = _bad_key(key) or _bad_value(value)
        if problem:
            return f"metadata '{shown(key)}': {problem}"
        if isinstance(value, list | dict):
            value = json.dumps(value, ensure_ascii=False, sort_keys=True)
        if value is not None:
            out[key] = value
    return out


def _bad_key(key: str) -> str | None:
    if not key or key.startswith(("#", "$", "chroma:")):
        return "Chroma rejects or drops empty keys and keys starting with '#', '$' or 'chroma:' (rename it)"
    if key in RESERVED_KEYS:
        return f"the ingester sets {key!r} itself (rename yours, e.g. 'user_{key}')"
    if has_surrogate(key) >= 0:
        return "the key has a lone surrogate"
    return None


def _bad_value(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return None if -(2**63) <= value < 2**63 else "integer outside the 64-bit range"
    if isinstance(value, float):
        return None if math.isfinite(value) else "not a finite number"
    if isinstance(value, list | dict):
        try:
            value = json.dumps(value, ensure_ascii=False, allow_nan=False)
        except ValueError:
            return "holds a number that is not finite"
    return "has a lone surrogate" if has_surrogate(value) >= 0 else None
