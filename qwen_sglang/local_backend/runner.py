"""The local embedding backend's configuration and model worker (`ModelRunner`, micro-batching).

Concurrent requests are queued to one worker thread that merges them into shared forward passes,
so results never mix and the CPU stays busy; a pass holds at most ``max_batch_tokens`` tokens, so
a large request never starves a small one.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from qwen_sglang.errors import ModelNotAvailableError
from qwen_sglang.servers.models_path import resolve_model_path

__all__ = ["Job", "LocalBackendConfig", "ModelRunner", "ShuttingDownError"]

logger = logging.getLogger("qwen_sglang.local_backend")


@dataclass
class LocalBackendConfig:
    """Options of the local backend (the CLI's ``serve --backend local`` flags)."""

    model: str
    host: str = "127.0.0.1"
    port: int = 30000
    served_model_name: str | None = None
    api_key: str | None = field(default=None, repr=False)
    matryoshka: bool = True
    context_length: int | None = None
    device: str = "cpu"
    max_batch_tokens: int = 16384
    """Most (padded) tokens in one forward pass."""
    batch_window: float = 0.05
    """Seconds to wait for more requests to merge into a forward pass."""
    max_inputs_per_request: int = 4096
    max_request_chars: int = 32_000_000
    max_request_tokens: int = 1 << 20
    """Most tokens in one request (text after tokenisation, or token ids): 413 beyond."""
    max_request_bytes: int = 32 << 20
    """Largest request body (``Content-Length`` checked before reading, then while streaming): 413 beyond."""
    allowed_hosts: tuple[str, ...] = ()
    """Host names accepted besides ``localhost``, IP addresses and ``host``; ``"*"`` accepts any."""
    header_timeout: float = 10.0
    """Seconds a connection may take to send a request's headers (idle or slow clients are closed)."""
    body_timeout: float = 60.0
    """Seconds a request may take to send its body: 408 beyond."""
    shutdown_timeout: int = 5
    """Seconds SIGTERM waits for answers in progress before cancelling them."""
    log_level: str = "info"


class ShuttingDownError(RuntimeError):
    """The server stopped before a request's forward passes ran."""


@dataclass(eq=False)
class Job:
    """One request's token-id lists and where their vectors go."""

    batch: list[list[int]]
    future: Future[np.ndarray] = field(default_factory=Future)
    out: np.ndarray | None = None
    left: int = 0
    cancelled: bool = False
    """Set by the HTTP side when the client went away: its remaining inputs are dropped."""


#: A pending input: (token count, arrival order, job, index in the job).
_Item = tuple[int, int, Job, int]


class ModelRunner:
    """Loads the model and runs queued embedding work in one worker thread (micro-batching).

    The worker keeps every pending input of every request in one list sorted by length and runs
    one forward pass at a time from its shortest inputs (at most ``max_batch_tokens`` padded
    tokens): concurrent requests share passes, a request that arrives while a large one runs is
    served after the current pass, inputs of a request whose client left are dropped, and `stop`
    takes effect between two passes.
    """

    def __init__(self, config: LocalBackendConfig) -> None:
        self.config = config
        self.ready = threading.Event()
        self.failed: BaseException | None = None
        self.model_path: str = config.model
        self.dim = 0
        self.context_length = 0
        self.vocab_size = 0
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._stopping = threading.Event()
        self._order = itertools.count()
        self._thread = threading.Thread(target=self._main, name="qwen-sglang-model", daemon=True)
        self.forward_passes = 0
        self.in_flight = 0  # embedding requests received and not yet answered

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Fail what is queued (`ShuttingDownError`) after the forward pass in progress; end the worker."""
        self._stopping.set()
        self._queue.put(None)

    # ------------------------------------------------------------------ model
    def _load(self) -> None:
        path = resolve_model_path(self.config.model)
        self.model_path = str(path)
        logger.info("loading %s on %s", path, self.config.device)
        import torch
        from sentence_transformers import SentenceTransformer

        self._torch = torch
        self.model = SentenceTransformer(str(path), device=self.config.device)
        self.model.eval()
        self.tokenizer = self.model.tokenizer
        dim = self.model.get_embedding_dimension()
        if not dim:
            raise ModelNotAvailableError(f"{path} does not produce sentence embeddings (no pooling module)")
        self.dim = int(dim)
        hf_config = getattr(self.model[0], "auto_model", None)
        hf_config = getattr(hf_config, "config", None)
        ctx = self.config.context_length or getattr(hf_config, "max_position_embeddings", None)
        self.context_length = int(ctx or self.model.max_seq_length or 512)
        self.vocab_size = int(getattr(hf_config, "vocab_size", None) or len(self.tokenizer))
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.eos_token_id or 0
        self.left_pad = getattr(self.tokenizer, "padding_side", "right") == "left"
        self.embed_ids([self.tokenize(["warm up"], True)[0]])  # first forward pass
        logger.info("model ready: %d-d, context %d tokens", self.dim, self.context_length)

    def tokenize(self, texts: list[str], add_special_tokens: bool) -> list[list[int]]:
        if not texts:
            return []
        enc = self.tokenizer(texts, add_special_tokens=add_special_tokens, truncation=False, verbose=False)
        return [list(ids) for ids in enc["input_ids"]]

    def _chunk_end(self, lengths: list[int]) -> int:
        """How many of these (ascending) lengths fit one forward pass of ``max_batch_tokens``."""
        end = 1
        while end < len(lengths) and lengths[end] * (end + 1) <= self.config.max_batch_tokens:
            end += 1
        return end

    def forward(self, chunk: list[list[int]]) -> np.ndarray:
        """One forward pass over token-id lists (padded to the longest): L2-normalised vectors."""
        torch = self._torch
        width = max(len(ids) for ids in chunk)
        input_ids = torch.full((len(chunk), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, ids in enumerate(chunk):
            lo = width - len(ids) if self.left_pad else 0
            input_ids[row, lo : lo + len(ids)] = torch.tensor(ids, dtype=torch.long)
            mask[row, lo : lo + len(ids)] = 1
        with torch.inference_mode():
            features = self.model({"input_ids": input_ids, "attention_mask": mask})
            emb = features["sentence_embedding"].float()
            emb = torch.nn.functional.normalize(emb, p=2, dim=1)
        self.forward_passes += 1
        out: np.ndarray = emb.cpu().numpy()
        return out

    def embed_ids(self, batch: list[list[int]]) -> np.ndarray:
        """Embed token-id lists in this thread (sorted by length into passes of bounded size)."""
        out = np.empty((len(batch), self.dim), dtype=np.float32)
        order = sorted(range(len(batch)), key=lambda i: len(batch[i]))
        start = 0
        while start < len(order):
            end = start + self._chunk_end([len(batch[i]) for i in order[start:]])
            out[order[start:end]] = self.forward([batch[i] for i in order[start:end]])
            start = end
        return out

    # ------------------------------------------------------------------ worker
    def submit(self, batch: list[list[int]]) -> Job:
        """Queue a request's token-id lists; its ``future`` gets their vectors in order."""
        job = Job(batch, left=len(batch))
        self._queue.put(job)
        return job

    def _admit(self, job: Job, pending: list[_Item]) -> None:
        order = next(self._order)
        for i, ids in enumerate(job.batch):
            bisect.insort(pending, (len(ids), order, job, i), key=lambda item: item[:2])

    def _gather(self, pending: list[_Item], jobs: int) -> None:
        """Admit what is queued. Requests already received but still being tokenised are waited
        for (up to ``batch_window``) when the worker was idle (``jobs`` admitted since), so
        concurrent requests pad like one; a lone client never waits."""
        deadline = time.monotonic() + self.config.batch_window
        tokens = sum(item[0] for item in pending)
        while True:
            expecting = 0 < jobs < self.in_flight and tokens < self.config.max_batch_tokens * 4
            wait = max(0.0, deadline - time.monotonic()) if expecting else 0.0
            try:
                job = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
            except queue.Empty:
                return
            if job is None:
                return
            self._admit(job, pending)
            if jobs:
                jobs += 1
            tokens += sum(len(ids) for ids in job.batch)

    def _main(self) -> None:
        try:
            self._load()
        except BaseException as exc:  # reported by /health and the serve command
            self.failed = exc
            logger.error("could not load the model: %s", exc)
            self.ready.set()
            return
        self.ready.set()
        pending: list[_Item] = []
        while not self._stopping.is_set():
            if not pending:
                job = self._queue.get()
                if job is None:
                    continue
                self._admit(job, pending)
                self._gather(pending, jobs=1)
            else:
                self._gather(pending, jobs=0)
            pending = self._drop_cancelled(pending)
            if pending and not self._stopping.is_set():
                pending = self._run_pass(pending)
        stopped = ShuttingDownError("The server is shutting down")
        left = [item[2] for item in pending]
        while True:
            try:
                queued = self._queue.get_nowait()
            except queue.Empty:
                break
            left += [queued] if queued is not None else []
        for job in left:
            if not job.future.done() and not job.cancelled:
                job.future.set_exception(stopped)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @staticmethod
    def _drop_cancelled(pending: list[_Item]) -> list[_Item]:
        gone = {id(job): job for _, _, job, _ in pending if job.cancelled}
        if not gone:
            return pending
        for job in gone.values():
            logger.info("client went away: dropped %d of its %d inputs", job.left, len(job.batch))
        return [item for item in pending if not item[2].cancelled]

    def _run_pass(self, pending: list[_Item]) -> list[_Item]:
        """One forward pass over the shortest pending inputs; returns what is left pending."""
        end = self._chunk_end([item[0] for item in pending[: self.config.max_batch_tokens]])
        chunk, rest = pending[:end], pending[end:]
        try:
            vectors = self.forward([job.batch[i] for _, _, job, i in chunk])
        except Exception as exc:
            failed = {id(job): job for _, _, job, _ in chunk}
            for job in failed.values():
                if not job.future.done():
                    job.future.set_exception(exc)
            return [item for item in rest if id(item[2]) not in failed]
        for row, (_, _, job, i) in enumerate(chunk):
            if job.out is None:
                job.out = np.empty((len(job.batch), self.dim), dtype=np.float32)
            job.out[i] = vectors[row]
            job.left -= 1
            if job.left == 0 and not job.future.done():
                job.future.set_result(job.out)
        return rest
