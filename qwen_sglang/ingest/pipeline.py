"""The ingestion run: chunks batched, looked up, embedded and written (embedding batch n+1 while
batch n is written), stale chunks of each file read removed after its new ones are written,
progress over the input's bytes; `ingest` puts it together."""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qwen_sglang._progress import progress_bar
from qwen_sglang.client import EmbeddingClient
from qwen_sglang.errors import ConfigurationError
from qwen_sglang.ingest.decoding import check_encodings
from qwen_sglang.ingest.ids import chunk_id, digest
from qwen_sglang.ingest.sources import (
    Document,
    Inputs,
    Ledger,
    Meter,
    OnError,
    Problem,
    ReadOptions,
    find_files,
    problem_sink,
    read_documents,
)
from qwen_sglang.ingest.splitting import Chunker, iter_chunks
from qwen_sglang.ingest.targets import StoreTarget, as_target

__all__ = ["IngestReport", "ingest"]

logger = logging.getLogger("qwen_sglang.ingest")


@dataclass
class IngestReport:
    """What a run did (filled in as it goes: after an exception it says what was done)."""

    files: int = 0  # files read to their end
    units: int = 0  # documents: text files and JSON-lines records
    chunks: int = 0
    embedded: int = 0  # chunks embedded and written
    skipped: int = 0  # chunks already stored
    deleted: int = 0  # stale chunks of the files read (edited, emptied, records removed)
    pruned: int = 0  # chunks of files that no longer exist (``prune=True``)
    prompt_tokens: int = 0
    seconds: float = 0.0
    problems: list[Problem] = field(default_factory=list)
    complete: bool = False  # False when the run stopped early (an exception, Ctrl-C)

    def summary(self) -> str:
        """One line: documents, chunks, what was embedded, kept, removed, problems, speed."""
        rate = self.embedded / self.seconds if self.seconds else 0.0
        pruned = f", {self.pruned} pruned" if self.pruned else ""
        return (
            f"{self.files} files, {self.units} documents, {self.chunks} chunks: {self.embedded} embedded, "
            f"{self.skipped} already stored, {self.deleted} stale removed{pruned}, {len(self.problems)} problems; "
            f"{self.seconds:.1f}s ({rate:.0f} chunks/s, {self.prompt_tokens} tokens)"
        )


# ============================================================================================
# Batching
# ============================================================================================
@dataclass
class _Batch:
    ids: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    metadatas: list[dict[str, Any]] = field(default_factory=list)
    finished: list[Ledger] = field(default_factory=list)  # files read to their end
    bytes: int = 0  # input consumed to produce it (progress)
    repeated: int = 0  # chunks whose id is already in this batch (identical duplicates)

    def __len__(self) -> int:
        return len(self.ids)


def _batches(
    items: Iterable[Document | Ledger], max_chars: int, size: int, report: IngestReport, meter: Meter, model: str | None
) -> Iterator[_Batch]:
    """Chunks in batches of ``size``, under ids for ``model``'s vectors; a document's chunks may
    span batches. A file's ledger goes with the batch of its last chunk, so its stale chunks (the
    old text's, or another model's) are removed after that batch is written."""
    batch, seen, mark = _Batch(), set[str](), 0
    for item in items:
        if isinstance(item, Ledger):
            batch.finished.append(item)
            report.files += 1
            continue
        report.units += 1
        for index, text in enumerate(iter_chunks(item.blocks, max_chars)):
            cid = chunk_id(item.source, index, text, item.metadata, model=model)
            item.ledger.wanted.append(digest(cid))
            report.chunks += 1
            if cid in seen:
                batch.repeated += 1
                continue
            seen.add(cid)
            batch.ids.append(cid)
            batch.texts.append(text)
            batch.metadatas.append({**item.metadata, "source": item.ledger.file.key, "chunk": index})
            if len(batch) >= size:
                batch.bytes, mark = meter.total - mark, meter.total
                yield batch
                batch, seen = _Batch(), set()
    if len(batch) or batch.finished:
        batch.bytes = meter.total - mark
        yield batch


# ============================================================================================
# Progress
# ============================================================================================
class _Progress:
    """A bar over the input's bytes, advancing as each embedding request finishes, with files
    (of the total), chunks, documents/s and tokens/s."""

    def __init__(self, show: bool, inputs: Inputs, report: IngestReport) -> None:
        self.report = report
        self.files_total = len(inputs.files)
        self.started = time.monotonic()
        self.tokens = 0
        self.embedded = 0
        self.files_done = 0
        self.lock = threading.Lock()
        self.bar: Any = None
        if show:
            total = sum(f.size for f in inputs.files)
            self.bar = progress_bar(total=total, unit="B", desc="Ingesting", unit_scale=True, unit_divisor=1024)
            self._refresh()

    def request(self, texts: int, tokens: int, bytes_per_text: float) -> None:
        """One embedding request finished."""
        with self.lock:
            self.tokens += tokens
            self.embedded += texts
            if self.bar is not None:
                self.bar.update(texts * bytes_per_text)
                self._refresh()

    def advance(self, nbytes: float, files: int = 0) -> None:
        """A batch needs no (more) requests: its bytes, and the files it finishes."""
        with self.lock:
            self.files_done += files
            if self.bar is not None:
                self.bar.update(nbytes)
                self._refresh()

    def _refresh(self) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        r = self.report
        self.bar.set_postfix_str(
            f"files={self.files_done}/{self.files_total}, chunks={r.chunks}, embedded={self.embedded}, "
            f"docs/s={r.units / elapsed:.0f}, tokens/s={self.tokens / elapsed:.0f}"
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# ============================================================================================
# The run
# ============================================================================================
class _Run:
    """One ingestion: embed batch *n+1* while batch *n* is written (one writer thread, in order)."""

    def __init__(self, target: StoreTarget, client: EmbeddingClient, report: IngestReport, progress: _Progress) -> None:
        self.target, self.client, self.report, self.progress = target, client, report, progress
        self.width = target.stored_width()
        #: The model whose vectors this run stores (chunk ids carry it); none for a store that embeds itself.
        self.model = None if target.embeds_itself else embedding_model(client)
        asked = client.settings.dimensions  # the width of every vector (the client cuts what the server cannot)
        if not target.embeds_itself and self.width is not None and asked is not None:
            _check_width(self.width, asked)  # before any text is read or embedded
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qwen-sglang-ingest-writer")
        self.pending: Future[None] | None = None
        self.cannot_list = False

    def run(self, batches: Iterable[_Batch]) -> None:
        try:
            for batch in batches:
                keep, vectors = self._embed(batch)
                if self.pending is not None:
                    self.pending.result()  # at most one write in flight, errors surface here
                self.pending = self.writer.submit(self._write, batch, keep, vectors)
            if self.pending is not None:
                self.pending.result()
        finally:
            self.writer.shutdown(wait=True)  # a write in progress finishes (Ctrl-C included)

    def _embed(self, batch: _Batch) -> tuple[list[int], np.ndarray]:
        present = self.target.present(batch.ids)
        keep = [i for i, cid in enumerate(batch.ids) if cid not in present]
        self.report.skipped += len(batch) - len(keep) + batch.repeated
        vectors = np.empty((0, 0), dtype=np.float32)
        if not keep or self.target.embeds_itself:
            self.progress.advance(batch.bytes, len(batch.finished))
            return keep, vectors
        per_text = batch.bytes / len(keep)
        vectors = self.client.embed(
            [batch.texts[i] for i in keep],
            kind="document",
            on_progress=lambda texts, tokens: self.progress.request(texts, tokens, per_text),
        ).vectors
        self.progress.advance(0, len(batch.finished))
        if self.width is None:
            self.width = vectors.shape[1]
        _check_width(self.width, vectors.shape[1])
        return keep, vectors

    def _write(self, batch: _Batch, keep: list[int], vectors: np.ndarray) -> None:
        if keep:
            self.target.write(
                [batch.ids[i] for i in keep],
                [batch.texts[i] for i in keep],
                [batch.metadatas[i] for i in keep],
                vectors,
            )
            self.report.embedded += len(keep)
        for ledger in batch.finished:  # only now: what its file no longer produces
            if ledger.purge:
                self.report.deleted += self._purge(ledger)

    def _purge(self, ledger: Ledger) -> int:
        wanted = np.sort(np.frombuffer(ledger.wanted, dtype=np.uint64))
        stale: list[str] = []
        if not self.target.lists_sources:
            self._cannot_list()
            return 0
        try:
            for page in self.target.stored(ledger.file.key):
                digests = np.array([digest(cid) for cid, _ in page], dtype=np.uint64)
                found = np.searchsorted(wanted, digests).clip(max=max(len(wanted) - 1, 0))
                missing = (wanted[found] != digests) if len(wanted) else np.ones(len(page), dtype=bool)
                stale += [cid for (cid, _), gone in zip(page, missing, strict=True) if gone]
        except NotImplementedError:
            self._cannot_list()
            return 0
        if stale:
            self.target.delete(stale)
        return len(stale)

    def _cannot_list(self) -> None:
        if not self.cannot_list:
            self.cannot_list = True
            logger.warning(
                "%s cannot list chunks by source: old chunks of changed files are not removed",
                type(self.target).__name__,
            )

    def prune(self, inputs: Inputs) -> int:
        """Delete chunks of files under the given paths that this run did not reach."""
        roots = [r.rstrip("/") for r in inputs.roots]
        blind = [b.rstrip("/") + "/" for b in inputs.blind]

        def gone(source: str) -> bool:
            if not source or source in inputs.keys or source.startswith(tuple(blind)):
                return False
            return any(source == r or source.startswith(r + "/") for r in roots)

        stale = [cid for page in self.target.stored(None) for cid, source in page if gone(source)]
        if stale:
            self.target.delete(stale)
        return len(stale)


def embedding_model(client: EmbeddingClient) -> str:
    """The model whose vectors ``client`` makes, as chunk ids carry it (`qwen_sglang.ingest.ids.with_model`):
    the path the server loaded (``/model_info``), else the served name; a LoRA adapter the requests
    name (``base:adapter``, or an adapter's id in ``/v1/models``) by that name, as its vectors are
    not the base model's. Asks the server once per client."""
    facts = client.discover()
    model = client.model
    if model and model not in facts.served_names and (model in facts.adapters or ":" in model):
        return model
    return facts.model_path or model or "unknown"


def _check_width(stored: int, produced: int) -> None:
    if produced != stored:
        raise ConfigurationError(
            f"the collection holds {stored}-d vectors but this run produces {produced}-d ones (another model "
            "or dimensions): use another collection"
        )


def ingest(
    paths: Sequence[str | Path],
    *,
    client: EmbeddingClient,
    store: object = None,
    collection: object = None,
    max_chars: int = 2000,
    chunks_per_write: int = 256,
    encoding: str | Sequence[str] = "utf-8",
    on_error: OnError = "report",
    prune: bool = False,
    show_progress: bool = True,
    report: IngestReport | None = None,
    persist_dir: str | Path | None = None,
    collection_name: str | None = None,
    batch_size: int | None = None,
) -> IngestReport:
    """Ingest ``paths`` into a vector store, streaming, resumable and idempotent.

    The destination ``store`` is a Chroma collection or a `StoreTarget`: a LangChain
    ``VectorStore`` in `langchain_qwen_sglang.LangChainStoreTarget`, a LlamaIndex vector store in
    `llama_index_qwen_sglang.LlamaIndexStoreTarget`, or your own. Chroma and LlamaIndex stores get
    the client's vectors and, for every file read, end up holding exactly what that file produces
    now (edited, emptied, undecodable files and removed records included). LangChain stores get
    the vectors through ``add_embeddings`` where they have it and embed the texts with their own
    embeddings object otherwise; the ``VectorStore`` interface has no metadata query, so their
    changed files' old chunks are not removed (a warning says so). Chunk ids carry the served
    model (`qwen_sglang.ingest.chunk_id`): a rerun with another model of the same width embeds
    every chunk again, and Chroma and LlamaIndex stores lose the first model's vectors.

    Args:
        paths: files and directories (read recursively: ``.txt``, ``.md``, ``.markdown``,
            ``.rst``, ``.jsonl``, ``.ndjson``).
        client: the embedding client (its ``batch_size`` is texts per request).
        store: where the chunks go (see above).
        collection: the same as ``store`` (a Chroma collection; the older name).
        max_chars: largest chunk, in characters.
        chunks_per_write: chunks looked up, embedded and written together.
        encoding: a codec name, a comma-separated list tried in order per file (the first
            that decodes the whole file wins), or ``"auto"`` (detection, needs
            charset-normalizer), e.g. ``"utf-8,gb18030"``.
        on_error: ``"report"`` bad inputs in ``report.problems`` and go on, or ``"fail"``.
        prune: also delete the chunks of files under ``paths`` that no longer exist.
        report: filled in as the run goes (pass one to read what was done after an exception).
        persist_dir: removed (the core does not import chromadb): pass
            ``store=qwen_sglang.integrations.chroma.open_collection(persist_dir, collection_name)``.
        collection_name: see ``persist_dir``.
        batch_size: deprecated name of ``chunks_per_write``.

    Example:
        ```python
        from qwen_sglang import EmbeddingClient
        from qwen_sglang.ingest import ingest
        from qwen_sglang.integrations.chroma import open_collection

        client = EmbeddingClient(base_url="http://127.0.0.1:30000/v1", model="Qwen/Qwen3-Embedding-4B")
        report = ingest(["./docs"], client=client, store=open_collection("./chroma", "docs"))
        print(report.summary())
        ```
    """
    if batch_size is not None:
        warnings.warn("ingest(batch_size=) is now chunks_per_write=", DeprecationWarning, stacklevel=2)
        chunks_per_write = batch_size
    if chunks_per_write < 1:
        raise ConfigurationError("chunks_per_write must be positive")
    Chunker(max_chars)  # validates max_chars before anything is opened
    encodings = check_encodings(encoding)
    target = _destination(store, collection, persist_dir, collection_name, prune)
    report = report if report is not None else IngestReport()
    problem = problem_sink(report.problems, on_error)
    started, tokens_before = time.monotonic(), client.prompt_tokens
    inputs = find_files(paths, problem)
    progress = _Progress(show_progress, inputs, report)
    options = ReadOptions(encodings, problem, Meter())
    try:
        run = _Run(target, client, report, progress)
        chunks = _batches(
            read_documents(inputs, options), max_chars, chunks_per_write, report, options.meter, run.model
        )
        run.run(chunks)
        if prune:
            report.pruned = run.prune(inputs)
        report.complete = True
    finally:
        progress.close()
        report.prompt_tokens = client.prompt_tokens - tokens_before
        report.seconds = time.monotonic() - started
    return report


def _destination(
    store: object, collection: object, persist_dir: str | Path | None, collection_name: str | None, prune: bool
) -> StoreTarget:
    """The target ``ingest`` writes to, checked before anything is read."""
    if persist_dir is not None or collection_name is not None:
        raise ConfigurationError(
            "ingest(persist_dir=, collection_name=) moved out of the core (which does not import chromadb): "
            "pass store=qwen_sglang.integrations.chroma.open_collection(persist_dir, collection_name)"
        )
    if store is None and collection is None:
        raise ConfigurationError(
            "give store= (a Chroma collection or a StoreTarget), e.g. "
            "store=qwen_sglang.integrations.chroma.open_collection(persist_dir, name)"
        )
    target = as_target(store if store is not None else collection)
    if prune and not target.lists_sources:
        raise ConfigurationError(
            "prune needs a store that can list its chunks: a Chroma collection or a LlamaIndex store"
        )
    return target
