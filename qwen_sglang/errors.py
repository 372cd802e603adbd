"""The error hierarchy of qwen-sglang.

Everything raised on purpose derives from `QwenSGLangError`. Input and configuration
errors also derive from the built-in ``ValueError``/``TypeError`` so that callers catching those
keep working::

    QwenSGLangError
    ├── ConfigurationError (ValueError)        bad settings, e.g. dimensions outside the range
    │   └── ModelMismatchError                 the configured model is not the one the server serves
    ├── InvalidInputError (ValueError)         empty text, over-long text with long_text="error"
    ├── InputTypeError (TypeError)             a text that is not a str
    ├── APIError                               anything that went wrong talking to the server
    │   ├── APIConnectionError                 unreachable server (says which URL, how to start one)
    │   │   ├── APITimeoutError
    │   │   └── AllEndpointsDownError          none of several base_url servers answered (each named)
    │   ├── APIStatusError (status_code)       the server answered with an error status
    │   │   ├── BadRequestError (400)          carries the server's message; never retried
    │   │   ├── AuthenticationError (401/403)
    │   │   ├── NotFoundError (404)
    │   │   ├── RequestTooLargeError (413)
    │   │   ├── RateLimitError (429)
    │   │   └── InternalServerError (5xx)
    │   └── MalformedResponseError             wrong count/order/width, NaN, zero vectors, too large, not JSON
    ├── ModelNotAvailableError                 a model that is neither local nor downloadable
    └── ServerStartError                       a managed server failed to start (exit code, log tail)
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "APIConnectionError",
    "AllEndpointsDownError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ConfigurationError",
    "InputTypeError",
    "InternalServerError",
    "InvalidInputError",
    "MalformedResponseError",
    "ModelMismatchError",
    "ModelNotAvailableError",
    "NotFoundError",
    "QwenSGLangError",
    "RateLimitError",
    "RequestTooLargeError",
    "ServerStartError",
]


class QwenSGLangError(Exception):
    """Base class of every error raised by qwen-sglang."""


class ConfigurationError(QwenSGLangError, ValueError):
    """A setting is invalid (checked before any request is sent)."""


class ModelMismatchError(ConfigurationError):
    """The configured ``model`` is not what the server at ``base_url`` serves.

    Raised at the first call (after the client asked the server what it serves) and before any
    text is sent: the vectors would come from another model than the one named. ``configured``
    is the model set (``model=``, ``--model``, ``QWEN_SGLANG_MODEL``), ``served`` what the server
    reported.
    """

    def __init__(self, message: str, *, configured: str, served: str) -> None:
        super().__init__(message)
        self.configured = configured
        self.served = served


class InvalidInputError(QwenSGLangError, ValueError):
    """An input text cannot be embedded as given. ``index`` is its position in the call."""

    def __init__(self, message: str, *, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


class InputTypeError(QwenSGLangError, TypeError):
    """An input has the wrong type (for example ``None`` or ``bytes`` instead of ``str``)."""

    def __init__(self, message: str, *, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


class APIError(QwenSGLangError):
    """Something went wrong while talking to the embedding server."""

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__(message)
        self.url = url


class APIConnectionError(APIError):
    """The server could not be reached (refused, reset, DNS, TLS...)."""


class APITimeoutError(APIConnectionError):
    """The server did not answer within ``timeout`` seconds."""


class AllEndpointsDownError(APIConnectionError):
    """``base_url`` lists several servers and none of them could serve a request within its
    retries: the message names each with the last error seen there."""


class APIStatusError(APIError):
    """The server answered with an error status (or a redirect, which the client does not follow:
    the message names the ``Location`` and the ``base_url`` to use). ``server_message`` is the
    server's own text."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        url: str | None = None,
        body: Any = None,
        server_message: str | None = None,
    ) -> None:
        super().__init__(message, url=url)
        self.status_code = status_code
        self.body = body
        self.server_message = server_message


class BadRequestError(APIStatusError):
    """HTTP 400: the server rejected the request (never retried)."""


class AuthenticationError(APIStatusError):
    """HTTP 401/403: missing or wrong API key."""


class NotFoundError(APIStatusError):
    """HTTP 404: wrong URL (is ``base_url`` missing ``/v1``?) or endpoint not served."""


class RequestTooLargeError(APIStatusError):
    """HTTP 413: the request exceeds the server's size limits."""


class RateLimitError(APIStatusError):
    """HTTP 429: the server asks the client to slow down (retried, honouring Retry-After)."""


class InternalServerError(APIStatusError):
    """HTTP 5xx (retried)."""


class MalformedResponseError(APIError):
    """The server's answer does not match the request (count, order, width, values, format), or
    is larger than the request can need (refused as it streams in; never retried)."""


class ModelNotAvailableError(QwenSGLangError):
    """The model is neither a local directory nor obtainable from a model hub."""


class ServerStartError(QwenSGLangError):
    """A managed server failed to start. Carries its exit code and the last lines of its log."""

    def __init__(
        self,
        message: str,
        *,
        returncode: int | None = None,
        log_tail: str = "",
        log_path: str | None = None,
    ) -> None:
        super().__init__(message)
        self.returncode = returncode
        self.log_tail = log_tail
        self.log_path = log_path

    def __str__(self) -> str:
        text = super().__str__()
        if self.log_tail:
            text += "\n--- last lines of the server log ---\n" + self.log_tail.rstrip()
        return text


_STATUS_CLASSES: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: AuthenticationError,
    404: NotFoundError,
    413: RequestTooLargeError,
    422: BadRequestError,
    429: RateLimitError,
}


def status_error_class(status_code: int) -> type[APIStatusError]:
    """The `APIStatusError` subclass for an HTTP status code."""
    if status_code >= 500:
        return InternalServerError
    return _STATUS_CLASSES.get(status_code, APIStatusError)
