"""Bulk embedding past one client machine, on Ray Data (needs the ``ray`` extra).

The recipe of ``docs/scaling.md``: Ray tasks read and split the inputs with the package's own
reader and splitter (`qwen_sglang.ingest.iter_units`, `qwen_sglang.ingest.iter_chunks`); a
``map_batches`` pool of actors, each holding one `qwen_sglang.EmbeddingClient` built once from
the settings, embeds the chunks through a server or a router and upserts them into a
vector-store server. Every chunk gets the id ``qwen-sglang ingest`` gives it
(`qwen_sglang.ingest.chunk_id` of the same source, position, text and metadata, and of the model
that embeds it), with the same document and metadata, and an actor embeds only the ids the store
lacks, so:

- a rerun after a crash (a failed batch, the driver killed, a node lost) embeds only what is
  missing and adds nothing twice;
- this recipe and ``qwen-sglang ingest`` can fill one collection in turns: each finds what the
  other stored.

It never deletes: the chunks an edited file no longer produces, and those of deleted files, stay
until ``qwen-sglang ingest`` (with ``--prune``) runs over those files, which embeds nothing
that is already stored.

Example:
    ```python
    import ray
    from qwen_sglang import QwenSGLangSettings
    from qwen_sglang.integrations.ray import ChromaHttpCollection, ray_ingest

    ray.init()  # ray.init(address="auto") on a cluster node
    report = ray_ingest(
        ["/shared/corpus/part-0", "/shared/corpus/part-1"],  # one reading task per path
        ChromaHttpCollection(host="10.0.0.5", port=8000, name="corpus"),
        settings=QwenSGLangSettings(base_url="http://10.0.0.2:30000/v1"),  # the router
        actors=8,
    )
    print(report.summary())
    ```

The package must be installed on every node and the inputs readable at the same path on each
(the ids are made of the resolved path). `chunk_rows` and `EmbedAndStore` compose into other
pipelines; only `ray_ingest` calls Ray.
"""

from __future__ import annotations

import gc
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray.data

from qwen_sglang.client import EmbeddingClient
from qwen_sglang.errors import ConfigurationError
from qwen_sglang.ingest import (
    ChromaCollection,
    ChromaTarget,
    IngestReport,
    Problem,
    check_encodings,
    chunk_id,
    iter_chunks,
    iter_units,
    split_text,
    with_model,
)
from qwen_sglang.ingest.pipeline import embedding_model
from qwen_sglang.integrations.chroma import chromadb
from qwen_sglang.settings import QwenSGLangSettings

__all__ = ["ChromaHttpCollection", "CollectionFactory", "EmbedAndStore", "chunk_rows", "ray_ingest"]

#: A picklable, zero-argument callable that opens the destination (called once in each actor):
#: a Chroma collection, written through `qwen_sglang.ingest.ChromaTarget` as ``ingest`` writes.
CollectionFactory = Callable[[], ChromaCollection]
#: Request waves per actor call: the client keeps ``max_concurrency`` requests in flight within
#: a call, so a call of several waves leaves the server idle for this actor only at its end.
WAVES_PER_CALL = 4


@dataclass(frozen=True)
class ChromaHttpCollection:
    """A Chroma server's collection, opened (created if missing, with the cosine space
    ``qwen-sglang ingest`` gives a new collection) through ``chromadb.HttpClient`` in each actor.

    No credential travels with it (it is pickled to every actor): for a server that needs them,
    pass a factory of your own that reads them from the worker's environment.
    """

    host: str
    port: int
    name: str
    ssl: bool = False

    def __call__(self) -> Any:
        client = chromadb().HttpClient(host=self.host, port=self.port, ssl=self.ssl)
        return client.get_or_create_collection(self.name, metadata={"hnsw:space": "cosine"})


def _row(kind: str, **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"kind": kind, "id": "", "text": "", "source": "", "chunk": 0, "metadata": "{}"}
    return row | fields


def chunk_rows(row: dict[str, Any], *, max_chars: int = 2000, encoding: str = "utf-8") -> Iterator[dict[str, Any]]:
    """``flat_map`` function: one ``{"path"}`` row (a file or a directory) in, its rows out.

    A ``"chunk"`` row per chunk with what ``qwen-sglang ingest`` stores for it: ``id``
    (`qwen_sglang.ingest.chunk_id` without the model: `EmbedAndStore` stores the chunk under
    ``with_model(id, its model)``), ``text``, ``source`` (the file's resolved path), ``chunk``
    (its position in its document) and ``metadata`` (the document's own, as JSON). A
    ``"problem"`` row per input that could not be read (``metadata``: ``[path, line,
    message]``), then one ``"files"`` row (``chunk``: the files that gave documents).
    """
    problems: list[Problem] = []
    files: set[str] = set()
    for unit in iter_units([str(row["path"])], problems, "report", encoding):
        files.add(unit.path)
        own = json.dumps(unit.metadata, ensure_ascii=False)
        for index, text in enumerate(iter_chunks([unit.text], max_chars)):
            cid = chunk_id(unit.source, index, text, unit.metadata)
            yield _row("chunk", id=cid, text=text, source=unit.path, chunk=index, metadata=own)
    for p in problems:
        yield _row("problem", text=str(p), metadata=json.dumps([p.path, p.line, p.message], ensure_ascii=False))
    yield _row("files", chunk=len(files))


class EmbedAndStore:
    """``map_batches`` callable class: embeds the chunks of a batch the store lacks, upserts them.

    Each actor builds one `qwen_sglang.EmbeddingClient` from ``settings`` (pickled without
    secrets: the worker reads ``QWEN_SGLANG_API_KEY`` from its own environment; ``default_headers``,
    whose values may be keys, do not travel either), asks the server which model it serves (the
    ids carry it) and opens the collection once. A call looks its chunk ids up, embeds the missing ones
    (``max_concurrency`` requests of ``batch_size`` texts in flight), upserts them with the
    metadata ``qwen-sglang ingest`` writes (``source``, ``chunk`` and the document's own), and
    returns one row of counts: ``chunks``, ``embedded``, ``skipped``, ``units`` (documents
    begun), ``files``, ``tokens``, and ``problems`` (a JSON list of ``[path, line, message]``).
    """

    def __init__(self, settings: QwenSGLangSettings, collection: CollectionFactory) -> None:
        self.client = EmbeddingClient(settings)
        self.model = embedding_model(self.client)  # the ids carry it, as qwen-sglang ingest's do
        self.target = ChromaTarget(collection())

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        chunks: dict[str, tuple[str, dict[str, Any]]] = {}  # id -> (text, metadata): one upsert per id
        rows = units = files = 0
        problems: list[Any] = []
        for kind, cid, text, source, index, own in zip(
            batch["kind"], batch["id"], batch["text"], batch["source"], batch["chunk"], batch["metadata"], strict=True
        ):
            if kind == "files":
                files += int(index)
            elif kind == "problem":
                problems.append(json.loads(str(own)))
            else:
                rows += 1
                units += int(index) == 0
                chunks[with_model(str(cid), self.model)] = (
                    str(text),
                    {**json.loads(str(own)), "source": str(source), "chunk": int(index)},
                )
        embedded, tokens = self._store(chunks)
        counts = {"chunks": rows, "embedded": embedded, "skipped": rows - embedded, "units": units}
        counts |= {"files": files, "tokens": tokens}
        out = {name: np.array([value], dtype=np.int64) for name, value in counts.items()}
        return out | {"problems": np.array([json.dumps(problems, ensure_ascii=False)])}

    def _store(self, chunks: dict[str, tuple[str, dict[str, Any]]]) -> tuple[int, int]:
        """Embed and upsert the chunks not stored yet: (how many, prompt tokens)."""
        if not chunks:
            return 0, 0
        present = self.target.present(list(chunks))
        ids = [cid for cid in chunks if cid not in present]
        if not ids:
            return 0, 0
        before = self.client.prompt_tokens
        texts = [chunks[cid][0] for cid in ids]
        vectors = self.client.embed(texts, kind="document").vectors
        self.target.write(ids, texts, [chunks[cid][1] for cid in ids], vectors)
        return len(ids), self.client.prompt_tokens - before


def ray_ingest(
    paths: Sequence[str | Path],
    collection: CollectionFactory,
    *,
    settings: QwenSGLangSettings | None = None,
    actors: int = 2,
    actor_cpus: float = 0.5,
    chunks_per_call: int | None = None,
    max_chars: int = 2000,
    encoding: str = "utf-8",
) -> IngestReport:
    """Embed ``paths`` into ``collection`` on the Ray cluster this process is connected to.

    Each path (a file or a directory, read recursively as ``qwen-sglang ingest`` reads it) is
    read and split by one Ray task: give a large corpus as several paths (its shards) to read
    them in parallel. ``actors`` actors embed and upsert, each with ``max_concurrency`` requests
    of ``batch_size`` texts in flight (the settings given, else what the server advertises):
    4-8 requests per GPU behind the URL kept two GPUs busy (docs/scaling.md).

    Args:
        paths: files and directories, at the same path on every node (relative paths are
            relative to this process's working directory).
        collection: opens the destination in each actor (`ChromaHttpCollection`, or your own).
        settings: the client's settings; ``base_url`` is the server or the router. The driver
            asks the server first (a wrong URL, key or model fails here, before any Ray work),
            and the actors are pinned to the model it serves.
        actors: embedding actors.
        actor_cpus: CPUs each actor reserves (it mostly waits on the server).
        chunks_per_call: chunks per actor call (default: four request waves,
            ``4 x batch_size x max_concurrency``).
        max_chars: largest chunk, in characters (as ``qwen-sglang ingest --chunk-chars``: the
            same value gives the same ids).
        encoding: as ``qwen-sglang ingest --encoding``.

    Returns:
        An `qwen_sglang.ingest.IngestReport`; inputs that could not be read are in its
        ``problems``, ``deleted`` and ``pruned`` stay 0 (this recipe never deletes).

    Raises:
        ConfigurationError: bad arguments, before anything is read.
    """
    if actors < 1 or actor_cpus <= 0 or (chunks_per_call is not None and chunks_per_call < 1):
        raise ConfigurationError("actors, actor_cpus and chunks_per_call must be positive")
    split_text("", max_chars)  # a bad max_chars or encoding fails here, not in a Ray task
    check_encodings(encoding)
    settings = settings if settings is not None else QwenSGLangSettings()
    report, started = IngestReport(), time.monotonic()
    try:
        with EmbeddingClient(settings) as probe:
            probe.discover()
            shape, model = probe.request_shape, probe.model
        pinned = settings.model_copy(update={"model": model}) if model and settings.model is None else settings
        rows = chunks_per_call or WAVES_PER_CALL * shape["batch_size"] * shape["max_concurrency"]
        failure = _run(paths, collection, pinned, report, actors, actor_cpus, rows, max_chars, encoding)
        if failure is not None:
            raise failure
        report.complete = True
    finally:
        report.seconds = time.monotonic() - started
    return report


def _run(
    paths: Sequence[str | Path],
    collection: CollectionFactory,
    settings: QwenSGLangSettings,
    report: IngestReport,
    actors: int,
    actor_cpus: float,
    rows: int,
    max_chars: int,
    encoding: str,
) -> Exception | None:
    """Run the pipeline into ``report``; what stopped it, detached from the pipeline.

    A failed run's traceback holds the pipeline's frames, and through them its actor pool: the
    pool would keep its CPUs (or GPUs) as long as the exception is referenced, and a rerun on a
    small cluster would wait for them forever. So the exception is returned without its
    traceback (its message carries the worker's), and the pool is collected before it is raised.
    """
    counts: ray.data.Dataset | None = None
    try:
        counts = (
            ray.data.from_items([{"path": os.path.abspath(p)} for p in paths])  # workers have their own cwd
            .flat_map(chunk_rows, fn_kwargs={"max_chars": max_chars, "encoding": encoding})
            .map_batches(
                EmbedAndStore,
                fn_constructor_kwargs={"settings": settings, "collection": collection},
                batch_size=rows,
                batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=actors),
                num_cpus=actor_cpus,
            )
        )
        for batch in counts.iter_batches(batch_size=None, batch_format="numpy"):
            _add(report, batch)
        return None
    except Exception as exc:
        failure = exc.with_traceback(None)
        failure.__context__ = None
    counts = None
    gc.collect()
    return failure


def _add(report: IngestReport, batch: dict[str, np.ndarray]) -> None:
    report.chunks += int(batch["chunks"].sum())
    report.embedded += int(batch["embedded"].sum())
    report.skipped += int(batch["skipped"].sum())
    report.units += int(batch["units"].sum())
    report.files += int(batch["files"].sum())
    report.prompt_tokens += int(batch["tokens"].sum())
    for found in batch["problems"]:
        report.problems += [Problem(path, line, message) for path, line, message in json.loads(str(found))]
