"""The local reranker backend's configuration and model worker (`RerankRunner`).

The causal LM is loaded with transformers' ``AutoModelForCausalLM`` (fp32 unless told otherwise);
pairs from concurrent requests are merged, sorted by length and run in left-padded forward
passes of at most ``max_batch_tokens`` padded tokens, each row with its own position ids, so a
pair's score does not depend on what it was batched with.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Literal

from qwen_sglang.errors import ConfigurationError
from qwen_sglang.rerank_format import RerankTemplate, format_body
from qwen_sglang.servers.models_path import resolve_model_path

__all__ = ["LocalRerankConfig", "RerankPrompt", "RerankRunner"]

logger = logging.getLogger("qwen_sglang.local_backend.rerank")

RerankPrompt = Literal["sglang", "qwen"]


@dataclass
class LocalRerankConfig:
    """Options of the local reranker backend.

    Attributes:
        model: A model directory (or a hub id already in the local cache).
        rerank_prompt: What ``/v1/rerank`` renders: ``"sglang"`` (SGLang's shipped template, no
            thinking suffix) or ``"qwen"`` (Qwen's exact prompt). ``/v1/score`` takes the prompt
            from the client and is unaffected.
        context_length: The served context (default: the model's ``max_position_embeddings``);
            a prompt of this many tokens or more is refused, like SGLang.
        max_batch_tokens: Most padded tokens in one forward pass.
        max_batch_rows: Most sequences in one forward pass (each row's next-token logits span the
            whole vocabulary: 64 rows of Qwen3's 151,669 take 39 MB in fp32).
        max_items_per_request: Most items (``/v1/score``) or documents (``/v1/rerank``) per request.
        max_request_tokens: Most prompt tokens in one request, all pairs together.
        max_request_bytes: Largest request body.
        dtype: The torch dtype the weights are loaded in (fp32 gives exact reference scores).
    """

    model: str
    host: str = "127.0.0.1"
    port: int = 30000
    served_model_name: str | None = None
    api_key: str | None = field(default=None, repr=False)
    rerank_prompt: RerankPrompt = "sglang"
    context_length: int | None = None
    device: str = "cpu"
    dtype: str = "float32"
    max_batch_tokens: int = 16384
    max_batch_rows: int = 64
    max_items_per_request: int = 4096
    max_request_tokens: int = 2_000_000
    max_request_bytes: int = 64_000_000
    allowed_hosts: tuple[str, ...] = ()
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    shutdown_timeout: int = 5
    log_level: str = "info"

    def __post_init__(self) -> None:
        if self.rerank_prompt not in ("sglang", "qwen"):
            raise ConfigurationError(f"rerank_prompt must be 'sglang' or 'qwen', got {self.rerank_prompt!r}")
        if self.context_length is not None and self.context_length < 2:
            raise ConfigurationError(f"context_length must be >= 2, got {self.context_length!r}")
        for name in (
            "max_batch_tokens",
            "max_batch_rows",
            "max_items_per_request",
            "max_request_tokens",
            "max_request_bytes",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{name} must be a positive int, got {value!r}")


def _length_sorted_chunks(lengths: Sequence[int], budget: int, max_rows: int) -> Iterator[list[int]]:
    """Indices sorted by length, cut into runs of at most ``max_rows`` whose padded size
    (rows x longest) fits ``budget`` (a single longer row still forms a run of one)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    start = 0
    while start < len(order):
        end = start + 1
        while end - start < max_rows and end < len(order) and lengths[order[end]] * (end - start + 1) <= budget:
            end += 1
        yield order[start:end]
        start = end


_Job = tuple[list[list[int]], list[int], "Future[list[list[float]]]"]


class RerankRunner:
    """Loads the causal LM and computes next-token log-probabilities in one worker thread.

    Jobs waiting in the queue when the worker becomes free are merged into the same forward
    passes (their pairs sorted together by length), so concurrent requests share the CPU.
    """

    def __init__(self, config: LocalRerankConfig) -> None:
        self.config = config
        self.ready = threading.Event()
        self.failed: BaseException | None = None
        self.model_path = config.model
        self.context_length = 0
        self.vocab_size = 0  # rows of the output head: valid input token ids
        self.label_vocab_size = 0  # the tokenizer's base vocabulary: what SGLang checks labels against
        self.tokenizer_max_length = 0
        self.model_type: str | None = None
        self.architectures: list[str] | None = None
        self.template: RerankTemplate | None = None
        self.forward_passes = 0
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._main, name="qwen-sglang-rerank-model", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._queue.put(None)

    def _load(self) -> None:
        path = resolve_model_path(self.config.model)
        self.model_path = str(path)
        logger.info("loading %s on %s (%s)", path, self.config.device, self.config.dtype)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        model: Any = AutoModelForCausalLM.from_pretrained(str(path), dtype=getattr(torch, self.config.dtype))
        self.model = model.to(self.config.device).eval()
        hf_config = self.model.config
        self.context_length = int(self.config.context_length or hf_config.max_position_embeddings)
        self.vocab_size = int(hf_config.vocab_size)
        self.label_vocab_size = int(self.tokenizer.vocab_size)
        self.tokenizer_max_length = int(self.tokenizer.model_max_length)
        self.model_type = hf_config.model_type
        self.architectures = list(hf_config.architectures or []) or None
        self.pad_id = int(self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0)
        self.template = RerankTemplate.from_tokenizer(lambda texts: self.tokenize(texts, False))
        warm = self.template.pair_ids(self.tokenize([format_body("warm", "up")], False)[0], max_length=10**9)
        self.label_logprobs([warm], [[self.template.yes_id]])  # the first forward pass
        logger.info("reranker ready: context %d tokens", self.context_length)

    def tokenize(self, texts: list[str], add_special_tokens: bool) -> list[list[int]]:
        """Token ids of ``texts`` (``add_special_tokens`` as SGLang's tokenizer call: True for prompts)."""
        enc = self.tokenizer(texts, add_special_tokens=add_special_tokens, truncation=False, verbose=False)
        return [list(ids) for ids in enc["input_ids"]]

    def label_logprobs(self, batch: list[list[int]], labels: list[list[int]]) -> list[list[float]]:
        """For each sequence, the log-probabilities (over the whole vocabulary) of its label tokens
        as the NEXT token, from left-padded forward passes with per-row position ids."""
        torch = self._torch
        out: list[list[float]] = [[] for _ in batch]
        lengths = [len(ids) for ids in batch]
        for chunk in _length_sorted_chunks(lengths, self.config.max_batch_tokens, self.config.max_batch_rows):
            width = len(batch[chunk[-1]])
            input_ids = torch.full((len(chunk), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            positions = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, i in enumerate(chunk):
                lo = width - len(batch[i])
                input_ids[row, lo:] = torch.tensor(batch[i], dtype=torch.long)
                mask[row, lo:] = 1
                positions[row, lo:] = torch.arange(len(batch[i]))
            device = self.config.device
            with torch.inference_mode():
                logits = (
                    self.model(
                        input_ids=input_ids.to(device),
                        attention_mask=mask.to(device),
                        position_ids=positions.to(device),
                        logits_to_keep=1,
                    )
                    .logits[:, -1]
                    .float()
                )
                logprobs = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
            for row, i in enumerate(chunk):
                out[i] = logprobs[row, labels[i]].cpu().tolist()
            self.forward_passes += 1
        return out

    def submit(self, batch: list[list[int]], labels: list[int]) -> Future[list[list[float]]]:
        """Queue ``batch`` (one label list shared by its sequences) for the worker."""
        fut: Future[list[list[float]]] = Future()
        self._queue.put((batch, labels, fut))
        return fut

    def _main(self) -> None:
        try:
            self._load()
        except BaseException as exc:  # reported by /health and serve()
            self.failed = exc
            logger.error("could not load the model: %s", exc)
            self.ready.set()
            return
        self.ready.set()
        while True:
            job = self._queue.get()
            if job is None:
                return
            jobs = [job]
            tokens = sum(len(ids) for ids in job[0])
            while tokens < self.config.max_batch_tokens * 4:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                jobs.append(nxt)
                tokens += sum(len(ids) for ids in nxt[0])
            self._run(jobs)

    def _run(self, jobs: list[_Job]) -> None:
        batch = [ids for rows, _, _ in jobs for ids in rows]
        labels = [lab for rows, lab, _ in jobs for _ in rows]
        try:
            results = self.label_logprobs(batch, labels)
        except BaseException as exc:
            for _, _, fut in jobs:
                fut.set_exception(exc)
            return
        offset = 0
        for rows, _, fut in jobs:
            fut.set_result(results[offset : offset + len(rows)])
            offset += len(rows)
