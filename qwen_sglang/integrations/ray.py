"""Bulk ingestion past one client machine, on Ray Data (needs the ``ray`` extra).

The recipe of ``docs/scale-out.md``: Ray tasks read and split the files (the package's own
reader and splitter), a pool of Ray actors, each holding one `qwen_sglang.EmbeddingClient`
built once, embeds the chunks through a server or router and upserts them into a vector-store
server by id. The ids are those ``qwen-sglang ingest`` writes (`qwen_sglang.ingest.chunk_id`
of the same source, position, text and metadata), with the same stored documents and
metadata, so:

- a rerun after a crash (the driver killed, a node lost) embeds only the chunks the store lacks
  and adds nothing twice;
- this recipe and ``qwen-sglang ingest`` can fill one collection in turns: each finds what the
  other stored.

What it does not do is what needs the whole of a file in one place: it never deletes. The
chunks an edited file no longer produces, and those of deleted files, stay until
``qwen-sglang ingest`` (``--prune``) runs over those files (which embeds nothing that is
already stored).

Example:
    ```python
    import ray
    from qwen_sglang import QwenSGLangSettings
    from qwen_sglang.integrations.ray import ChromaHttpCollection, ray_ingest

    ray.init()  # or ray.init(address="auto") on a cluster node
    report = ray_ingest(
        ["/shared/corpus"],
        ChromaHttpCollection(host="10.0.0.5", port=8000, name="corpus"),
        settings=QwenSGLangSettings(base_url="http://10.0.0.2:30000/v1"),  # the router
        actors=8,
    )
    print(report.summary())
    ```

The pieces (`list_files`, `file_chunks`, `EmbedAndStore`) can be composed into other
pipelines; only `ray_ingest` uses Ray itself. The package must be installed on every node,
and the files must be at the same path on every node (the ids are made of the resolved path).
"""

from __future__ import annotations

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
    JSONL_SUFFIXES,
    TEXT_SUFFIXES,
    IngestError,
    IngestReport,
    OnError,
    Problem,
    chunk_id,
    iter_chunks,
    iter_units,
)
from qwen_sglang.settings import QwenSGLangSettings

__all__ = [
    "ChromaHttpCollection",
    "CollectionFactory",
    "EmbedAndStore",
    "file_chunks",
    "list_files",
    "ray_ingest",
]

#: A picklable, zero-argument callable that opens the destination collection (called once in
#: each actor): anything with Chroma's ``get(ids=, include=[])`` and ``upsert(ids=,
#: embeddings=, documents=, metadatas=)``.
CollectionFactory = Callable[[], Any]
#: Full request waves per actor call: the client keeps ``max_concurrency`` requests in flight
#: across a call, so a call of several waves leaves the server idle only at its end.
WAVES_PER_CALL = 4
_SUFFIXES = TEXT_SUFFIXES | JSONL_SUFFIXES


@dataclass(frozen=True)
class ChromaHttpCollection:
    """A Chroma server's collection, opened (created if missing) in each actor through
    ``chromadb.HttpClient``, with the cosine space ``qwen-sglang ingest`` gives a new collection.

    No credentials travel with it (it is pickled to every actor): a server that needs them is
    opened by a factory of your own that reads them from the worker's environment.
    """

    host: str
    port: int
    name: str
    ssl: bool = False

    def __call__(self) -> Any:
        import chromadb

        client = chromadb.HttpClient(host=self.host, port=self.port, ssl=self.ssl)
        return client.get_or_create_collection(self.name, metadata={"hnsw:space": "cosine"})


# ============================================================================================
# Reading (Ray tasks)
# ============================================================================================
def list_files(paths: Sequence[str | Path]) -> tuple[list[str], list[Problem]]:
    """The files ``qwen-sglang ingest`` would read under ``paths``, each once, and what could not
    be listed.

    Given files are kept whatever their type (reading reports an unsupported one, as the CLI
    does); directories are walked in name order, directory symlinks followed (each directory
    once), keeping ``.txt``, ``.md``, ``.markdown``, ``.rst``, ``.jsonl`` and ``.ndjson`` files.
    """
    files: list[str] = []
    problems: list[Problem] = []
    keys: set[str] = set()

    def add(path: Path) -> None:
        key = os.path.realpath(path)
        if key not in keys:
            keys.add(key)
            files.append(str(path))

    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            _walk(path, add, problems)
        else:
            add(path)  # missing or unreadable: reading reports it
    return files, problems


def _walk(root: Path, add: Callable[[Path], None], problems: list[Problem]) -> None:
    stack, visited = [root], set[tuple[int, int]]()
    while stack:
        directory = stack.pop()
        try:
            info = directory.stat()
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            problems.append(Problem(str(directory), None, f"cannot list directory: {exc.strerror or exc}: skipped"))
            continue
        if (info.st_dev, info.st_ino) in visited:
            continue  # reached twice through symlinks (or a symlink loop): listed once
        visited.add((info.st_dev, info.st_ino))
        subdirs = []
        for entry in entries:
            path = Path(entry.path)
            if path.is_dir():
                subdirs.append(path)
            elif path.suffix.lower() in _SUFFIXES:
                add(path)
        stack += reversed(subdirs)


def _row(kind: str, **fields: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"kind": kind, "id": "", "text": "", "source": "", "chunk": -1, "metadata": "{}"}
    row.update(fields)
    return row


def file_chunks(
    row: dict[str, Any], *, max_chars: int = 2000, encoding: str = "utf-8", on_error: OnError = "report"
) -> Iterator[dict[str, Any]]:
    """``flat_map`` function: one ``{"path"}`` row in, the file's rows out.

    One ``"chunk"`` row per chunk, with the id, text and metadata ``qwen-sglang ingest`` writes
    for it (``id``, ``text``, ``source``: the file's resolved path, ``chunk``: its position in
    its document, ``metadata``: the document's own metadata as JSON); a ``"problem"`` row per
    input problem (``text`` is the message, ``metadata`` its ``[path, line, message]``); then
    one ``"file"`` row (``chunk`` is its number of documents).
    """
    path = str(row["path"])
    source = Path(os.path.realpath(path)).as_posix()
    problems: list[Problem] = []
    units = 0
    for unit in iter_units([path], problems, on_error, encoding):
        units += 1
        own = json.dumps(unit.metadata, ensure_ascii=False)
        for index, text in enumerate(iter_chunks([unit.text], max_chars)):
            cid = chunk_id(unit.source, index, text, unit.metadata)
            yield _row("chunk", id=cid, text=text, source=source, chunk=index, metadata=own)
    for p in problems:
        yield _row("problem", text=str(p), source=source, metadata=json.dumps([p.path, p.line, p.message]))
    yield _row("file", source=source, chunk=units)


# ============================================================================================
# Embedding and writing (Ray actors)
# ============================================================================================
class EmbedAndStore:
    """``map_batches`` callable class: embeds a batch's chunks the store lacks and upserts them.

    Each actor builds one `qwen_sglang.EmbeddingClient` from ``settings`` (pickled without
    secrets: the API key is read from ``QWEN_SGLANG_API_KEY`` in the worker's environment) and
    opens the collection once. A call looks its chunk ids up, embeds the missing ones with
    ``max_concurrency`` requests of ``batch_size`` texts in flight, upserts them with the
    metadata ``qwen-sglang ingest`` writes (``source``, ``chunk`` and the document's own), and
    returns one row of counts (``chunks``, ``embedded``, ``skipped``, ``files``, ``units``,
    ``tokens``, ``problems`` as a JSON list of ``[path, line, message]``).
    """

    def __init__(self, settings: QwenSGLangSettings, collection: CollectionFactory) -> None:
        self.client = EmbeddingClient(settings)
        self.collection = collection()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ids: list[str] = []
        texts: list[str] = []
        metadatas: list[dict[str, Any]] = []
        seen: set[str] = set()
        chunks = files = units = 0
        problems: list[Any] = []
        for kind, cid, text, source, index, own in zip(
            batch["kind"], batch["id"], batch["text"], batch["source"], batch["chunk"], batch["metadata"], strict=True
        ):
            if kind == "file":
                files, units = files + 1, units + int(index)
            elif kind == "problem":
                problems.append(json.loads(own))
            else:
                chunks += 1
                if cid not in seen:  # identical records of one file: one upsert per id
                    seen.add(str(cid))
                    ids.append(str(cid))
                    texts.append(str(text))
                    metadatas.append({**json.loads(own), "source": str(source), "chunk": int(index)})
        embedded, tokens = self._store(ids, texts, metadatas)
        counts = {"chunks": chunks, "embedded": embedded, "skipped": chunks - embedded, "files": files}
        counts |= {"units": units, "tokens": tokens}
        out = {name: np.array([value], dtype=np.int64) for name, value in counts.items()}
        return out | {"problems": np.array([json.dumps(problems, ensure_ascii=False)])}

    def _store(self, ids: list[str], texts: list[str], metadatas: list[dict[str, Any]]) -> tuple[int, int]:
        """Embed and upsert the chunks not stored yet: (how many, prompt tokens)."""
        if not ids:
            return 0, 0
        present = set(self.collection.get(ids=ids, include=[])["ids"])
        keep = [i for i, cid in enumerate(ids) if cid not in present]
        if not keep:
            return 0, 0
        before = self.client.prompt_tokens
        vectors = self.client.embed([texts[i] for i in keep], kind="document").vectors
        self.collection.upsert(
            ids=[ids[i] for i in keep],
            embeddings=vectors,
            documents=[texts[i] for i in keep],
            metadatas=[metadatas[i] for i in keep],
        )
        return len(keep), self.client.prompt_tokens - before


# ============================================================================================
# The driver
# ============================================================================================
def _worker_settings(settings: QwenSGLangSettings, model: str | None) -> QwenSGLangSettings:
    """``settings`` with the URL and the model the driver found made explicit: every actor talks
    to that server and refuses another model (one collection, one model)."""
    given = settings.model_fields_set - {"api_key", "url_credentials", "server"}
    fields = {name: getattr(settings, name) for name in given}
    fields |= {"base_url": settings.base_url} | ({"model": model} if model else {})
    return QwenSGLangSettings(**fields)


def ray_ingest(
    paths: Sequence[str | Path],
    collection: CollectionFactory,
    *,
    settings: QwenSGLangSettings | None = None,
    actors: int = 2,
    actor_cpus: float = 1.0,
    rows_per_call: int | None = None,
    max_chars: int = 2000,
    encoding: str = "utf-8",
    on_error: OnError = "report",
) -> IngestReport:
    """Ingest ``paths`` into ``collection`` on the Ray cluster this process is connected to.

    Reading and splitting run as Ray tasks (one per file); ``actors`` actors embed and upsert.
    In flight at the server: ``actors x max_concurrency`` requests of ``batch_size`` texts (the
    settings given, else what the server advertises, else 8 x 32); size it to about 8 requests
    per data-parallel rank behind the URL (docs/scale-out.md). Each actor call takes
    ``rows_per_call`` chunks (default: 4 request waves, ``4 x batch_size x max_concurrency``).

    Args:
        paths: files and directories, as for ``qwen-sglang ingest`` (at the same path on
            every node).
        collection: opens the destination in each actor (`ChromaHttpCollection`, or your own).
        settings: the client's settings (``base_url``: the server or router). The driver
            checks the server first; the actors get the URL and the served model explicitly.
        actors: embedding actors.
        actor_cpus: CPUs each actor reserves (it mostly waits on the server: fractions work).
        rows_per_call: chunks per actor call.
        max_chars: largest chunk, in characters (keep the CLI's ``--chunk-chars`` for the same ids).
        encoding: as ``qwen-sglang ingest --encoding``.
        on_error: ``"report"`` bad inputs in the report's ``problems``, or ``"fail"`` the run.

    Returns:
        An `qwen_sglang.ingest.IngestReport` (``deleted`` and ``pruned`` stay 0: this recipe
        never deletes).
    """
    if actors < 1 or actor_cpus <= 0 or (rows_per_call is not None and rows_per_call < 1):
        raise ConfigurationError("actors, actor_cpus and rows_per_call must be positive")
    list(iter_units([], [], on_error, encoding))  # a bad encoding or on_error fails here, not in a task
    list(iter_chunks([], max_chars))  # and so does a bad max_chars
    settings = settings if settings is not None else QwenSGLangSettings()
    report, started = IngestReport(), time.monotonic()
    try:
        with EmbeddingClient(settings) as probe:
            probe.discover()  # a wrong URL, key or model fails here, before any cluster work
            shape, model = probe.request_shape, probe.model
        files, report.problems = list_files(paths)
        if on_error == "fail" and report.problems:
            raise IngestError(str(report.problems[0]))
        if files:
            _run(files, collection, _worker_settings(settings, model), report, actors=actors, actor_cpus=actor_cpus,
                 rows=rows_per_call or WAVES_PER_CALL * shape["batch_size"] * shape["max_concurrency"],
                 chunk_options={"max_chars": max_chars, "encoding": encoding, "on_error": on_error})
        report.complete = True
    finally:
        report.seconds = time.monotonic() - started
    return report


def _run(
    files: list[str],
    collection: CollectionFactory,
    settings: QwenSGLangSettings,
    report: IngestReport,
    *,
    actors: int,
    actor_cpus: float,
    rows: int,
    chunk_options: dict[str, Any],
) -> None:
    chunks = ray.data.from_items([{"path": f} for f in files]).flat_map(file_chunks, fn_kwargs=chunk_options)
    counts = chunks.map_batches(
        EmbedAndStore,
        fn_constructor_kwargs={"settings": settings, "collection": collection},
        batch_size=rows,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=actor_cpus,
    )
    for batch in counts.iter_batches(batch_size=None, batch_format="numpy"):
        report.chunks += int(batch["chunks"].sum())
        report.embedded += int(batch["embedded"].sum())
        report.skipped += int(batch["skipped"].sum())
        report.files += int(batch["files"].sum())
        report.units += int(batch["units"].sum())
        report.prompt_tokens += int(batch["tokens"].sum())
        for found in batch["problems"]:
            report.problems += [Problem(path, line, message) for path, line, message in json.loads(found)]
