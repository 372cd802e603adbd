"""Bulk population of a Chroma collection: streaming, bounded memory, resumable, idempotent.

``qwen-sglang ingest PATH... --collection NAME --persist-dir DIR`` (or `ingest`) reads text
files (``.txt``, ``.md``) and JSON-lines files (one ``{"id", "text", "metadata"}`` object a line),
directories recursively, splits each document into chunks, embeds them with the shared client
(batched, ``max_concurrency`` requests in flight) and writes them to Chroma as float32 arrays
while the next batch is being embedded.

Every chunk has a deterministic id made of its source (the file, or the file and record id), its
position and a hash of its text. A batch first asks Chroma which ids it already holds, so a rerun
after a crash or Ctrl-C embeds only what is missing; chunks of a source that are no longer
produced (the file changed) are deleted *after* the new ones are written, so nothing is lost and
nothing is duplicated. Unreadable files, wrong encodings, empty files and malformed JSON lines are
reported with file and line, and skipped (``on_error="report"``) or stop the run (``"fail"``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from qwen_sglang.client import EmbeddingClient
from qwen_sglang.errors import ConfigurationError, QwenSGLangError

__all__ = ["IngestError", "IngestReport", "Problem", "Unit", "chunk_id", "ingest", "iter_units", "split_text"]

logger = logging.getLogger("qwen_sglang.ingest")

TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".rst"}
JSONL_SUFFIXES = {".jsonl", ".ndjson"}
OnError = Literal["report", "fail"]


class IngestError(QwenSGLangError):
    """A bad input file stopped an ``on_error="fail"`` run."""


@dataclass
class Problem:
    """An input that could not be ingested."""

    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        return f"{where}: {self.message}"


@dataclass
class Unit:
    """One source document: a text file, or one record of a JSON-lines file."""

    source: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class IngestReport:
    """What a run did."""

    units: int = 0
    chunks: int = 0
    embedded: int = 0
    skipped: int = 0
    deleted: int = 0
    prompt_tokens: int = 0
    seconds: float = 0.0
    problems: list[Problem] = field(default_factory=list)

    def summary(self) -> str:
        rate = self.embedded / self.seconds if self.seconds else 0.0
        return (
            f"{self.units} documents, {self.chunks} chunks: {self.embedded} embedded, {self.skipped} already "
            f"stored, {self.deleted} stale removed, {len(self.problems)} problems; {self.seconds:.1f}s "
            f"({rate:.0f} chunks/s, {self.prompt_tokens} tokens)"
        )


# ------------------------------------------------------------------------------------ reading
def _files(paths: Iterable[str | Path]) -> Iterator[Path]:
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                if child.is_file() and child.suffix.lower() in TEXT_SUFFIXES | JSONL_SUFFIXES:
                    yield child
        else:
            yield path


def _scalar_metadata(meta: Any) -> dict[str, Any]:
    """Chroma accepts str/int/float/bool metadata values: keep those, JSON-encode the rest."""
    if not isinstance(meta, dict):
        return {}
    out: dict[str, Any] = {}
    for key, value in meta.items():
        if isinstance(value, str | int | float | bool):
            out[str(key)] = value
        elif value is not None:
            out[str(key)] = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return out


def iter_units(paths: Iterable[str | Path], problems: list[Problem], on_error: OnError = "report") -> Iterator[Unit]:
    """Yield the documents in ``paths``; append what cannot be read to ``problems``."""

    def problem(path: Path, line: int | None, message: str) -> None:
        p = Problem(str(path), line, message)
        if on_error == "fail":
            raise IngestError(str(p))
        logger.warning("skipped %s", p)
        problems.append(p)

    for path in _files(paths):
        key = path.resolve().as_posix()
        try:
            raw = path.read_bytes()
        except OSError as exc:
            problem(path, None, f"unreadable: {exc.strerror or exc}")
            continue
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            problem(path, None, f"not UTF-8 ({exc.reason} at byte {exc.start})")
            continue
        if path.suffix.lower() in JSONL_SUFFIXES:
            for number, line in enumerate(text.splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError as exc:
                    problem(path, number, f"malformed JSON: {exc}")
                    continue
                if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                    problem(path, number, "expected an object with a string 'text'")
                    continue
                if not record["text"].strip():
                    problem(path, number, "empty text")
                    continue
                rid = record.get("id", number)
                meta = _scalar_metadata(record.get("metadata"))
                meta["record_id"] = str(rid)
                yield Unit(f"{key}#{rid}", record["text"], meta)
        else:
            if not text.strip():
                problem(path, None, "empty file")
                continue
            yield Unit(key, text, {"title": path.stem})


# ------------------------------------------------------------------------------------ chunking
# Sentence ends: ASCII . ! ? followed by space, or the CJK full stop / exclamation / question mark.
_SENTENCE_END = re.compile(r"((?<=[.!?])\s+|(?<=[\u3002\uff01\uff1f])\s*)")


def split_text(text: str, max_chars: int = 2000) -> list[str]:
    """Split ``text`` into chunks of at most ``max_chars`` characters.

    Paragraphs are kept together when they fit, long paragraphs are split at sentence ends, and
    sentences longer than ``max_chars`` are cut. Pieces keep their original separators, so a
    chunk is a verbatim stretch of the document. Sizes are in characters, not tokens: a chunk
    that still exceeds the model's token limit goes through the client's ``long_text`` policy.
    """
    if max_chars < 1:
        raise ConfigurationError("max_chars must be positive")
    pieces: list[tuple[str, str]] = []  # (separator before the piece, piece)
    for para in re.split(r"\n\s*\n", text):
        para = para.strip()
        if not para:
            continue
        if len(para) <= max_chars:
            pieces.append(("\n\n", para))
            continue
        parts = _SENTENCE_END.split(para)  # sentence, separator, sentence, ...
        sep = "\n\n"
        for k in range(0, len(parts), 2):
            sentence = parts[k]
            while len(sentence) > max_chars:
                pieces.append((sep, sentence[:max_chars]))
                sentence, sep = sentence[max_chars:], ""
            if sentence:
                pieces.append((sep, sentence))
            sep = parts[k + 1] if k + 1 < len(parts) else ""
    chunks: list[str] = []
    current = ""
    for sep, piece in pieces:
        joined = f"{current}{sep}{piece}" if current else piece
        if len(joined) <= max_chars:
            current = joined
        else:
            chunks.append(current)
            current = piece
    if current:
        chunks.append(current)
    return chunks


def chunk_id(source: str, index: int, text: str) -> str:
    """Deterministic id: source, position and content hash."""
    src = hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    content = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{src}-{index}-{content}"


@dataclass
class _Batch:
    ids: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    metadatas: list[dict[str, Any]] = field(default_factory=list)
    sources: set[str] = field(default_factory=set)

    def __len__(self) -> int:
        return len(self.ids)


def _batches(units: Iterable[Unit], max_chars: int, size: int, report: IngestReport) -> Iterator[_Batch]:
    """Group chunks into batches, never splitting one source's chunks over two batches."""
    batch = _Batch()
    for unit in units:
        report.units += 1
        chunks = split_text(unit.text, max_chars)
        if len(batch) and len(batch) + len(chunks) > size:
            yield batch
            batch = _Batch()
        batch.sources.add(unit.source)
        for i, chunk in enumerate(chunks):
            batch.ids.append(chunk_id(unit.source, i, chunk))
            batch.texts.append(chunk)
            batch.metadatas.append({**unit.metadata, "source": unit.source, "chunk": i, "n_chunks": len(chunks)})
        report.chunks += len(chunks)
    if len(batch):
        yield batch


# ------------------------------------------------------------------------------------ writing
class _Target:
    """Where chunks go. Subclasses adapt Chroma, LlamaIndex and LangChain vector stores."""

    #: the store computes vectors itself (LangChain stores without ``add_embeddings``)
    embeds_itself = False

    def stored_width(self) -> int | None:
        return None

    def present(self, ids: list[str]) -> set[str]:
        raise NotImplementedError

    def write(self, ids: list[str], texts: list[str], metadatas: list[dict[str, Any]], vectors: np.ndarray) -> None:
        raise NotImplementedError

    def stale(self, sources: set[str], wanted: set[str]) -> list[str] | None:
        """Stored ids of ``sources`` that are not ``wanted`` (``None``: the store cannot say)."""
        return None

    def delete(self, ids: list[str]) -> None:
        raise NotImplementedError


class _ChromaTarget(_Target):
    def __init__(self, collection: Any) -> None:
        self.collection = collection

    def stored_width(self) -> int | None:
        got = self.collection.get(limit=1, include=["embeddings"])
        embeddings = got.get("embeddings")
        if embeddings is None or len(embeddings) == 0:
            return None
        return len(embeddings[0])

    def present(self, ids: list[str]) -> set[str]:
        return set(self.collection.get(ids=ids, include=[])["ids"])

    def write(self, ids: list[str], texts: list[str], metadatas: list[dict[str, Any]], vectors: np.ndarray) -> None:
        self.collection.upsert(ids=ids, embeddings=vectors, documents=texts, metadatas=metadatas)

    def stale(self, sources: set[str], wanted: set[str]) -> list[str] | None:
        stored = self.collection.get(where={"source": {"$in": sorted(sources)}}, include=[])
        return [i for i in stored["ids"] if i not in wanted]

    def delete(self, ids: list[str]) -> None:
        self.collection.delete(ids=ids)


class _LlamaIndexTarget(_Target):
    """Any LlamaIndex vector store: nodes carry our vectors; ``get_nodes``/``delete_nodes`` with a
    metadata filter find stored and stale chunks where the store implements them."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.can_get = True

    def present(self, ids: list[str]) -> set[str]:
        if not self.can_get:
            return set()
        try:
            return {n.node_id for n in self.store.get_nodes(node_ids=ids)}
        except NotImplementedError:
            self.can_get = False
            logger.warning("%s cannot look nodes up: reruns re-embed everything", type(self.store).__name__)
            return set()

    def write(self, ids: list[str], texts: list[str], metadatas: list[dict[str, Any]], vectors: np.ndarray) -> None:
        from llama_index.core.schema import TextNode

        nodes = [
            TextNode(id_=cid, text=text, metadata=meta, embedding=vec)
            for cid, text, meta, vec in zip(ids, texts, metadatas, vectors.tolist(), strict=True)
        ]
        self.store.add(nodes)

    def stale(self, sources: set[str], wanted: set[str]) -> list[str] | None:
        if not self.can_get:
            return None
        from llama_index.core.vector_stores.types import FilterCondition, MetadataFilter, MetadataFilters

        filters = MetadataFilters(
            filters=[MetadataFilter(key="source", value=src) for src in sorted(sources)],
            condition=FilterCondition.OR,
        )
        try:
            stored = self.store.get_nodes(node_ids=None, filters=filters)
        except NotImplementedError:
            return None
        return [n.node_id for n in stored if n.node_id not in wanted]

    def delete(self, ids: list[str]) -> None:
        self.store.delete_nodes(node_ids=ids)


class _LangChainTarget(_Target):
    """Any LangChain ``VectorStore``: ``get_by_ids`` finds stored chunks; vectors go in through
    ``add_embeddings`` where the store has it, else the store embeds the texts itself with its
    own embeddings object (give it a ``QwenSGLangEmbeddings``). The ``VectorStore`` interface has
    no metadata query, so a changed file's old chunks cannot be found and stay (use Chroma
    directly, or a LlamaIndex store, to have them replaced)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.embeds_itself = not hasattr(store, "add_embeddings")

    def present(self, ids: list[str]) -> set[str]:
        return {d.id for d in self.store.get_by_ids(ids) if d.id is not None}

    def write(self, ids: list[str], texts: list[str], metadatas: list[dict[str, Any]], vectors: np.ndarray) -> None:
        if self.embeds_itself:
            self.store.add_texts(texts, metadatas=metadatas, ids=ids)
        else:
            self.store.add_embeddings(list(zip(texts, vectors.tolist(), strict=True)), metadatas=metadatas, ids=ids)


def _target(store: Any) -> _Target:
    if hasattr(store, "get_nodes") and hasattr(store, "delete_nodes") and hasattr(store, "add"):
        return _LlamaIndexTarget(store)
    if hasattr(store, "get_by_ids") and hasattr(store, "add_texts"):
        return _LangChainTarget(store)
    if hasattr(store, "upsert") and hasattr(store, "get"):
        return _ChromaTarget(store)
    raise ConfigurationError(
        f"store must be a Chroma collection, a LangChain VectorStore or a LlamaIndex vector store, "
        f"not {type(store).__name__}"
    )


def _open_collection(persist_dir: str | Path, name: str) -> Any:
    import chromadb

    try:
        client = chromadb.PersistentClient(path=str(persist_dir))
        return client.get_or_create_collection(name, metadata={"hnsw:space": "cosine"})
    except Exception as exc:  # chromadb raises its own types for bad names, paths, versions
        raise ConfigurationError(f"could not open Chroma collection {name!r} in {persist_dir}: {exc}") from None


def ingest(
    paths: Sequence[str | Path],
    *,
    client: EmbeddingClient,
    collection: Any = None,
    store: Any = None,
    persist_dir: str | Path | None = None,
    collection_name: str | None = None,
    max_chars: int = 2000,
    batch_size: int = 256,
    on_error: OnError = "report",
    show_progress: bool = True,
) -> IngestReport:
    """Ingest ``paths`` into a vector store, streaming, resumable and idempotent.

    The destination is one of: ``collection`` (a Chroma collection), ``persist_dir`` +
    ``collection_name`` (an embedded Chroma, opened or created), or ``store`` (a Chroma
    collection, any LangChain ``VectorStore`` or any LlamaIndex vector store). Chroma and
    LlamaIndex stores get the client's vectors and have a changed file's old chunks replaced.
    LangChain stores get the vectors through ``add_embeddings`` where they have it and embed the
    texts with their own embeddings object otherwise; the ``VectorStore`` interface has no
    metadata query, so their changed files' old chunks are not removed (a warning says so).
    """
    if store is None and collection is None:
        if persist_dir is None or not collection_name:
            raise ConfigurationError("give a store, a Chroma collection, or persist_dir and collection_name")
        collection = _open_collection(persist_dir, collection_name)
    target = _target(store if store is not None else collection)
    if batch_size < 1:
        raise ConfigurationError("batch_size must be positive")
    report = IngestReport()
    started = time.monotonic()
    width = target.stored_width()
    tokens_before = client.prompt_tokens
    progress: Any = None
    if show_progress:
        from tqdm.auto import tqdm  # type: ignore[import-untyped,unused-ignore]

        progress = tqdm(unit="chunk", desc="Ingesting", dynamic_ncols=True)

    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qwen-sglang-ingest-writer")
    pending: Future[None] | None = None
    warned: list[bool] = []

    def write(batch: _Batch, keep: list[int], vectors: np.ndarray) -> None:
        if keep:
            target.write(
                [batch.ids[i] for i in keep],
                [batch.texts[i] for i in keep],
                [batch.metadatas[i] for i in keep],
                vectors,
            )
        # Only now remove what the sources no longer produce (a changed file's old chunks).
        stale = target.stale(batch.sources, set(batch.ids))
        if stale is None and not warned:
            warned.append(True)
            logger.warning(
                "%s cannot list chunks by source: old chunks of changed files are not removed",
                type(target).__name__.strip("_"),
            )
        if stale:
            target.delete(stale)
            report.deleted += len(stale)

    try:
        for batch in _batches(iter_units(paths, report.problems, on_error), max_chars, batch_size, report):
            present = target.present(batch.ids)
            keep = [i for i, cid in enumerate(batch.ids) if cid not in present]
            report.skipped += len(batch) - len(keep)
            vectors = np.empty((0, 0), dtype=np.float32)
            if keep and target.embeds_itself:
                report.embedded += len(keep)  # the store's own embeddings object embeds them
            elif keep:
                vectors = client.embed([batch.texts[i] for i in keep], kind="document").vectors
                if width is None:
                    width = vectors.shape[1]
                elif vectors.shape[1] != width:
                    raise ConfigurationError(
                        f"the collection holds {width}-d vectors but this run produces {vectors.shape[1]}-d "
                        "ones (another model or dimensions): use another collection"
                    )
                report.embedded += len(keep)
            if pending is not None:
                pending.result()  # at most one write in flight, errors surface here
            pending = writer.submit(write, batch, keep, vectors)
            if progress is not None:
                progress.update(len(batch))
                elapsed = time.monotonic() - started
                progress.set_postfix(
                    docs_s=f"{report.units / elapsed:.0f}",
                    tokens_s=f"{(client.prompt_tokens - tokens_before) / elapsed:.0f}",
                )
        if pending is not None:
            pending.result()
    finally:
        writer.shutdown(wait=True)
        if progress is not None:
            progress.close()
    report.prompt_tokens = client.prompt_tokens - tokens_before
    report.seconds = time.monotonic() - started
    return report
