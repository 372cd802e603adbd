"""Secrets: API keys and URL credentials are checked, sent, and never shown, kept plain or pickled."""

from __future__ import annotations

import asyncio
import base64
import copy
import logging
import pickle
from typing import Any

import httpx
import pytest
from pydantic import BaseModel, SecretStr

from langchain_qwen_sglang import QwenSGLangEmbeddings, QwenSGLangReranker
from llama_index_qwen_sglang import QwenSGLangEmbedding, QwenSGLangRerank
from qwen_sglang import (
    APIConnectionError,
    ConfigurationError,
    EmbeddingClient,
    InternalServerError,
    QwenSGLangSettings,
    RerankClient,
)
from qwen_sglang.client import shells as client_module

KEY = "sk-very-secret-key-123"
PASSWORD = "pa55-w0rd-secret"
MAKERS: dict[str, Any] = {
    "settings": QwenSGLangSettings,
    "client": EmbeddingClient,
    "langchain": QwenSGLangEmbeddings,
    "llama-index": QwenSGLangEmbedding,
}
every_class = pytest.mark.parametrize("make", list(MAKERS.values()), ids=list(MAKERS))
#: Every class that takes the settings, the rerankers too.
ALL_MAKERS: dict[str, Any] = {
    **MAKERS,
    "rerank-client": RerankClient,
    "langchain-reranker": QwenSGLangReranker,
    "llama-index-rerank": QwenSGLangRerank,
}
HEADER_SECRET = "gw-header-secret-9876"


@pytest.fixture(autouse=True)
def no_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QWEN_SGLANG_API_KEY", raising=False)
    monkeypatch.setattr(client_module.time, "sleep", lambda s: None)


def recording_client(seen: list[httpx.Request], **kw: Any) -> EmbeddingClient:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":  # the client's discovery step: a server that names no model
            return httpx.Response(404, json={"message": "Not Found"})
        seen.append(request)
        return httpx.Response(500, json={"message": "boom"})

    transport = httpx.MockTransport(handler)
    kw.setdefault("model", "m")
    kw.setdefault("max_retries", 1)
    return EmbeddingClient(
        http_client=httpx.Client(transport=transport), http_async_client=httpx.AsyncClient(transport=transport), **kw
    )


# ------------------------------------------------------------------------------ API keys
@every_class
@pytest.mark.parametrize(
    ("key", "match"),
    [
        (KEY + "\n", "a line break"),
        ("sk-\r\nX-Injected: 1", "a line break"),
        ("sk-ключ-123", "a non-ASCII character"),
        ("sk-\u200bzero-width", "a non-ASCII character"),
        ("sk-\ttab", "whitespace"),
        (" " + KEY, "leading or trailing whitespace"),
    ],
    ids=["newline", "header-injection", "cyrillic", "zero-width", "tab", "leading-space"],
)
def test_an_api_key_a_header_cannot_carry_is_refused_at_construction(make: Any, key: str, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match) as info:
        make(api_key=key, model="m")
    text = str(info.value)
    assert "api_key" in text and KEY not in text and "ключ" not in text and "pydantic" not in text


def test_an_api_key_from_the_environment_is_checked_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QWEN_SGLANG_API_KEY", KEY + "\n")
    with pytest.raises(ConfigurationError, match="api_key contains a line break"):
        QwenSGLangSettings()


def test_default_header_values_are_checked() -> None:
    with pytest.raises(ConfigurationError, match=r"default_headers\['X-Team'\] contains a line break"):
        QwenSGLangSettings(default_headers={"X-Team": "a\nb"})


def test_a_default_header_value_is_never_shown_even_when_refused() -> None:
    with pytest.raises(ConfigurationError) as info:
        QwenSGLangSettings(default_headers={"X-API-Key": HEADER_SECRET + "\n"})
    assert HEADER_SECRET not in str(info.value) and "pydantic" not in str(info.value)


# ------------------------------------------------------------------------------ secrets in default_headers
@pytest.mark.parametrize("make", list(ALL_MAKERS.values()), ids=list(ALL_MAKERS))
def test_default_header_values_are_never_shown_serialised_or_pickled(make: Any) -> None:
    """Any header may carry a credential (a gateway's ``X-API-Key``, an ``Authorization`` given as
    a header): the values are secrets, in every class that takes the settings."""
    headers = {"X-API-Key": HEADER_SECRET, "Authorization": f"Bearer {HEADER_SECRET}"}
    obj = make(default_headers=headers, model="m")
    settings = obj if isinstance(obj, QwenSGLangSettings) else obj.settings
    assert settings.default_headers is not None
    assert {k: v.get_secret_value() for k, v in settings.default_headers.items()} == headers  # kept, hidden
    shown = [repr(obj), str(obj), repr(vars(obj)), repr(settings), repr(vars(settings)), str(settings.model_dump())]
    if isinstance(obj, BaseModel):
        shown += [obj.model_dump_json(), str(obj.model_dump())]
    for text in shown:
        assert HEADER_SECRET not in text
    data = pickle.dumps(obj)
    assert HEADER_SECRET.encode() not in data
    restored = pickle.loads(data)
    assert (restored if isinstance(restored, QwenSGLangSettings) else restored.settings).default_headers is None


def test_default_headers_accept_plain_strings_and_secrets_and_copies_keep_them() -> None:
    s = QwenSGLangSettings(default_headers={"X-Team": "search", "X-API-Key": SecretStr(HEADER_SECRET)})
    assert s.default_headers == {"X-Team": SecretStr("search"), "X-API-Key": SecretStr(HEADER_SECRET)}
    for other in (copy.copy(s), copy.deepcopy(s), s.model_copy(), EmbeddingClient(s).settings):
        assert other.default_headers == s.default_headers
    s.default_headers = {"X-Team": "ranking"}  # assignment is validated like construction
    assert s.default_headers == {"X-Team": SecretStr("ranking")}


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_default_headers_are_sent_and_stay_out_of_errors_and_logs(
    use_async: bool, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[httpx.Request] = []
    client = recording_client(seen, default_headers={"X-API-Key": HEADER_SECRET})
    caplog.set_level(logging.DEBUG)
    with pytest.raises(InternalServerError) as info:  # the 500, after one logged retry
        if use_async:
            asyncio.run(client.aembed_documents(["a"]))
        else:
            client.embed_documents(["a"])
    assert [r.headers["x-api-key"] for r in seen] == [HEADER_SECRET] * 2
    assert "retrying" in caplog.text
    for text in (str(info.value), caplog.text, repr(client), repr(vars(client))):
        assert HEADER_SECRET not in text


def test_the_client_keeps_no_plain_copy_of_the_key() -> None:
    """The Authorization header is made per request from the SecretStr (there used to be a
    plain header dict on the client for its whole life)."""
    seen: list[httpx.Request] = []
    client = recording_client(seen, api_key=KEY)
    with pytest.raises(InternalServerError):  # the answer is a 500; only the request matters
        client.embed_documents(["a"])
    assert seen[0].headers["authorization"] == f"Bearer {KEY}"
    assert KEY not in repr(vars(client)) and KEY not in repr(vars(client.settings))


# ------------------------------------------------------------------------------ credentials in base_url
@every_class
def test_credentials_in_base_url_are_never_shown(make: Any) -> None:
    obj = make(base_url=f"http://alice:{PASSWORD}@embed.example.com:8443/v1", model="m")
    assert PASSWORD not in repr(obj) and "alice" not in repr(obj)
    settings = obj.settings if isinstance(obj, EmbeddingClient) else obj
    assert settings.base_url == "http://embed.example.com:8443/v1"
    assert PASSWORD not in settings.model_dump_json()


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_credentials_in_base_url_go_as_basic_auth_and_stay_out_of_errors_and_logs(
    use_async: bool, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[httpx.Request] = []
    client = recording_client(seen, base_url=f"http://alice:{PASSWORD}@embed.example.com/v1")
    caplog.set_level(logging.DEBUG, logger="qwen_sglang")
    with pytest.raises(InternalServerError) as info:  # the 500, after one logged retry
        if use_async:
            asyncio.run(client.aembed_documents(["a"]))
        else:
            client.embed_documents(["a"])
    expected = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    assert [r.headers["authorization"] for r in seen] == [f"Basic {expected}"] * 2
    assert all(PASSWORD not in str(r.url) for r in seen)
    assert "http://embed.example.com/v1/embeddings answered HTTP 500" in str(info.value)
    assert "retrying" in caplog.text
    for text in (str(info.value), caplog.text, repr(client), repr(vars(client))):
        assert PASSWORD not in text and "alice" not in text


def test_connection_errors_do_not_show_url_credentials() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused", request=request)

    client = EmbeddingClient(
        base_url=f"http://alice:{PASSWORD}@embed.example.com/v1",
        model="m",
        max_retries=0,
        http_client=httpx.Client(transport=httpx.MockTransport(refuse)),
    )
    with pytest.raises(APIConnectionError) as info:
        client.embed_documents(["a"])
    assert "embed.example.com" in str(info.value) and PASSWORD not in str(info.value)


def test_percent_escapes_in_url_credentials_are_decoded_as_httpx_does() -> None:
    s = QwenSGLangSettings(base_url="http://al%40ice:p%3Ass@h/v1")
    assert s.url_credentials is not None and s.url_credentials.get_secret_value() == "al@ice:p:ss"


def test_url_credentials_and_an_api_key_together_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="keep one") as info:
        QwenSGLangSettings(base_url=f"http://alice:{PASSWORD}@h/v1", api_key=KEY)
    assert PASSWORD not in str(info.value) and KEY not in str(info.value)


def test_a_client_from_settings_and_overrides_keeps_url_credentials() -> None:
    settings = QwenSGLangSettings(base_url=f"http://alice:{PASSWORD}@h/v1", model="m")
    client = EmbeddingClient(settings, dimensions=64)
    assert client.settings.url_credentials == settings.url_credentials
    # credentials from the URL count as given, like the URL: a copy of the given fields keeps them
    assert "url_credentials" in settings.model_fields_set
    again = QwenSGLangSettings(**{name: getattr(settings, name) for name in settings.model_fields_set})
    assert again.url_credentials == settings.url_credentials


# ------------------------------------------------------------------------------ pickles
@every_class
def test_pickles_carry_no_secret_and_reload_the_key_from_the_environment(
    make: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    obj = make(api_key=KEY, model="m", dimensions=64, batch_size=5)
    data = pickle.dumps(obj)
    assert KEY.encode() not in data
    restored = pickle.loads(data)
    settings = restored.settings if isinstance(restored, EmbeddingClient) else restored
    assert settings.api_key is None  # none in the environment
    assert (settings.model, settings.dimensions, settings.batch_size) == ("m", 64, 5)
    monkeypatch.setenv("QWEN_SGLANG_API_KEY", "key-of-this-process")
    settings = pickle.loads(data)
    settings = settings.settings if isinstance(settings, EmbeddingClient) else settings
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "key-of-this-process"


@pytest.mark.parametrize("make", [QwenSGLangEmbeddings, QwenSGLangEmbedding], ids=["langchain", "llama-index"])
def test_an_unpickled_adapter_has_its_own_working_client(make: Any) -> None:
    original = make(base_url=f"http://alice:{PASSWORD}@h/v1", model="m")
    data = pickle.dumps(original)
    assert PASSWORD.encode() not in data
    restored = pickle.loads(data)
    assert restored.client is not original.client and isinstance(restored.client, EmbeddingClient)
    assert restored.base_url == "http://h/v1" and restored.url_credentials is None


def test_copies_in_the_same_process_keep_the_key() -> None:
    """Only pickles drop secrets: ``copy`` and ``model_copy`` are the same process's objects."""
    s = QwenSGLangSettings(api_key=KEY)
    for other in (copy.copy(s), copy.deepcopy(s), s.model_copy()):
        assert other.api_key is not None and other.api_key.get_secret_value() == KEY


def test_a_client_with_a_given_http_client_cannot_be_pickled() -> None:
    client = EmbeddingClient(model="m", http_client=httpx.Client())
    with pytest.raises(TypeError, match="http_client"):
        pickle.dumps(client)
