"""Reading what a server answered: JSON bodies, embeddings, and the typed error for a failure.

Everything here is a pure function of an `qwen_sglang.client.transport.Answer` (or an httpx
exception) and the URL it came from: the engine's flows decide what to do with the result
(retry, fall back, raise).
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import json
import math
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urljoin

import httpx
import numpy as np
from numpy.typing import NDArray

from qwen_sglang.client.roles import EMBEDDING, ClientRole
from qwen_sglang.client.transport import Answer
from qwen_sglang.errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    MalformedResponseError,
    status_error_class,
)
from qwen_sglang.settings import redact_url

_orjson_loads: Callable[[bytes], Any] | None
try:  # optional speed-up (a dependency on CPython); the standard library is the fallback
    from orjson import loads as _orjson_loads
except ImportError:  # pragma: no cover - PyPy, or installed without it
    _orjson_loads = None

__all__ = [
    "RETRY_STATUS",
    "Vectors",
    "answer_json",
    "parse_embeddings",
    "retry_after",
    "status_error",
    "transport_error",
    "with_note",
]

Vectors = NDArray[np.float32]

#: Statuses worth another attempt. 501 (Not Implemented) and 505 say the server will never do
#: it: not worth a retry.
RETRY_STATUS = frozenset({408, 409, 429}) | (frozenset(range(500, 600)) - {501, 505})

_NUMBER_TYPES = frozenset({float, int})
_MAX_TOKEN_COUNT = 2**53  # beyond this a float is no longer a whole number of anything


# ------------------------------------------------------------------ JSON
def decode_json(content: bytes) -> Any:
    """JSON answer bodies, with orjson where installed: parsing the floats of a JSON answer is
    most of the client's CPU time when the server sends no base64 (SGLang < 0.5.17), and orjson
    does it ~6x faster than the standard library. What orjson refuses (bare NaN tokens, which
    Python servers write, numbers beyond float range, or non-UTF-8 text) goes to the standard
    library, so every body is read as before and bad values still get their specific error."""
    if _orjson_loads is not None:
        try:
            return _orjson_loads(content)
        except ValueError:
            pass
    return json.loads(content)


def answer_json(answer: Answer, url: str) -> Any:
    """The decoded body of a successful answer (``None`` when empty)."""
    if not answer.content:
        return None
    try:
        return decode_json(answer.content)
    except ValueError:
        raise MalformedResponseError(
            f"{url} answered {answer.status_code} with a body that is not JSON: {answer.text[:200]!r}", url=url
        ) from None


# ------------------------------------------------------------------ failures
def retry_after(answer: Answer) -> float | None:
    """Seconds the server asks to wait (not capped here: the caller caps it by its deadline)."""
    value = answer.headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            parsed = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = parsed.timestamp() - time.time()
    if not math.isfinite(seconds):
        return None
    return max(seconds, 0.0)


def with_note(error: Exception, note: str) -> Exception:
    """``error`` with ``note`` appended to its message (its type and fields kept)."""
    error.args = (f"{error} {note}", *error.args[1:])
    return error


def _server_message(answer: Answer) -> tuple[str, Any]:
    try:
        body = decode_json(answer.content)
    except ValueError:
        return answer.text.strip()[:500], answer.text
    if isinstance(body, dict):
        message = body.get("message") or body.get("detail") or body.get("error")
        if isinstance(message, dict):
            message = message.get("message") or json.dumps(message)
        if message:
            return str(message), body
    return json.dumps(body)[:500], body


def _redirect_message(answer: Answer, url: str, base_url: str) -> str:
    code = answer.status_code
    location = answer.headers.get("location")
    if not location:
        return f"{url} answered HTTP {code}, a redirect without a Location: point base_url at the server itself"
    target = redact_url(urljoin(url, location))
    suffix = url[len(base_url) :] if url.startswith(base_url) else ""
    if suffix and target.split("?")[0].endswith(suffix):
        fix = f"set base_url to {target.split('?')[0][: -len(suffix)]!r}"
    else:
        fix = "point base_url at the address the server is really served from"
    return (
        f"{url} answered HTTP {code}, redirecting to {target}; the client does not follow redirects (a POST "
        f"would lose its body, or its credentials to another host): {fix}"
    )


def refuses_priority(error: Exception) -> bool:
    """An SGLang server started with ``--abort-on-priority-when-disabled`` and without priority
    scheduling refuses a request that carries a ``priority`` (HTTP 503, 0.5.17): the request's
    fault, not the server's, so it is not retried or taken for a server going down."""
    message = error.server_message if isinstance(error, APIStatusError) else None
    return message is not None and "using priority is disabled" in message.lower()


def status_error(answer: Answer, url: str, base_url: str) -> APIStatusError:
    """The typed error for an answer of status 300 or more, with the server's message and a hint."""
    code = answer.status_code
    message, body = _server_message(answer)
    if 300 <= code < 400:
        text = _redirect_message(answer, url, base_url)
        return status_error_class(code)(text, status_code=code, url=url, body=body, server_message=message)
    text = f"{url} answered HTTP {code}: {message}"
    lowered = message.lower()
    if code in (401, 403):
        text += " (check api_key / QWEN_SGLANG_API_KEY against the server's --api-key)"
    elif code == 404:
        hint = " (is base_url missing '/v1'?)" if not base_url.endswith("/v1") else ""
        text += f"{hint} (is this an SGLang or OpenAI-compatible embedding server?)"
    elif "is-embedding" in lowered or "is_embedding" in lowered or "generation model" in lowered:
        text += " (the server runs the model as a generation model: restart it with --is-embedding)"
    elif "does not support matryoshka" in lowered:
        text += " (start SGLang with --json-model-override-args '{\"is_matryoshka\": true}' to let it truncate)"
    return status_error_class(code)(text, status_code=code, url=url, body=body, server_message=message)


def transport_error(
    exc: Exception, url: str, model: str | None, timeout: float | None = None, role: ClientRole = EMBEDDING
) -> APIConnectionError:
    """The typed error for an exchange that got no answer (refused, reset, timed out); ``role``
    says which server it is and how to start one (of ``model``, else the role's default)."""
    if isinstance(exc, httpx.TimeoutException):
        within = f"within timeout={timeout:g} s " if timeout is not None else ""
        return APITimeoutError(
            f"{url} did not answer {within}(connecting, sending, the headers and the whole body count "
            f"together; {type(exc).__name__})",
            url=url,
        )
    reason = str(exc) or type(exc).__name__
    return APIConnectionError(
        f"could not connect to the {role.server} server at {url}: {reason}. Is it running? Start one "
        f"with `{role.serve} --model {model or role.default_model}` (add `--backend local` on a machine without a "
        "GPU), or point base_url / QWEN_SGLANG_BASE_URL at a running server.",
        url=url,
    )


# ------------------------------------------------------------------ embeddings
def parse_embeddings(body: Any, expected: int, url: str) -> tuple[Vectors, int]:
    """Decode and check an ``/embeddings`` answer: count, order, width, finiteness; returns the
    vectors in input order (as the server sent them, not re-normalised) and ``usage.prompt_tokens``."""

    def bad(why: str) -> MalformedResponseError:
        return MalformedResponseError(f"malformed answer from {url}: {why}", url=url)

    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        raise bad("no 'data' list")
    data = body["data"]
    if len(data) != expected:
        raise bad(f"{len(data)} embeddings for {expected} inputs")
    rows: list[NDArray[np.float32] | None] = [None] * expected
    for pos, entry in enumerate(data):
        if not isinstance(entry, dict) or "embedding" not in entry:
            raise bad(f"entry {pos} has no 'embedding'")
        index = entry.get("index", pos)
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < expected:
            raise bad(f"entry {pos} has index {index!r}")
        if rows[index] is not None:
            raise bad(f"index {index} appears twice")
        rows[index] = _vector(entry["embedding"], index, bad)
    width = rows[0].shape[0] if expected and rows[0] is not None else 0
    matrix = np.empty((expected, width), dtype=np.float32)
    for i, vec in enumerate(rows):
        assert vec is not None  # every index in 0..expected-1 was seen once: all rows are set
        if vec.shape[0] != width or width == 0:
            raise bad(f"embedding {i} has width {vec.shape[0]}, others {width}")
        matrix[i] = vec
    if not np.isfinite(matrix).all():
        raise bad("NaN or infinite values in the vectors")
    zero = np.flatnonzero(~matrix.any(axis=1))
    if zero.size:
        raise bad(
            f"embedding {int(zero[0])} is all zeros ({zero.size} of {expected}): a Qwen3 embedding never is; "
            "the server's pooling or weights are broken (`qwen-sglang doctor` names the cause)"
        )
    return matrix, _prompt_tokens(body.get("usage"), bad)


def _vector(emb: Any, index: int, bad: Callable[[str], MalformedResponseError]) -> NDArray[np.float32]:
    """One ``embedding`` value: base64 little-endian float32, or a list of numbers."""
    if isinstance(emb, str):
        try:
            raw = base64.b64decode(emb, validate=True)
        except (binascii.Error, ValueError):
            raise bad(f"embedding {index} is not valid base64") from None
        if len(raw) % 4:
            raise bad(f"embedding {index} has {len(raw)} bytes, not a whole number of float32")
        return np.frombuffer(raw, dtype="<f4")
    if isinstance(emb, list):
        kinds = set(map(type, emb))
        if not kinds <= _NUMBER_TYPES:
            what = "booleans" if bool in kinds else "not only numbers"
            raise bad(f"embedding {index} is a list of {what}, not a vector")
        return np.asarray(emb, dtype=np.float32)
    raise bad(f"embedding {index} is a {type(emb).__name__}")


def _prompt_tokens(usage: Any, bad: Callable[[str], MalformedResponseError]) -> int:
    """``usage.prompt_tokens`` (0 when absent): a whole number of tokens, or the answer is malformed."""
    tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    if tokens is None:
        return 0
    if (
        isinstance(tokens, bool)
        or not isinstance(tokens, int | float)
        or not (0 <= tokens <= _MAX_TOKEN_COUNT and tokens == int(tokens))  # also refuses NaN, inf
    ):
        raise bad(f"usage.prompt_tokens is {str(tokens)[:40]}, not a token count")
    return int(tokens)
