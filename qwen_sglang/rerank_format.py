"""Qwen3-Reranker's prompt and score, byte for byte, with no framework.

Qwen3-Reranker (0.6B/4B/8B) is a causal language model. The relevance of a document to a query
is the probability that the model answers "yes" rather than "no" after a fixed chat prompt:
P(yes) = softmax([logit("yes"), logit("no")])[0], taken from the logits of the NEXT token after
the prompt. This module holds that prompt, the default instruction, how the token ids of one
(query, document) pair are assembled from the tokenizer's ids of three parts, how over-long pairs
are truncated (the body only: prefix and suffix are always kept) and the numerically stable
two-way softmax. Everything else (tokenisation, transport, the model) lives elsewhere, so the
client, the local backend and the tests all share this one definition.

The layout, from Qwen's reference (``QwenLM/Qwen3-Embedding``)::

    prefix ids + body ids + suffix ids        (nothing after the suffix)

    prefix  <|im_start|>system\\nJudge whether ... "yes" or "no".<|im_end|>\\n<|im_start|>user\\n
    body    <Instruct>: {instruction}\\n<Query>: {query}\\n<Document>: {document}
    suffix  <|im_end|>\\n<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n

The body is tokenised WITHOUT special tokens (Qwen3-Reranker's tokenizer adds none anyway, unlike
Qwen3-Embedding's, which appends ``<|endoftext|>``).

Example:
    ```python
    from qwen_sglang.rerank_format import RerankTemplate, format_body

    template = RerankTemplate.from_tokenizer(tokenize)  # tokenize(texts) -> ids, no special tokens
    body_ids = tokenize([format_body("what is a panda?", "The giant panda is a bear.")])[0]
    ids = template.pair_ids(body_ids, max_length=context_length - 1)
    ```
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from qwen_sglang.errors import ConfigurationError, InputTypeError, InvalidInputError

__all__ = [
    "DEFAULT_RERANK_INSTRUCTION",
    "NO_TOKEN",
    "PREFIX",
    "RerankTemplate",
    "SUFFIX",
    "YES_TOKEN",
    "format_body",
    "format_prompt",
    "p_yes",
]

#: The system turn and the opening of the user turn (Qwen's reference, byte for byte).
PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and "
    'the Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n'
    "<|im_start|>user\n"
)
#: The end of the user turn and an assistant turn whose (empty) thinking block is already closed.
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
#: The instruction Qwen's reference uses when none is given (no final period).
DEFAULT_RERANK_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
#: The two answer tokens whose next-token logits make the score.
YES_TOKEN = "yes"  # noqa: S105 - a vocabulary token, not a secret
NO_TOKEN = "no"  # noqa: S105

Tokenize = Callable[[list[str]], Sequence[Sequence[int]]]
"""Tokenises texts WITHOUT special tokens: ``tokenize(["a", "b"]) -> [[ids of a], [ids of b]]``."""


def _check_text(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise InputTypeError(f"{name} must be a str, got {type(value).__name__}")
    return value


def format_body(query: str, document: str, instruction: str | None = None) -> str:
    """The user-turn body of one pair: ``<Instruct>: …\\n<Query>: …\\n<Document>: …``.

    Args:
        query: The search query; must contain a non-whitespace character.
        document: The candidate document (may be empty: what to do with empty documents is the
            caller's policy).
        instruction: The task instruction; ``None`` means `DEFAULT_RERANK_INSTRUCTION`.

    Raises:
        InputTypeError: A value that is not a ``str``.
        InvalidInputError: An empty or whitespace-only query.

    Example:
        ```python
        format_body("what is a panda?", "A bear.", "Find the answer")
        # '<Instruct>: Find the answer\\n<Query>: what is a panda?\\n<Document>: A bear.'
        ```
    """
    _check_text(query, "query")
    _check_text(document, "document")
    if instruction is None:
        instruction = DEFAULT_RERANK_INSTRUCTION
    _check_text(instruction, "instruction")
    if not query.strip():
        raise InvalidInputError("query is empty or whitespace only: pass the text to rank the documents against")
    return f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}"


def format_prompt(query: str, document: str, instruction: str | None = None) -> str:
    """The whole prompt of one pair as text: `PREFIX` + `format_body` + `SUFFIX`.

    For display and for servers that tokenise text. Token ids built by `RerankTemplate.pair_ids`
    are what Qwen's reference sends (the parts are tokenised separately, and only the body is
    ever truncated); tokenising this string gives the same ids for Qwen's tokenizer as long as
    nothing is truncated.
    """
    return PREFIX + format_body(query, document, instruction) + SUFFIX


def _check_ids(ids: object, name: str) -> list[int]:
    if not isinstance(ids, Sequence) or isinstance(ids, str | bytes):
        raise InputTypeError(f"{name} must be a sequence of token ids, got {type(ids).__name__}")
    out: list[int] = []
    for i, token in enumerate(ids):
        if isinstance(token, bool) or not isinstance(token, int):
            raise InputTypeError(f"{name}[{i}] must be an int token id, got {type(token).__name__}")
        if token < 0:
            raise InvalidInputError(f"{name}[{i}] is a negative token id ({token})", index=i)
        out.append(token)
    return out


@dataclass(frozen=True)
class RerankTemplate:
    """The token ids of the fixed parts of the prompt, and the two answer tokens.

    Build it once per tokenizer (`from_tokenizer`), then assemble each pair with `pair_ids`.

    Attributes:
        prefix_ids: Ids of `PREFIX`.
        suffix_ids: Ids of `SUFFIX`.
        yes_id: Id of the single token ``"yes"`` (9693 for Qwen3).
        no_id: Id of the single token ``"no"`` (2152 for Qwen3).
    """

    prefix_ids: tuple[int, ...]
    suffix_ids: tuple[int, ...]
    yes_id: int
    no_id: int

    def __post_init__(self) -> None:
        _check_ids(self.prefix_ids, "prefix_ids")
        _check_ids(self.suffix_ids, "suffix_ids")
        _check_ids([self.yes_id, self.no_id], "answer token ids")
        if not self.prefix_ids or not self.suffix_ids:
            raise ConfigurationError("the prefix and the suffix must tokenise to at least one token each")
        if self.yes_id == self.no_id:
            raise ConfigurationError(f'"yes" and "no" map to the same token id {self.yes_id}')

    @classmethod
    def from_tokenizer(cls, tokenize: Tokenize) -> RerankTemplate:
        """Tokenise the fixed parts and look up the answer tokens with ``tokenize``.

        Args:
            tokenize: Tokenises a list of texts WITHOUT special tokens (for a Hugging Face
                tokenizer: ``lambda texts: tok(texts, add_special_tokens=False)["input_ids"]``).

        Raises:
            ConfigurationError: ``"yes"`` or ``"no"`` is not one token (not a Qwen3 tokenizer).
        """
        prefix, suffix, yes, no = (list(ids) for ids in tokenize([PREFIX, SUFFIX, YES_TOKEN, NO_TOKEN]))
        if len(yes) != 1 or len(no) != 1:
            raise ConfigurationError(
                f'"yes" and "no" must each be one token of the reranker\'s tokenizer, got {yes} and {no}: '
                "is this a Qwen3-Reranker model?"
            )
        return cls(tuple(prefix), tuple(suffix), yes[0], no[0])

    @property
    def fixed_length(self) -> int:
        """Tokens of the prefix and the suffix together (what every pair costs besides its body)."""
        return len(self.prefix_ids) + len(self.suffix_ids)

    def body_budget(self, max_length: int) -> int:
        """The most body tokens a pair of at most ``max_length`` tokens can hold.

        Raises:
            ConfigurationError: ``max_length`` leaves no room for a single body token.
        """
        if isinstance(max_length, bool) or not isinstance(max_length, int):
            raise ConfigurationError(f"max_length must be an int, got {type(max_length).__name__}")
        budget = max_length - self.fixed_length
        if budget < 1:
            raise ConfigurationError(
                f"max_length={max_length} leaves no room for the query and document: the fixed prompt "
                f"alone takes {self.fixed_length} tokens. Serve the reranker with a longer context."
            )
        return budget

    def pair_ids(self, body_ids: Sequence[int], *, max_length: int) -> list[int]:
        """Prefix ids + body ids + suffix ids, the body cut to fit ``max_length`` tokens.

        Like Qwen's reference, truncation keeps the FIRST tokens of the body (so the end of the
        document goes first) and never touches the prefix or the suffix; nothing follows the
        suffix. For SGLang, ``max_length`` is the served context length minus one (a prompt of
        exactly the context length is rejected).

        Args:
            body_ids: Ids of `format_body`'s text, tokenised without special tokens.
            max_length: The most tokens the whole pair may have.

        Raises:
            InputTypeError: ``body_ids`` is not a sequence of ints.
            InvalidInputError: A negative id, or an empty body.
            ConfigurationError: ``max_length`` too small for the fixed parts.

        Example:
            ```python
            ids = template.pair_ids(body_ids, max_length=4095)
            assert ids[: len(template.prefix_ids)] == list(template.prefix_ids)
            ```
        """
        body = _check_ids(body_ids, "body_ids")
        if not body:
            raise InvalidInputError("body_ids is empty: tokenise format_body(query, document, instruction)")
        budget = self.body_budget(max_length)
        return [*self.prefix_ids, *body[:budget], *self.suffix_ids]


def p_yes(yes_logit: float, no_logit: float) -> float:
    """P("yes") = softmax([yes_logit, no_logit])[0], computed without overflow.

    Log-probabilities work as well as logits (the softmax over two values only depends on their
    difference), so this also turns SGLang's label-token log-probabilities into the score.

    Raises:
        InputTypeError: A value that is not a real number.
        InvalidInputError: A NaN, or two infinities (the score is undefined).

    Example:
        ```python
        p_yes(2.0, 0.0)  # 0.8807970779778823
        p_yes(1000.0, -1000.0)  # 1.0, no overflow
        ```
    """
    for name, value in (("yes_logit", yes_logit), ("no_logit", no_logit)):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InputTypeError(f"{name} must be a real number, got {type(value).__name__}")
    diff = float(yes_logit) - float(no_logit)
    if math.isnan(diff):
        raise InvalidInputError(f"P(yes) is undefined for logits yes={yes_logit!r}, no={no_logit!r}")
    if diff >= 0:
        return 1.0 / (1.0 + math.exp(-diff))
    e = math.exp(diff)
    return e / (1.0 + e)
