"""Qwen3-Reranker's prompt, pair assembly, truncation and score (qwen_sglang.rerank_format)."""

from __future__ import annotations

import math
import sys

import pytest

from qwen_sglang.errors import ConfigurationError, InputTypeError, InvalidInputError, QwenSGLangError
from qwen_sglang.rerank_format import (
    DEFAULT_RERANK_INSTRUCTION,
    PREFIX,
    SUFFIX,
    RerankTemplate,
    format_body,
    format_prompt,
    p_yes,
)

# Qwen's reference (QwenLM/Qwen3-Embedding README), written out again here on purpose.
QWEN_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
    'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
QWEN_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
QWEN_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"


def test_prompt_is_qwens_byte_for_byte() -> None:
    assert PREFIX.encode() == QWEN_PREFIX.encode()
    assert SUFFIX.encode() == QWEN_SUFFIX.encode()
    assert DEFAULT_RERANK_INSTRUCTION == QWEN_INSTRUCTION
    body = "<Instruct>: I\n<Query>: what is a panda?\n<Document>: 大熊猫 🐼"
    assert format_body("what is a panda?", "大熊猫 🐼", "I") == body
    assert format_prompt("what is a panda?", "大熊猫 🐼", "I") == QWEN_PREFIX + body + QWEN_SUFFIX


def test_default_instruction_only_for_none() -> None:
    assert format_body("q", "d") == f"<Instruct>: {QWEN_INSTRUCTION}\n<Query>: q\n<Document>: d"
    assert format_body("q", "d", "") == "<Instruct>: \n<Query>: q\n<Document>: d"  # as the reference


def test_text_is_kept_verbatim() -> None:
    # no stripping, no escaping: special-token strings inside a document stay text here
    assert (
        format_body(" q ", "<|im_end|>\n") == f"<Instruct>: {QWEN_INSTRUCTION}\n<Query>:  q \n<Document>: <|im_end|>\n"
    )


@pytest.mark.parametrize(
    ("query", "document", "instruction", "error"),
    [
        ("", "d", None, InvalidInputError),
        (" \n\t", "d", None, InvalidInputError),
        (None, "d", None, InputTypeError),
        (b"q", "d", None, InputTypeError),
        ("q", None, None, InputTypeError),
        ("q", 3, None, InputTypeError),
        ("q", "d", 1, InputTypeError),
    ],
)
def test_bad_text_is_a_typed_error(query: object, document: object, instruction: object, error: type) -> None:
    with pytest.raises(error) as info:
        format_body(query, document, instruction)  # type: ignore[arg-type]
    assert isinstance(info.value, QwenSGLangError)


def template() -> RerankTemplate:
    return RerankTemplate(prefix_ids=(1, 2, 3), suffix_ids=(7, 8), yes_id=9693, no_id=2152)


def test_pair_ids_are_prefix_body_suffix_and_nothing_after() -> None:
    t = template()
    assert t.pair_ids([10, 11, 12], max_length=100) == [1, 2, 3, 10, 11, 12, 7, 8]
    assert t.fixed_length == 5


def test_truncation_cuts_the_end_of_the_body_only() -> None:
    t = template()
    body = list(range(100, 120))
    ids = t.pair_ids(body, max_length=12)
    assert len(ids) == 12
    assert ids[:3] == [1, 2, 3] and ids[-2:] == [7, 8]  # prefix and suffix kept whole
    assert ids[3:-2] == body[:7]  # the FIRST body tokens, like the reference's truncation
    assert t.pair_ids(body, max_length=25) == [1, 2, 3, *body, 7, 8]  # exactly fits: untouched
    assert t.pair_ids(body, max_length=6) == [1, 2, 3, 100, 7, 8]  # one body token left


def test_max_length_without_room_for_a_body_is_a_configuration_error() -> None:
    t = template()
    for max_length in (5, 0, -1):
        with pytest.raises(ConfigurationError, match="longer context"):
            t.pair_ids([1], max_length=max_length)
    with pytest.raises(ConfigurationError):
        t.pair_ids([1], max_length=10.0)  # type: ignore[arg-type]
    assert t.body_budget(6) == 1


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ([], InvalidInputError),
        ([1, -2], InvalidInputError),
        ("abc", InputTypeError),
        ([1, "2"], InputTypeError),
        ([1, True], InputTypeError),
        ([1.0], InputTypeError),
        (None, InputTypeError),
    ],
)
def test_bad_body_ids_are_typed_errors(body: object, error: type) -> None:
    with pytest.raises(error):
        template().pair_ids(body, max_length=100)  # type: ignore[arg-type]


def test_template_checks_its_parts() -> None:
    with pytest.raises(ConfigurationError):
        RerankTemplate(prefix_ids=(), suffix_ids=(1,), yes_id=1, no_id=2)
    with pytest.raises(ConfigurationError):
        RerankTemplate(prefix_ids=(1,), suffix_ids=(1,), yes_id=5, no_id=5)
    with pytest.raises(InvalidInputError):
        RerankTemplate(prefix_ids=(1,), suffix_ids=(1,), yes_id=-1, no_id=5)


def test_from_tokenizer_tokenises_the_parts_once_and_checks_yes_no() -> None:
    calls: list[list[str]] = []

    def fake(texts: list[str]) -> list[list[int]]:
        calls.append(texts)
        return [[len(t)] if t in ("yes", "no") else [ord(c) for c in t[:3]] for t in texts]

    t = RerankTemplate.from_tokenizer(fake)
    assert calls == [[PREFIX, SUFFIX, "yes", "no"]]
    assert t.prefix_ids == (ord("<"), ord("|"), ord("i")) and (t.yes_id, t.no_id) == (3, 2)

    with pytest.raises(ConfigurationError, match="Qwen3-Reranker"):
        RerankTemplate.from_tokenizer(lambda texts: [[1, 2] for _ in texts])


def test_p_yes_is_the_two_way_softmax() -> None:
    for yes, no in [(0.0, 0.0), (2.0, -1.0), (-3.5, 4.25), (12.0, 11.0)]:
        expected = math.exp(yes) / (math.exp(yes) + math.exp(no))
        assert p_yes(yes, no) == pytest.approx(expected, rel=1e-12)
    assert p_yes(0.0, 0.0) == 0.5
    # log-probabilities give the same score as logits (only the difference counts)
    assert p_yes(2.0 - 7.0, -1.0 - 7.0) == pytest.approx(p_yes(2.0, -1.0), rel=1e-12)


def test_p_yes_does_not_overflow() -> None:
    assert p_yes(1000.0, -1000.0) == 1.0
    assert p_yes(-1000.0, 1000.0) == 0.0
    assert p_yes(sys.float_info.max, -sys.float_info.max) == 1.0
    assert p_yes(math.inf, 0.0) == 1.0 and p_yes(0.0, math.inf) == 0.0
    tiny = p_yes(-745.0, 0.0)
    assert 0.0 < tiny < 1e-300  # no underflow to 0 in the intermediate steps


@pytest.mark.parametrize(
    ("yes", "no", "error"),
    [
        (math.nan, 0.0, InvalidInputError),
        (math.inf, math.inf, InvalidInputError),
        ("1", 0.0, InputTypeError),
        (True, 0.0, InputTypeError),
        (None, 0.0, InputTypeError),
    ],
)
def test_p_yes_bad_values_are_typed_errors(yes: object, no: object, error: type) -> None:
    with pytest.raises(error):
        p_yes(yes, no)  # type: ignore[arg-type]


def test_import_pulls_no_framework_or_torch() -> None:
    import subprocess

    code = (
        "import sys, qwen_sglang.rerank_format;"
        "heavy = [m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'transformers', 'sentence_transformers', 'fastapi', 'langchain_core', 'llama_index', 'chromadb')];"
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
