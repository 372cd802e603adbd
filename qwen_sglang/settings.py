"""Settings shared by the core client and both framework adapters.

One pydantic model declares every knob once; `langchain_qwen_sglang.QwenSGLangEmbeddings`
and `llama_index_qwen_sglang.QwenSGLangEmbedding` inherit it, so the two frameworks take
the same arguments, read the same environment variables and validate them the same way.
"""

from __future__ import annotations

import copy
import difflib
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Protocol, Self, runtime_checkable
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    Strict,
    ValidationError,
    field_validator,
    model_validator,
)

from qwen_sglang.errors import ConfigurationError
from qwen_sglang.instructions import DEFAULT_TASK
from qwen_sglang.presets import ModelPreset, find_preset

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_MODEL",
    "DEFAULT_RERANK_MODEL",
    "EmptyTextPolicy",
    "EncodingFormat",
    "LongTextPolicy",
    "AdapterSettings",
    "QwenSGLangSettings",
    "ServedContextHandle",
    "ServerHandle",
    "normalize_base_url",
    "redact_url",
    "validate_dimensions",
]

DEFAULT_BASE_URL = "http://127.0.0.1:30000/v1"
DEFAULT_MODEL = "Qwen/Qwen3-Embedding-4B"
#: The reranker's counterpart of `DEFAULT_MODEL` (`qwen_sglang.RerankClient`).
DEFAULT_RERANK_MODEL = "Qwen/Qwen3-Reranker-0.6B"

EncodingFormat = Literal["auto", "base64", "float"]
EmptyTextPolicy = Literal["raise", "zero", "skip"]
LongTextPolicy = Literal["chunk", "truncate", "error"]


def _env(name: str, default: str) -> Callable[[], str]:
    return lambda: os.environ.get(name) or default


def _optional_env(name: str) -> Callable[[], str | None]:
    return lambda: os.environ.get(name) or None


def _secret_env(name: str) -> Callable[[], SecretStr | None]:
    def factory() -> SecretStr | None:
        value = os.environ.get(name)
        return SecretStr(value) if value else None

    return factory


_VALID_URL = "a valid one looks like http://127.0.0.1:30000/v1 (scheme, host, port, then /v1)"


def redact_url(url: str) -> str:
    """``url`` with any ``user:password@`` replaced by ``***@``: what messages and logs show."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]))


def normalize_base_url(url: str) -> str:
    """Check and normalise a server URL to the OpenAI-style ``.../v1`` form.

    ``http://host:30000`` and ``http://host:30000/`` become ``http://host:30000/v1``; a URL with
    another path is kept as given (minus a trailing slash), for servers behind a proxy path.
    Credentials in the URL (``user:password@``) are kept here and never shown in an error
    (`QwenSGLangSettings` moves them to ``url_credentials``).
    """
    if not isinstance(url, str) or not url.strip():
        raise ConfigurationError(f"base_url must be a non-empty URL; {_VALID_URL}")
    url = url.strip()
    shown = redact_url(url)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"base_url {shown!r} is not an http(s) URL with a host; {_VALID_URL}")
    try:
        port = parts.port
    except ValueError:
        port_text = parts.netloc.rpartition("@")[2].rpartition(":")[2]
        raise ConfigurationError(
            f"base_url {shown!r} has an invalid port {port_text!r} (a number from 1 to 65535); {_VALID_URL}"
        ) from None
    if port == 0:
        raise ConfigurationError(f"base_url {shown!r} has port 0; {_VALID_URL}")
    path = parts.path.rstrip("/")
    if not path:
        path = "/v1"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def _split_credentials(url: str) -> tuple[str, SecretStr | None]:
    """``http://user:pw@host/v1`` -> (``http://host/v1``, ``SecretStr("user:pw")``), %-escapes decoded."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    return urlunsplit(parts._replace(netloc=hostport)), SecretStr(f"{unquote(user)}:{unquote(password)}")


def _split_urls(value: str) -> tuple[str, SecretStr | None]:
    """``base_url`` normalised (one URL, or several separated by commas, each checked; the same
    URL twice is refused) and the ``user:password`` its URLs carry (the same for all that do)."""
    urls: list[str] = []
    found: set[str] = set()
    credentials: SecretStr | None = None
    for part in value.split(",") if isinstance(value, str) else [value]:
        url, in_url = _split_credentials(normalize_base_url(part))
        if url in urls:
            raise ConfigurationError(f"base_url lists {url!r} twice: each server once")
        urls.append(url)
        if in_url is not None:
            found.add(in_url.get_secret_value())
            credentials = in_url
    if len(found) > 1:
        raise ConfigurationError(
            "the URLs of base_url carry different user:password credentials: one client sends one set; "
            "give it as url_credentials and the URLs without it"
        )
    return ",".join(urls), credentials


def _check_header_value(what: str, value: str) -> None:
    """An HTTP header carries visible ASCII only: say which character of ``what`` cannot go
    (never the value itself: it may be a secret)."""
    for position, char in enumerate(value):
        if "!" <= char <= "~" or (char == " " and 0 < position < len(value) - 1):
            continue
        if char in "\r\n":
            kind = "a line break (a key read from a file keeps its newline: strip it)"
        elif char.isspace():
            kind = "leading or trailing whitespace" if char == " " else f"whitespace (U+{ord(char):04X})"
        elif ord(char) < 32 or ord(char) == 127:
            kind = f"a control character (U+{ord(char):04X})"
        else:
            kind = f"a non-ASCII character (U+{ord(char):04X}; a pasted key may carry look-alike characters)"
        raise ConfigurationError(
            f"{what} contains {kind} at position {position}: an HTTP header can carry only visible ASCII characters"
        )


def _check_names(model: type[QwenSGLangSettings], data: dict[str, Any]) -> None:
    """A setting that does not exist (a typo such as ``max_concurency``) is refused, naming the
    closest ones, instead of being ignored while the default applies. The keys a subclass's own
    serialiser writes beside its fields (``serialized_keys``) are accepted."""
    fields = model.model_fields
    known = set(fields) | {f.alias for f in fields.values() if f.alias} | model.serialized_keys
    unknown = sorted(name for name in data if name not in known)
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, sorted(fields), n=2)
            hints.append(f"{name!r}" + (f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""))
        plural = "s" if len(unknown) > 1 else ""
        raise ConfigurationError(f"unknown setting{plural} {', '.join(hints)}; the settings are: {', '.join(fields)}")


def _configuration_error(exc: ValidationError) -> Exception:
    """The `ConfigurationError` a validator raised, unwrapped from pydantic's report (whose text
    repeats the input, secrets included, and links to pydantic's site); other errors as they are."""
    for error in exc.errors():
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, ConfigurationError):
            return cause
    return exc


def validate_dimensions(dimensions: Any, preset: ModelPreset | None, model: str | None = None) -> int | None:
    """Check a ``dimensions`` value against the model's Matryoshka range; return it or raise."""
    if dimensions is None:
        return None
    if isinstance(dimensions, bool) or not isinstance(dimensions, int):
        raise ConfigurationError(f"dimensions must be an int or None, not {type(dimensions).__name__} ({dimensions!r})")
    if preset is not None:
        lo, hi = preset.dim_range
        if not lo <= dimensions <= hi:
            raise ConfigurationError(
                f"dimensions={dimensions} is outside the Matryoshka range of {preset.name}: {lo}..{hi}"
            )
    elif dimensions < 1:
        raise ConfigurationError(f"dimensions must be at least 1, got {dimensions}")
    return dimensions


#: Never pickled: secrets (header values may be credentials), and the managed server (a live
#: process of this one).
_NOT_PICKLED = frozenset({"api_key", "url_credentials", "default_headers", "server"})


@runtime_checkable
class ServerHandle(Protocol):
    """What a client needs from a server started from Python (`qwen_sglang.servers.ManagedServer`
    implements it): where it listens, what it serves, its key, and whether its process is alive."""

    @property
    def base_url(self) -> str:
        """``http://host:port/v1``."""
        ...

    @property
    def model(self) -> str:
        """The model name clients send (the served name, else the model path)."""
        ...

    @property
    def api_key(self) -> SecretStr | None:
        """The key the server requires, if any."""
        ...

    @property
    def backend(self) -> str:
        """``"sglang"`` or ``"local"``."""
        ...

    @property
    def pid(self) -> int | None:
        """The server process's id (``None`` before start)."""
        ...

    @property
    def returncode(self) -> int | None:
        """The exit code once the process has ended, else ``None``."""
        ...

    def logs_tail(self, lines: int = 40) -> str:
        """The last lines of the server's log."""
        ...


@runtime_checkable
class ServedContextHandle(Protocol):
    """A `ServerHandle` that knows the context its servers serve where their own answers do not
    say it (`qwen_sglang.servers.ManagedRouter`: sglang-router's ``/v1/models`` has no
    ``max_model_len``). A client of it cuts long texts to that context, as it does for a server
    whose ``/v1/models`` reports one."""

    @property
    def served_context(self) -> int | None:
        """Tokens per input the servers accept, plus one (SGLang's ``max_model_len``); ``None``
        while unknown."""
        ...


class QwenSGLangSettings(BaseModel):
    """Connection and embedding settings, from arguments or the environment."""

    model_config = ConfigDict(
        populate_by_name=True,
        arbitrary_types_allowed=True,
        use_attribute_docstrings=True,
        protected_namespaces=(),
        validate_assignment=True,
    )

    base_url: str = Field(default_factory=_env("QWEN_SGLANG_BASE_URL", DEFAULT_BASE_URL))
    """Server URL ending in ``/v1`` (env ``QWEN_SGLANG_BASE_URL``; a bare ``http://host:port``
    gets ``/v1`` appended). Several servers of the same model: a list of URLs, or the URLs
    separated by commas (so in ``QWEN_SGLANG_BASE_URL`` and ``--base-url`` too); the client
    spreads requests over them and fails over when one dies (`base_urls` lists them; the value
    kept here is the comma-separated form)."""

    api_key: SecretStr | None = Field(default_factory=_secret_env("QWEN_SGLANG_API_KEY"), exclude=True)
    """Bearer key for servers started with ``--api-key`` (env ``QWEN_SGLANG_API_KEY``).
    Keyless servers need none. Visible ASCII only (a newline or a non-ASCII character is a
    `ConfigurationError` at construction). Never printed, logged, serialised or pickled: an
    unpickled object reads ``QWEN_SGLANG_API_KEY`` again, or has none."""

    url_credentials: SecretStr | None = Field(default=None, exclude=True)
    """``user:password`` for a server behind HTTP Basic auth, sent with every request. Taken out
    of ``base_url`` when it has them (``http://user:pw@host/v1``), so that the URL shown in
    reprs, logs and errors never carries them. Cannot be combined with ``api_key`` (both use
    the ``Authorization`` header). Never serialised or pickled."""

    model: str | None = Field(default_factory=_optional_env("QWEN_SGLANG_MODEL"))
    """The served model (env ``QWEN_SGLANG_MODEL``): a preset name, a path or a served name.
    ``None`` (the default) learns it from the server at the first call (``/v1/models``,
    ``/model_info``); a model that is set is checked against what the server serves, and a
    different one raises `qwen_sglang.errors.ModelMismatchError` before any text is sent.
    Selects the preset (native width, Matryoshka range, context) and whether queries get Qwen3's
    instruction by default. A server that names no model gets ``Qwen/Qwen3-Embedding-4B``
    (with a warning)."""

    dimensions: Annotated[int, Strict()] | None = None
    """Output width (Matryoshka). ``None`` keeps the native width. Validated against the
    model's range; when the server cannot truncate, the client truncates and re-normalises."""

    query_instruction: str | None = DEFAULT_TASK
    """Task put into Qwen3's query template ``Instruct: {task}\\nQuery:{text}``, or a preset
    name from `qwen_sglang.instructions.TASKS`. ``None`` or ``""`` disables it. When not set,
    queries get what the served model is known to use: its sentence-transformers query prompt,
    else Qwen3's template with this retrieval task for Qwen3-Embedding (by preset name, or as the
    server reports it, whatever its served name), else nothing (with a one-time note).
    Documents never get an instruction."""

    query_priority: Annotated[int, Strict()] | None = 10
    """The ``priority`` a single query (``embed_query``) asks for, so that a server ordering its
    queue by priority serves it before bulk requests already waiting (higher first). Sent only
    on the query lane and only to a server whose ``/server_info`` says
    ``enable_priority_scheduling`` (SGLang's ``--enable-priority-scheduling``, on by default for
    `qwen_sglang.servers.SGLangServer`; the local backend accepts it): never to a server that
    would ignore it or abort on it. ``None`` never sends it."""

    batch_size: int = Field(default=32, gt=0)
    """Most texts per request. When not set, a server that advertises its preferred request
    shape (the local backend: few large requests) sets it."""

    max_batch_tokens: int = Field(default=8192, gt=0)
    """Approximate token budget per request (texts are grouped until it would be exceeded).
    Estimated from UTF-8 length unless exact counts are needed for long texts. When not set,
    the server's advertised shape applies, as for ``batch_size``."""

    max_concurrency: int = Field(default=8, gt=0)
    """Most requests in flight at once, in both the sync and the async paths. When not set, a
    server's advertised shape may lower it (never raise it)."""

    timeout: float | None = Field(default=120.0)
    """Seconds one request may take in total: connecting, sending, the answer's headers and its
    whole body (``None`` waits forever). Each request, retries and pauses included, also ends
    by its retry deadline: ``(max_retries + 1) * timeout + 8 * max_retries`` seconds; a
    Retry-After that would end past it is not waited for (the error is raised at once)."""

    max_retries: int = Field(default=3, ge=0)
    """Retries for timeouts, connection errors, 408/409/429 and 5xx, until the retry deadline
    (see ``timeout``). A 400 is never retried."""

    show_progress: bool = False
    """Show a tqdm progress bar for multi-batch calls."""

    encoding_format: EncodingFormat = "auto"
    """``"base64"`` (4x smaller answers, no JSON float parsing; SGLang >= 0.5.17), ``"float"``,
    or ``"auto"``: ask for base64 and accept either answer."""

    empty_text: EmptyTextPolicy = "raise"
    """What to do with empty or whitespace-only texts, which are never sent to the server:
    ``"raise"`` a ValueError naming the index, return a ``"zero"`` vector, or ``"skip"`` them
    (core and ingestion APIs only, where results carry their input indices)."""

    long_text: LongTextPolicy = "chunk"
    """Texts longer than ``max_tokens``: ``"chunk"`` embeds token windows and returns their
    token-weighted mean (re-normalised), ``"truncate"`` keeps the first tokens and the end
    token, ``"error"`` raises. Exact counts come from the server's tokenizer."""

    max_tokens: int | None = Field(default=None, gt=1)
    """Token limit per text, end token included (default: the model's context, capped by the
    server's ``max_model_len``)."""

    chunk_tokens: int = Field(default=2048, gt=16)
    """Window size for ``long_text="chunk"``."""

    chunk_overlap: int = Field(default=128, ge=0)
    """Tokens shared by consecutive windows for ``long_text="chunk"``; where ``max_tokens`` or
    the served context makes windows shorter than ``chunk_tokens``, proportionally fewer."""

    default_headers: dict[str, SecretStr] | None = Field(default=None, exclude=True)
    """Extra HTTP headers sent with every request, such as a gateway's key
    (``{"X-API-Key": "..."}``). Plain strings are accepted and kept as ``SecretStr``: any header
    may carry a credential, so the values are never printed, logged, serialised or pickled (the
    names are shown in reprs). Visible ASCII only (`ConfigurationError` at construction). An
    unpickled object has none: give them again where it is unpickled."""

    server: ServerHandle | None = Field(default=None, exclude=True, repr=False)
    """A managed server (`qwen_sglang.SGLangServer`, `qwen_sglang.LocalEmbeddingServer`, or any
    `ServerHandle`); its URL, key and model name are used unless given explicitly, and a
    connection error once its process has exited names its exit code and log tail. The request
    sizes that suit its backend come from the server itself at the first call, as for any
    client (the local backend advertises few large requests). Read when the settings are made:
    it cannot be assigned later."""

    serialized_keys: ClassVar[frozenset[str]] = frozenset()
    """Keys that are not settings but that the class's own ``model_dump`` writes (LlamaIndex's
    ``class_name``): accepted, and ignored, by the constructor, so that a dump builds the object
    again; any other unknown keyword is a `ConfigurationError`."""

    if not TYPE_CHECKING:  # type checkers keep the signature pydantic derives from the fields

        def __init__(self, /, **data: Any) -> None:
            _check_names(type(self), data)
            try:
                super().__init__(**data)
            except ValidationError as exc:
                raise _configuration_error(exc) from None

    def __setattr__(self, name: str, value: Any) -> None:
        """Assigning a setting validates it as construction does, with the same errors; a value
        refused leaves the object as it was (pydantic would keep a value a model-level check
        refused). Credentials taken from ``base_url`` go with it: assigning another URL drops
        them (the new URL's own are taken). ``server`` is read at construction only."""
        if name not in type(self).model_fields:
            super().__setattr__(name, value)
            return
        if name == "server":
            raise ConfigurationError(
                "server is read when the settings are made (its URL, key and model fill those not given): "
                "make new settings with server=..."
            )
        saved = (dict(self.__dict__), set(self.__pydantic_fields_set__))
        try:
            if name == "base_url":
                self.__dict__["url_credentials"] = None
            super().__setattr__(name, value)
        except (ValidationError, ConfigurationError) as exc:
            self.__dict__.clear()
            self.__dict__.update(saved[0])
            object.__setattr__(self, "__pydantic_fields_set__", saved[1])
            raise (_configuration_error(exc) if isinstance(exc, ValidationError) else exc) from None

    def __getstate__(self) -> dict[Any, Any]:
        """Pickles carry no secret: ``api_key``, ``url_credentials``, ``default_headers`` and
        ``server`` are left out (as is what the object built from its settings, such as an
        adapter's client)."""
        state: dict[Any, Any] = super().__getstate__()
        return {
            **state,
            "__dict__": {k: v for k, v in state["__dict__"].items() if k not in _NOT_PICKLED},
            "__pydantic_fields_set__": set(state["__pydantic_fields_set__"]) - _NOT_PICKLED,
            "__pydantic_private__": None,
        }

    def __setstate__(self, state: dict[Any, Any]) -> None:
        """Unpickling constructs the object again from the settings that were set: validators
        run, ``api_key`` is read from ``QWEN_SGLANG_API_KEY`` (or is ``None``), adapters build a
        new client."""
        given = state.get("__pydantic_fields_set__") or set(state["__dict__"])
        data = {k: v for k, v in state["__dict__"].items() if k in given}
        type(self).__init__(self, **data)

    @field_validator("query_instruction", "model")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value if value and value.strip() else None

    @model_validator(mode="before")
    @classmethod
    def _from_server(cls, data: Any) -> Any:
        """A managed server's URL, model name and key fill the settings not given."""
        if not isinstance(data, dict) or data.get("server") is None:
            return data
        server = data["server"]
        if not isinstance(server, ServerHandle):
            raise ConfigurationError(
                f"server must be a managed server (qwen_sglang.SGLangServer, LocalEmbeddingServer, or an object "
                f"with what qwen_sglang.settings.ServerHandle lists: base_url, model, api_key, backend, pid, "
                f"returncode, logs_tail), not {type(server).__name__}"
            )
        filled = {"base_url": server.base_url, "model": server.model, "api_key": server.api_key}
        return data | {name: value for name, value in filled.items() if data.get(name) is None and value}

    @field_validator("base_url", mode="before")
    @classmethod
    def _join_urls(cls, value: Any) -> Any:
        """A list (or tuple) of URLs is kept in the comma-separated form."""
        if isinstance(value, list | tuple):
            if not value or not all(isinstance(url, str) for url in value):
                raise ConfigurationError(f"base_url must be a URL or a non-empty list of URLs; {_VALID_URL}")
            return ",".join(value)
        return value

    @model_validator(mode="after")
    def _check(self) -> QwenSGLangSettings:
        # Runs at construction and after every assignment: what it derives is written to the
        # object's dict (an assignment here would validate again, and again).
        base_url, in_url = _split_urls(self.base_url)
        self.__dict__["base_url"] = base_url
        if in_url is not None:
            if self.url_credentials is not None:
                raise ConfigurationError("base_url carries user:password and url_credentials is set too: keep one")
            self.__dict__["url_credentials"] = in_url
            self.model_fields_set.add("url_credentials")  # given, as the URL was: copies keep it
        if self.url_credentials is not None and self.api_key is not None:
            raise ConfigurationError(
                "both api_key (sent as a Bearer token) and user:password credentials (base_url's or "
                "url_credentials, sent as HTTP Basic auth) are set: both use the Authorization header; keep one"
            )
        if self.api_key is not None:
            _check_header_value("api_key", self.api_key.get_secret_value())
        for name, value in (self.default_headers or {}).items():
            _check_header_value(f"default_headers[{name!r}]", value.get_secret_value())
        validate_dimensions(self.dimensions, self.preset, self.model)
        if self.chunk_overlap >= self.chunk_tokens:
            raise ConfigurationError(
                f"chunk_overlap ({self.chunk_overlap}) must be smaller than chunk_tokens ({self.chunk_tokens})"
            )
        return self

    @property
    def base_urls(self) -> tuple[str, ...]:
        """The server URLs, one or more (``base_url`` holds them separated by commas)."""
        return tuple(self.base_url.split(","))

    def require_aligned_output(self, framework: str) -> None:
        """Frameworks pair vectors with their inputs by position: ``empty_text="skip"`` cannot work."""
        if self.empty_text == "skip":
            raise ConfigurationError(
                f"empty_text='skip' would return fewer vectors than texts, which {framework} cannot pair "
                "with its inputs: use 'raise' or 'zero'"
            )

    @property
    def preset(self) -> ModelPreset | None:
        """The preset of `model`, or ``None`` for models that are not known (or not set: the
        client learns the served one, `qwen_sglang.EmbeddingClient.preset`)."""
        return find_preset(self.model) if self.model else None

    def core_settings(self) -> QwenSGLangSettings:
        """A plain `QwenSGLangSettings` copy (adapters pass this to the core client); which
        fields were set explicitly is kept (settings not set leave room for what the server says)."""
        data = {name: getattr(self, name) for name in QwenSGLangSettings.model_fields}
        given = self.model_fields_set & set(QwenSGLangSettings.model_fields)
        return QwenSGLangSettings.model_construct(_fields_set=given, **data)

    @property
    def explicit_fields(self) -> set[str]:
        """The names of the settings set explicitly (arguments, or ``server=``); ``model`` also
        counts when it came from ``QWEN_SGLANG_MODEL``."""
        out = set(self.model_fields_set)
        if self.model is not None:
            out.add("model")
        return out


class AdapterSettings(QwenSGLangSettings):
    """The settings of an object that builds a client from them (the LangChain and LlamaIndex
    classes): a copy is a new object with a client of its own.

    Pydantic's ``model_copy`` shares the private client and applies ``update`` without
    validation, so ``embeddings.model_copy(update={"dimensions": 256})`` answered with the
    original's settings, and an assignment on a copy changed the original's client.
    """

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A new object of the settings that were set, with ``update``, validated (a bad value is a
        `qwen_sglang.errors.ConfigurationError`), with a client of its own; ``deep`` copies the
        values too (the managed ``server`` stays shared: it is a live process). As with an
        assignment, another ``base_url`` drops the first URL's ``user:password`` (they are not
        sent to a host they were not given for), and ``server`` cannot be updated."""
        update = dict(update or {})
        if "server" in update:
            raise ConfigurationError(
                "server is read when the settings are made (its URL, key and model fill those not given): "
                "make new settings with server=..."
            )
        data = {name: getattr(self, name) for name in self.model_fields_set}
        if "base_url" in update:
            data.pop("url_credentials", None)
        data |= update
        if deep:
            data = {name: value if name == "server" else copy.deepcopy(value) for name, value in data.items()}
        return type(self)(**data)

    def __copy__(self) -> Self:
        return self.model_copy()
