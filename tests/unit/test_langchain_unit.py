"""LangChain's standard unit suite (construction never touches the network), plus secrets."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_tests.unit_tests import EmbeddingsUnitTests

from langchain_qwen_sglang import QwenSGLangEmbeddings
from llama_index_qwen_sglang import QwenSGLangEmbedding, QwenSGLangRerank
from qwen_sglang import ConfigurationError, EmbeddingClient, QwenSGLangSettings


class TestQwenSGLangEmbeddingsStandard(EmbeddingsUnitTests):
    @property
    def embeddings_class(self) -> type[QwenSGLangEmbeddings]:
        return QwenSGLangEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"model": "Qwen/Qwen3-Embedding-0.6B", "base_url": "http://127.0.0.1:1/v1", "dimensions": 256}

    @property
    def init_from_env_params(self) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
        return (
            {
                "QWEN_SGLANG_BASE_URL": "http://gpu-box:30000/v1",
                "QWEN_SGLANG_API_KEY": "env-secret",
                "QWEN_SGLANG_MODEL": "Qwen/Qwen3-Embedding-8B",
            },
            {},
            {"base_url": "http://gpu-box:30000/v1", "api_key": "env-secret", "model": "Qwen/Qwen3-Embedding-8B"},
        )


@pytest.mark.parametrize("cls", [QwenSGLangEmbeddings, QwenSGLangEmbedding])
def test_secret_never_in_repr_str_or_dumps(cls: Any) -> None:
    obj = cls(api_key="sk-dont-leak-0123456789")
    for text in (repr(obj), str(obj), obj.model_dump_json(), str(obj.model_dump())):
        assert "sk-dont-leak" not in text
    assert obj.api_key.get_secret_value() == "sk-dont-leak-0123456789"


@pytest.mark.parametrize("cls", [QwenSGLangEmbeddings, QwenSGLangEmbedding])
def test_adapters_share_settings_and_validation(cls: Any) -> None:
    obj = cls(model="Qwen/Qwen3-Embedding-0.6B", dimensions=128, query_instruction="sts", max_concurrency=3)
    assert obj.embedding_dim == 128
    assert obj.client.settings.max_concurrency == 3
    assert obj.client.settings.query_instruction == "sts"
    with pytest.raises(ValueError, match="32..1024"):
        cls(model="Qwen/Qwen3-Embedding-0.6B", dimensions=2048)
    with pytest.raises(ValueError, match="skip"):
        cls(empty_text="skip")


def test_langchain_rejects_unknown_arguments() -> None:
    with pytest.raises(ConfigurationError, match="unknown setting 'modle' \\(did you mean 'model'\\?\\)"):
        QwenSGLangEmbeddings(modle="typo")  # type: ignore[call-arg]


@pytest.mark.parametrize("make", [EmbeddingClient, QwenSGLangSettings, QwenSGLangEmbedding])
def test_a_misspelt_setting_is_refused_not_ignored(make: Any) -> None:
    # a typo used to be dropped silently by the core client and its settings: the default applied
    with pytest.raises(ConfigurationError, match="unknown setting 'max_concurency' \\(did you mean 'max_concurrency'"):
        make(base_url="http://127.0.0.1:30000/v1", max_concurency=4)


@pytest.mark.parametrize("cls", [QwenSGLangEmbedding, QwenSGLangRerank])
def test_llama_index_dumps_construct_again(cls: Any) -> None:
    # LlamaIndex's serialiser writes class_name into model_dump()/dict()/JSON: building the
    # object again from its own dump must not take that key for a misspelt setting
    obj = cls(base_url="http://127.0.0.1:30000/v1", max_concurrency=3)
    for again in (
        cls(**obj.model_dump()),
        cls.model_validate(obj.model_dump()),
        cls.model_validate_json(obj.model_dump_json()),
    ):
        assert again.max_concurrency == 3
    with pytest.raises(ConfigurationError, match="unknown setting 'max_concurency'"):
        cls(**obj.model_dump(), max_concurency=4)


def test_llama_index_class_metadata() -> None:
    emb = QwenSGLangEmbedding(model="Qwen/Qwen3-Embedding-4B")
    assert QwenSGLangEmbedding.class_name() == "QwenSGLangEmbedding"
    assert emb.model_name == "Qwen/Qwen3-Embedding-4B"
    assert emb.to_dict()["class_name"] == "QwenSGLangEmbedding"
    assert emb.embedding_dim == 2560
