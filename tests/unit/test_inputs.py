"""Bad input gets a clear, typed error before any request is sent."""

from __future__ import annotations

import asyncio
import os
from typing import Any
from unittest import mock

import httpx
import pytest
from pydantic import ValidationError

from langchain_qwen_sglang import QwenSGLangEmbeddings
from llama_index_qwen_sglang import QwenSGLangEmbedding
from qwen_sglang import (
    ConfigurationError,
    EmbeddingClient,
    InputTypeError,
    InvalidInputError,
    QwenSGLangSettings,
)


@pytest.fixture
def sent() -> list[httpx.Request]:
    return []


@pytest.fixture
def client_factory(sent: list[httpx.Request]) -> Any:
    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(500)

    def make(**kw: Any) -> EmbeddingClient:
        t = httpx.MockTransport(handler)
        kw.setdefault("model", "Qwen/Qwen3-Embedding-0.6B")
        return EmbeddingClient(
            http_client=httpx.Client(transport=t), http_async_client=httpx.AsyncClient(transport=t), **kw
        )

    return make


BAD_TEXTS: list[tuple[str, Any, type[Exception], str]] = [
    ("None", None, InputTypeError, "NoneType"),
    ("single str", "just a string", InputTypeError, "single str"),
    ("bytes", b"abc", InputTypeError, "bytes"),
    ("None item", ["ok", None], InputTypeError, "index 1"),
    ("int item", ["ok", 3], InputTypeError, "index 1 is int"),
    ("bytes item", [b"x"], InputTypeError, "decode bytes"),
    ("dict", {"id-1": "a text"}, InputTypeError, r"got a dict \(pass list\(d.values\(\)\)"),
    ("set", {"a", "b"}, InputTypeError, "got a set, whose order is arbitrary"),
    ("empty string", ["ok", ""], InvalidInputError, "index 1 is empty"),
    ("whitespace", ["ok", "ok", " \n\t "], InvalidInputError, "index 2"),
    ("lone surrogate", ["ok", "bad \ud800 text"], InvalidInputError, "surrogate"),
]


def test_a_dataframe_is_refused_and_its_column_is_embedded(client_factory: Any, sent: list[httpx.Request]) -> None:
    # iterating a DataFrame gives its column names: df[["text"]] (two brackets) embedded the one
    # string "text" and returned one vector for all its rows, silently (as a dict gave its keys)
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"text": ["first row", "second row", "third row"]})
    client = client_factory()
    with pytest.raises(InputTypeError, match=r"got a pandas DataFrame .*df\["):
        client.embed_documents(df[["text"]])
    assert sent == []
    from qwen_sglang.client.job import check_strings

    # a Series (one column) is its values, as before
    assert check_strings(df["text"], noun="text", lead="texts", single="one") == list(df["text"])


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize(("case", "texts", "error", "match"), BAD_TEXTS, ids=[c[0] for c in BAD_TEXTS])
def test_bad_texts_fail_before_any_request(
    client_factory: Any,
    sent: list[httpx.Request],
    case: str,
    texts: Any,
    error: type[Exception],
    match: str,
    use_async: bool,
) -> None:
    client = client_factory()
    with pytest.raises(error, match=match):
        if use_async:
            asyncio.run(client.aembed_documents(texts))
        else:
            client.embed_documents(texts)
    assert sent == []


def test_ordered_containers_other_than_lists_are_taken_in_their_order() -> None:
    # a dict's key or value view keeps insertion order (unlike a set): its texts are what is sent
    from qwen_sglang.client.job import check_texts

    texts = {"alpha": "first text", "beta": "second text"}
    assert check_texts(texts.keys()) == ["alpha", "beta"] == check_texts(tuple(texts))  # type: ignore[arg-type]
    assert check_texts(texts.values()) == ["first text", "second text"]  # type: ignore[arg-type]


def test_error_carries_the_index(client_factory: Any) -> None:
    with pytest.raises(InvalidInputError) as info:
        client_factory().embed_documents(["a", "b", "", "c"])
    assert info.value.index == 2
    assert isinstance(info.value, ValueError)


def test_empty_list_returns_empty_without_request(client_factory: Any, sent: list[httpx.Request]) -> None:
    assert client_factory().embed_documents([]) == []
    assert sent == []


def test_zero_and_skip_policies_send_no_empty_text(client_factory: Any, sent: list[httpx.Request]) -> None:
    zero = client_factory(empty_text="zero", model="Qwen/Qwen3-Embedding-0.6B")
    out = zero.embed_documents(["", "  "])
    assert out == [[0.0] * 1024, [0.0] * 1024]
    skip = client_factory(empty_text="skip")
    result = skip.embed(["", " "])
    assert result.vectors.shape[0] == 0 and list(result.indices) == []
    assert sent == []


@pytest.mark.parametrize(
    ("dims", "match"),
    [
        (0, "32..1024"),
        (16, "32..1024"),
        (31, "32..1024"),
        (1025, "32..1024"),
        (64.0, "int"),
        ("64", "int"),
        (True, "int"),
    ],
)
def test_dimensions_outside_range_or_wrong_type(
    client_factory: Any, sent: list[httpx.Request], dims: Any, match: str
) -> None:
    with pytest.raises((ValidationError, ConfigurationError), match=match):
        QwenSGLangSettings(model="Qwen/Qwen3-Embedding-0.6B", dimensions=dims)
    client = client_factory()
    with pytest.raises(ConfigurationError, match=match):
        client.embed_documents(["x"], dimensions=dims)
    assert sent == []


def test_dimensions_bounds_accepted() -> None:
    assert QwenSGLangSettings(model="Qwen/Qwen3-Embedding-8B", dimensions=4096).dimensions == 4096
    assert QwenSGLangSettings(model="Qwen/Qwen3-Embedding-8B", dimensions=32).dimensions == 32
    # unknown models: any positive width, learned from the server
    assert QwenSGLangSettings(model="my-finetune", dimensions=7).dimensions == 7


@pytest.mark.parametrize("field", ["batch_size", "max_concurrency", "max_batch_tokens"])
@pytest.mark.parametrize("value", [0, -1])
def test_non_positive_knobs_rejected(field: str, value: int) -> None:
    with pytest.raises(ValidationError, match=field):
        QwenSGLangSettings(**{field: value})


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("localhost:30000", "not an http"),
        ("ftp://h/v1", "not an http"),
        ("http://", "not an http"),
        ("http://h:99999/v1", "invalid port '99999'"),
        ("http://user:pw@h:3o000/v1", "invalid port '3o000'"),
        ("", "non-empty"),
    ],
)
@pytest.mark.parametrize(
    "make",
    [QwenSGLangSettings, EmbeddingClient, QwenSGLangEmbeddings, QwenSGLangEmbedding],
    ids=["settings", "client", "langchain", "llama-index"],
)
def test_malformed_base_url_is_a_configuration_error_saying_what_a_valid_one_looks_like(
    url: str, match: str, make: Any
) -> None:
    with pytest.raises(ConfigurationError, match=match) as info:
        make(base_url=url)
    text = str(info.value)
    assert "a valid one looks like http://127.0.0.1:30000/v1" in text
    assert "pydantic" not in text and "input_value" not in text and "validation error" not in text
    assert "pw" not in text  # credentials in a malformed URL are not shown either


def test_base_url_normalisation() -> None:
    assert QwenSGLangSettings(base_url="http://h:30000").base_url == "http://h:30000/v1"
    assert QwenSGLangSettings(base_url="http://h:30000/v1/").base_url == "http://h:30000/v1"
    assert QwenSGLangSettings(base_url="https://proxy/emb/v1").base_url == "https://proxy/emb/v1"


def test_settings_from_environment() -> None:
    env = {
        "QWEN_SGLANG_BASE_URL": "http://env-host:1234",
        "QWEN_SGLANG_API_KEY": "env-key",
        "QWEN_SGLANG_MODEL": "Qwen/Qwen3-Embedding-8B",
    }
    with mock.patch.dict(os.environ, env):
        s = QwenSGLangSettings()
    assert s.base_url == "http://env-host:1234/v1"
    assert s.api_key is not None and s.api_key.get_secret_value() == "env-key"
    assert s.preset is not None and s.preset.native_dim == 4096
    with mock.patch.dict(os.environ, {}, clear=True):
        s = QwenSGLangSettings()
    assert s.base_url == "http://127.0.0.1:30000/v1" and s.api_key is None
    assert s.model is None and s.preset is None  # learned from the server at the first call


def test_chunk_overlap_must_be_smaller_than_window() -> None:
    with pytest.raises(ConfigurationError, match="chunk_overlap"):
        QwenSGLangSettings(chunk_tokens=64, chunk_overlap=64)


def test_kind_must_be_query_or_document(client_factory: Any) -> None:
    with pytest.raises(InputTypeError, match="kind"):
        client_factory().embed(["x"], kind="passage")
