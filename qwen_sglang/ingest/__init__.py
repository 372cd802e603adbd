"""Bulk population of a vector store: streaming, bounded memory, resumable, idempotent.

``qwen-sglang ingest PATH... --collection NAME --persist-dir DIR`` (or `ingest`) reads text
files (``.txt``, ``.md``, ``.markdown``, ``.rst``) and JSON-lines files (one ``{"id", "text",
"metadata"}`` object a line), directories recursively, splits each document into chunks as it
streams through it, embeds them with the shared client (``max_concurrency`` requests in flight)
and writes them to the store while the next batch is being embedded.

Every chunk has a deterministic id made of its source (the file, or the file and record id), its
position, a hash of its text and metadata, and one of the model that embeds it. A batch first asks
the store which ids it already holds, so a rerun after a crash or Ctrl-C embeds only what is
missing. When a file has been read to its end, the stored chunks of that file that this run did
not produce (an edited, emptied or undecodable file, a removed record, another model's vectors)
are deleted, *after* the new ones are written: after a run, what the store holds for each file
it read is what that file produces now. Files that are not read (no longer on disk, not given)
keep their chunks unless ``prune=True``.

Bad inputs are reported as :class:`Problem` (file and line) and skipped (``on_error="report"``)
or stop the run (``"fail"``): unreadable, undecodable or empty files, malformed JSON lines,
records without text, duplicate record ids, metadata a store would reject or silently change.

Where each part lives: `sources` (files, decoding in `decoding`, JSON-lines records in
`records`), `splitting` (chunks), `ids` (chunk ids), `targets` (the `StoreTarget` protocol and
the Chroma target), `pipeline` (batching, writing, progress, `ingest`).
"""

from __future__ import annotations

from qwen_sglang.ingest.decoding import check_encodings
from qwen_sglang.ingest.ids import chunk_id, with_model
from qwen_sglang.ingest.pipeline import IngestReport, ingest
from qwen_sglang.ingest.sources import IngestError, Problem, Unit, iter_units
from qwen_sglang.ingest.splitting import iter_chunks, split_text
from qwen_sglang.ingest.targets import PAGE, ChromaCollection, ChromaTarget, StoreTarget

__all__ = [
    "PAGE",
    "ChromaCollection",
    "ChromaTarget",
    "IngestError",
    "IngestReport",
    "Problem",
    "StoreTarget",
    "Unit",
    "check_encodings",
    "chunk_id",
    "ingest",
    "iter_chunks",
    "iter_units",
    "split_text",
    "with_model",
]
