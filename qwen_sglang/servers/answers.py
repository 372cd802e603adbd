"""Answers of a server read defensively, for ``doctor``: anything but what was asked for is ``None``.

A 200 with ``{}``, an HTML page, a JSON list, a vector of strings or a base64 string that does not
decode reads as "no answer of that kind", never as an exception; `Reply.describe` says what came
back instead.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

__all__ = ["Reply", "json_object", "positive_field", "text_field", "vector_of"]


def json_object(response: httpx.Response | None) -> dict[str, Any] | None:
    """The JSON object of a 200 answer; None for any other status, non-JSON or another JSON type."""
    if response is None or response.status_code != 200:
        return None
    try:
        data = response.json()
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def text_field(data: dict[str, Any] | None, key: str) -> str | None:
    value = (data or {}).get(key)
    return value if isinstance(value, str) and value else None


def positive_field(data: dict[str, Any] | None, key: str) -> int | None:
    value = (data or {}).get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def vector_of(item: Any) -> list[float] | None:
    vec = item.get("embedding") if isinstance(item, dict) else None
    if isinstance(vec, str):
        try:
            raw = base64.b64decode(vec, validate=True)
        except (binascii.Error, ValueError):
            return None
        return [float(x) for x in np.frombuffer(raw[: len(raw) // 4 * 4], dtype="<f4")]
    if isinstance(vec, list) and vec and all(isinstance(x, int | float) and not isinstance(x, bool) for x in vec):
        return [float(x) for x in vec]
    return None


@dataclass
class Reply:
    """An answer of ``/v1/embeddings`` read defensively (``status`` None: no answer at all)."""

    status: int | None
    body: dict[str, Any] | None = None
    text: str = ""
    content_type: str = ""

    @classmethod
    def of(cls, response: httpx.Response | None) -> Reply:
        if response is None:
            return cls(None)
        try:
            data = response.json()
        except ValueError:
            data = None
        body = data if isinstance(data, dict) else None
        return cls(response.status_code, body, response.text[:300], response.headers.get("content-type", ""))

    @property
    def ok(self) -> bool:
        return self.status == 200

    def message(self) -> str:
        """The error message of a non-200 answer (SGLang's ``message``, else the text)."""
        return text_field(self.body, "message") or self.text

    def vectors(self) -> list[list[float]] | None:
        """The vectors of a 200 answer in ``index`` order; None when it holds none (any malformed part)."""
        data = (self.body or {}).get("data") if self.ok else None
        if not isinstance(data, list) or not data:
            return None
        rows = [vector_of(item) for item in data]
        if any(r is None for r in rows):
            return None
        indices = [item.get("index") for item in data]
        if sorted(i for i in indices if isinstance(i, int)) == list(range(len(data))):
            rows = [rows[indices.index(i)] for i in range(len(data))]
        return [r for r in rows if r is not None]

    def is_base64(self) -> bool:
        data = (self.body or {}).get("data") if self.ok else None
        return (
            isinstance(data, list)
            and bool(data)
            and isinstance(data[0], dict)
            and isinstance(data[0].get("embedding"), str)
        )

    def describe(self) -> str:
        """What came back, for a failed check: status and message, or what a 200 lacked."""
        if self.status is None:
            return "no answer"
        if self.ok and self.body is None:
            kind = self.content_type.split(";", 1)[0] or "no content type"
            return f"200 with a body that is not a JSON object ({kind}: {self.text[:60]!r})"
        if self.ok:
            return "200 without vectors (no data[].embedding)"
        return f"{self.status}: {self.message()[:120]}"
