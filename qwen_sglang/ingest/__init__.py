"""Bulk population of a vector store: streaming, bounded memory, resumable, idempotent.

``qwen-sglang ingest PATH... --collection NAME --persist-dir DIR`` (or `ingest`) reads text
files (``.txt``, ``.md``, ``.markdown``, ``.rst``) and JSON-lines files (one ``{"id", "text",
"metadata"}`` object a line), directories recursively, splits each document into chunks as it
streams through it, embeds them with the shared client (``max_concurrency`` requests in flight)
and writes them to the store while the next batch is being embedded.

Every chunk has a deterministic id made of its source (the file, or the file and record id), its
position and a hash of its text and metadata. A batch first asks the store which ids it already
holds, so a rerun after a crash or Ctrl-C embeds only what is missing. When a file has been read
to its end, the stored chunks of that file that this run did not produce (an edited, emptied or
undecodable file, a removed record) are deleted, *after* the new ones are written: after a run,
what the store holds for each file it read is what that file produces now. Files that are not
read (no longer on disk, not given) keep their chunks unless ``prune=True``.

Bad inputs are reported as :class:`Problem` (file and line) and skipped (``on_error="report"``)
or stop the run (``"fail"``): unreadable, undecodable or empty files, malformed JSON lines,
records without text, duplicate record ids, metadata a store would reject or silently change.
"""

from __future__ import annotations

import codecs
import errno
import hashlib
import json
import logging
import math
import os
import re
import stat
import threading
import time
import warnings
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np

from qwen_sglang._progress import progress_bar
from qwen_sglang.client import EmbeddingClient
from qwen_sglang.errors import ConfigurationError, QwenSGLangError

__all__ = [
    "IngestError",
    "IngestReport",
    "Problem",
    "Unit",
    "chunk_id",
    "ingest",
    "iter_chunks",
    "iter_units",
    "split_text",
]

logger = logging.getLogger("qwen_sglang.ingest")

TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".rst"}
JSONL_SUFFIXES = {".jsonl", ".ndjson"}
#: Metadata keys the ingester sets on every chunk (a record's own metadata may not use them).
RESERVED_KEYS = ("source", "chunk", "record_id")
#: Bytes read at a time, and the longest JSON line accepted (a longer one is reported, skipped).
READ_BYTES = 1 << 20
MAX_LINE_BYTES = 1 << 24
#: A whitespace run longer than this separates paragraphs (keeps the splitter's memory bounded).
MAX_SPACE_RUN = 1 << 16
OnError = Literal["report", "fail"]


class IngestError(QwenSGLangError):
    """A bad input file stopped an ``on_error="fail"`` run."""


@dataclass
class Problem:
    """An input that could not be ingested as it is: where, and what happened to it."""

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
# Finding the files
# ============================================================================================
@dataclass
class _File:
    path: Path  # as reached (what is opened)
    key: str  # resolved POSIX path: the ``source`` of its chunks
    display: str  # printable (a non-UTF-8 name shown with escapes)
    size: int
    jsonl: bool


@dataclass
class _Inputs:
    files: list[_File] = field(default_factory=list)
    roots: list[str] = field(default_factory=list)  # resolved paths given: the scope of ``prune``
    blind: list[str] = field(default_factory=list)  # directories that could not be listed
    keys: set[str] = field(default_factory=set)  # every file reached, read or not


ProblemSink = Callable[[str, "int | None", str], None]


def _printable(path: str) -> str:
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _shown(text: str) -> str:
    """``text`` with lone surrogates escaped (printable, unlike the text itself)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _has_surrogate(text: str) -> int:
    """Index of the first lone surrogate in ``text``, or -1."""
    found = _SURROGATE.search(text)
    return found.start() if found else -1


_SURROGATE = re.compile("[\ud800-\udfff]")


def _walk(paths: Iterable[str | Path], problem: ProblemSink) -> _Inputs:
    """The files to read: given files and supported files under given directories, each once."""
    inputs = _Inputs()
    for raw in paths:
        path = Path(raw)
        root = Path(os.path.realpath(path)).as_posix()
        try:
            info = path.stat()
        except OSError as exc:  # never pruned: an unmounted disk must not empty the collection
            inputs.blind.append(root)
            problem(_printable(str(path)), None, _stat_error(path, exc))
            continue
        inputs.roots.append(root)
        if stat.S_ISDIR(info.st_mode):
            _walk_dir(path, (info.st_dev, info.st_ino), inputs, problem)
        else:
            _add_file(path, info, inputs, problem, explicit=True)
    return inputs


def _stat_error(path: Path, exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "symlink loop: skipped"
    if isinstance(exc, FileNotFoundError):
        return "broken symlink: skipped" if path.is_symlink() else "not found"
    return f"unreadable: {exc.strerror or exc}"


def _walk_dir(root: Path, ident: tuple[int, int], inputs: _Inputs, problem: ProblemSink) -> None:
    """Depth-first in name order, following directory symlinks (each directory once); symlink
    loops and directories that cannot be listed are reported."""
    stack: list[tuple[Path, tuple[int, int], tuple[tuple[int, int], ...]]] = [(root, ident, ())]
    visited: set[tuple[int, int]] = set()
    while stack:
        directory, ident, ancestors = stack.pop()
        if ident in ancestors:
            problem(_printable(str(directory)), None, "symlink loop (points to a directory above it): skipped")
            continue
        if ident in visited:
            continue  # reached twice through symlinks: read once
        visited.add(ident)
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            inputs.blind.append(Path(os.path.realpath(directory)).as_posix())
            problem(_printable(str(directory)), None, f"cannot list directory: {exc.strerror or exc}: skipped")
            continue
        subdirs = []
        for entry in entries:
            path = Path(entry.path)
            suffix = path.suffix.lower()
            try:
                child = path.stat()
            except OSError as exc:
                if suffix in TEXT_SUFFIXES | JSONL_SUFFIXES or exc.errno == errno.ELOOP:
                    problem(_printable(str(path)), None, _stat_error(path, exc))
                continue
            if stat.S_ISDIR(child.st_mode):
                subdirs.append((path, (child.st_dev, child.st_ino), (*ancestors, ident)))
            elif suffix in TEXT_SUFFIXES | JSONL_SUFFIXES:
                _add_file(path, child, inputs, problem, explicit=False)
        stack += reversed(subdirs)


def _add_file(path: Path, info: os.stat_result, inputs: _Inputs, problem: ProblemSink, *, explicit: bool) -> None:
    key = Path(os.path.realpath(path)).as_posix()
    display = _printable(str(path))
    if key in inputs.keys:
        logger.debug("%s: reached twice, read once", display)
        return
    inputs.keys.add(key)
    suffix = path.suffix.lower()
    if _has_surrogate(key) >= 0:
        problem(display, None, "file name is not valid UTF-8 (rename the file): skipped")
    elif not stat.S_ISREG(info.st_mode):
        problem(display, None, "not a regular file: skipped")
    elif explicit and suffix not in TEXT_SUFFIXES | JSONL_SUFFIXES:
        kinds = ", ".join(sorted(TEXT_SUFFIXES | JSONL_SUFFIXES))
        problem(display, None, f"unsupported file type {suffix or '(none)'!r} (ingest reads {kinds}): skipped")
    else:
        inputs.files.append(_File(path, key, display, info.st_size, suffix in JSONL_SUFFIXES))


# ============================================================================================
# Decoding
# ============================================================================================
@dataclass
class _Scan:
    error: str | None = None  # why the file does not decode
    offset: int = 0  # byte where it failed
    blank: bool = True  # only whitespace


def _codec(encoding: str) -> str:
    """The codec that reads ``encoding`` (UTF-8 with or without a byte-order mark)."""
    name = codecs.lookup(encoding).name
    return "utf-8-sig" if name == "utf-8" else name


def check_encodings(encoding: str | Sequence[str]) -> list[str]:
    """Validate ``encoding`` (a codec name, a comma-separated list, or ``auto``) and return the
    candidates in the order they are tried."""
    names = encoding.split(",") if isinstance(encoding, str) else list(encoding)
    names = [n.strip().lower() for n in names if n.strip()]
    if not names:
        raise ConfigurationError("encoding is empty: give a codec name such as utf-8, gb18030 or latin-1, or auto")
    out = []
    for name in names:
        if name == "auto":  # UTF-8 first: detection only where it fails
            _detector()
            out += [] if "utf-8" in out else ["utf-8"]
            out.append(name)
            continue
        try:
            info = codecs.lookup(name)
        except LookupError:
            raise ConfigurationError(
                f"unknown encoding {name!r}: use a Python codec name (utf-8, gb18030, big5, shift_jis, "
                "latin-1, cp1252, ...) or auto"
            ) from None
        try:
            "a".encode(info.name)  # bytes-to-bytes and str-to-str codecs (base64, rot13) refuse
        except LookupError:
            raise ConfigurationError(f"{name!r} is not a text encoding") from None
        out.append(info.name)
    return out


def _detector() -> Callable[[bytes], Any]:
    try:
        from charset_normalizer import from_bytes
    except ImportError:
        raise ConfigurationError(
            "encoding 'auto' needs charset-normalizer: pip install 'qwen-sglang[detect]' "
            "(or name the encodings, e.g. --encoding utf-8,gb18030)"
        ) from None
    return from_bytes  # type: ignore[no-any-return]


def _detect(path: Path, around: int) -> str | None:
    """Guess the encoding from up to 1 MiB of the file around byte ``around`` (where UTF-8 failed)."""
    start = max(0, around - 4096)
    with path.open("rb") as fh:
        fh.seek(start)
        sample = fh.read(READ_BYTES)
    if start:  # do not start inside a multi-byte character: from the next line
        sample = sample[sample.find(b"\n") + 1 :]
    best = _detector()(sample).best()
    return None if best is None else codecs.lookup(best.encoding).name


def _scan(path: Path, encoding: str) -> _Scan:
    """Decode the whole file, streaming: does it decode, and does it hold any text?"""
    decoder = codecs.getincrementaldecoder(_codec(encoding))("strict")
    scan, offset, newlines = _Scan(), 0, 0
    with path.open("rb") as fh:
        while True:
            raw = fh.read(READ_BYTES)
            pending = len(decoder.getstate()[0])
            try:
                text = decoder.decode(raw, final=not raw)
            except UnicodeDecodeError as exc:  # exc.start counts the bytes held from the last block
                line = newlines + raw[: max(exc.start - pending, 0)].count(b"\n") + 1
                scan.offset = offset - pending + exc.start
                scan.error = f"{exc.reason} at line {line}, byte {scan.offset}"
                return scan
            if (bad := _has_surrogate(text)) >= 0:
                scan.error, scan.offset = f"decodes to a lone surrogate near byte {offset}", offset + bad
                return scan
            if scan.blank and text and not text.isspace():
                scan.blank = False
            if not raw:
                return scan
            offset += len(raw)
            newlines += raw.count(b"\n")


def _pick_encoding(path: Path, encodings: list[str]) -> tuple[str, _Scan]:
    """The first candidate that decodes the whole file (``auto``: detected where UTF-8 failed);
    if none does, the first candidate with the first failure."""
    tried: list[tuple[str, _Scan]] = []
    for name in encodings:
        if name == "auto":
            guess = _detect(path, tried[0][1].offset if tried else 0)
            if guess is None or any(guess == t for t, _ in tried):
                continue
            name = guess
        scan = _scan(path, name)
        if scan.error is None:
            return name, scan
        tried.append((name, scan))
    return tried[0]


def _undecodable(tried: str, scan: _Scan, encodings: list[str]) -> str:
    label = "UTF-8" if tried == "utf-8" else tried
    hint = "" if len(encodings) > 1 else "; name its encoding, e.g. --encoding utf-8,gb18030 (or auto)"
    return f"not {label} ({scan.error}){hint}"


def _blocks(fh: BinaryIO, encoding: str, ledger: _Ledger, options: _Options) -> Iterator[str]:
    """The file's text, a block at a time (it decoded whole when scanned: a failure now means
    it changed meanwhile, or the disk failed)."""
    decoder = codecs.getincrementaldecoder(_codec(encoding))("strict")
    try:
        while raw := fh.read(READ_BYTES):
            options.meter.read(len(raw))
            yield decoder.decode(raw)
        yield decoder.decode(b"", final=True)
    except (OSError, UnicodeDecodeError) as exc:
        ledger.purge = False
        options.problem(ledger.file.display, None, f"failed while being read ({exc}): its older chunks are kept")


# ============================================================================================
# Chunking (streaming, linear)
# ============================================================================================
# A paragraph break: a whitespace run with two newlines, or a very long one (patterns that
# start with a character class are scanned fast by ``re``).
_PARAGRAPH_BREAK = re.compile(rf"\n\s*\n|\s(?<!\s\s)\s{{{MAX_SPACE_RUN},}}")
_LEADING_SPACE = re.compile(r"\s*")
# A sentence end: ASCII . ! ? followed by space, or the CJK full stop / exclamation / question
# mark; the separator is what follows the mark.
_SENTENCE_END = re.compile(r"[.!?]\s+|[\u3002\uff01\uff1f]\s*")

Piece = tuple[str, str]  # (separator before the piece, piece)


def _search(buf: str, pos: int) -> tuple[int, int] | None:
    """Span of the first sentence separator starting at ``pos`` or later (``buf[pos - 1]`` may be
    its mark)."""
    if pos > len(buf):
        return None
    m = _SENTENCE_END.search(buf, max(pos - 1, 0))
    return None if m is None else (m.start() + 1, m.end())


class _LongParagraph:
    """Cuts a paragraph longer than ``max_chars`` at sentence ends, and sentences longer than
    ``max_chars`` every ``max_chars`` characters, as its text streams in."""

    def __init__(self, max_chars: int) -> None:
        self.max = max_chars
        self.buf = ""  # unprocessed text; buf[: self.start] is one character of look-behind context
        self.start = 0
        self.find = 0  # where the next separator search starts
        self.sep = "\n\n"

    def feed(self, text: str, final: bool = False) -> list[Piece]:
        out: list[Piece] = []
        buf, start, find = self.buf + text, self.start, self.find
        while (m := _search(buf, find)) is not None and (final or m[1] < len(buf)):
            self._cut(buf, start, m[0], out, whole=True)
            self.sep = buf[m[0] : m[1]]
            start, find = m[1], m[1] + (m[0] == m[1])
        if final:
            self._cut(buf, start, len(buf), out, whole=True)
            return out
        known = (m[0] if m is not None else len(buf)) - start  # the sentence is at least this long
        full = max(known - 1, 0) // self.max  # cuts that more text cannot move
        self._cut(buf, start, start + full * self.max, out, whole=False)
        start += full * self.max
        keep = max(start - 1, 0)  # one character of context for the look-behind
        self.buf, self.start, self.find = buf[keep:], start - keep, max(find, start) - keep
        return out

    def _cut(self, buf: str, begin: int, end: int, out: list[Piece], *, whole: bool) -> None:
        """Pieces of ``buf[begin:end]``, each ``max_chars`` long but the last one (when ``whole``)."""
        for at in range(begin, end, self.max):
            piece = buf[at : min(at + self.max, end)]
            if piece:
                out.append((self.sep, piece))
                self.sep = ""
        del whole


class _Chunker:
    """Streaming :func:`split_text`: feed text blocks, get finished chunks. Memory is bounded by
    ``max_chars`` and the block size, time is linear in the text."""

    def __init__(self, max_chars: int) -> None:
        if max_chars < 1:
            raise ConfigurationError("max_chars must be positive")
        self.max = max_chars
        self.hold = ""  # trailing whitespace: inside the paragraph, or the start of a break
        self.between = True  # no paragraph open: leading whitespace is dropped
        self.short = ""  # an open paragraph while it may still fit in one piece
        self.long: _LongParagraph | None = None
        self.parts: list[str] = []  # the chunk being filled, and its length
        self.size = 0

    def feed(self, block: str) -> list[str]:
        out: list[str] = []
        text = self.hold + block
        self.hold = ""
        pos = _LEADING_SPACE.match(text).end() if self.between else 0  # type: ignore[union-attr]
        body_end = len(text.rstrip())
        for m in _PARAGRAPH_BREAK.finditer(text, pos, body_end):
            self._add(text[pos : m.start()].rstrip(), out)
            self._end_paragraph(out)
            pos = _LEADING_SPACE.match(text, m.end()).end()  # type: ignore[union-attr]
        if pos < body_end:
            self._add(text[pos:body_end], out)
        tail = text[max(pos, body_end) :]
        if tail.count("\n") >= 2 or len(tail) > MAX_SPACE_RUN:
            self._end_paragraph(out)
        elif not self.between:
            self.hold = tail
        return out

    def close(self) -> list[str]:
        out: list[str] = []
        self._end_paragraph(out)
        if self.parts:
            out.append("".join(self.parts))
            self.parts, self.size = [], 0
        return out

    def _add(self, text: str, out: list[str]) -> None:
        if not text:
            return
        self.between = False
        if self.long is not None:
            self._merge(self.long.feed(text), out)
            return
        self.short += text
        if len(self.short) > self.max:
            self.long = _LongParagraph(self.max)
            self._merge(self.long.feed(self.short), out)
            self.short = ""

    def _end_paragraph(self, out: list[str]) -> None:
        if self.long is not None:
            self._merge(self.long.feed("", final=True), out)
            self.long = None
        elif self.short:
            self._merge([("\n\n", self.short)], out)
            self.short = ""
        self.between, self.hold = True, ""

    def _merge(self, pieces: list[Piece], out: list[str]) -> None:
        """Greedy: pieces joined with their separators while the chunk stays within max_chars."""
        for sep, piece in pieces:
            if self.parts and self.size + len(sep) + len(piece) <= self.max:
                self.parts += (sep, piece)
                self.size += len(sep) + len(piece)
                continue
            if self.parts:
                out.append("".join(self.parts))
            self.parts, self.size = [piece], len(piece)


def iter_chunks(blocks: Iterable[str], max_chars: int = 2000) -> Iterator[str]:
    """Split text arriving in ``blocks`` into chunks of at most ``max_chars`` characters, streaming.

    The chunks are those of :func:`split_text` on the concatenated text, whatever the block
    boundaries; memory stays bounded by ``max_chars`` and the block size, time is linear.
    """
    chunker = _Chunker(max_chars)
    for block in blocks:
        yield from chunker.feed(block)
    yield from chunker.close()


def split_text(text: str, max_chars: int = 2000) -> list[str]:
    """Split ``text`` into chunks of at most ``max_chars`` characters.

    Paragraphs (separated by a blank line, or by a whitespace run of more than 65,536
    characters) are kept together when they fit, long paragraphs are split at sentence ends
    (``. ! ?`` followed by space, and the CJK full stop, exclamation and question marks), and
    sentences longer than ``max_chars`` are cut. Pieces keep their original separators, so a
    chunk is a verbatim stretch of the document.
    Sizes are in characters, not tokens: a chunk that still exceeds the model's token limit goes
    through the client's ``long_text`` policy. Linear time; see :func:`iter_chunks` to stream.

    Example:
        ```python
        from qwen_sglang.ingest import split_text

        print(split_text("First paragraph here.\\n\\nSecond one.\\n\\nThird.", 25))
        # ['First paragraph here.', 'Second one.\\n\\nThird.']
        ```
    """
    return list(iter_chunks([text], max_chars))


def _canonical(metadata: Mapping[str, Any]) -> str:
    return json.dumps(metadata, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _sha16(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def chunk_id(source: str, index: int, text: str, metadata: Mapping[str, Any] | None = None) -> str:
    """Deterministic id: ``sha256(source)[:16]-index-sha256(text, metadata)[:16]``.

    ``source`` is the file's resolved path, or ``path#id`` for a JSON-lines record (see
    docs/ingestion.md); ``metadata`` is the document's own metadata (a change of it is a new
    chunk, so the store never keeps stale metadata).
    """
    content = text if not metadata else f"{text}\x00{_canonical(metadata)}"
    return f"{_sha16(source)}-{index}-{_sha16(content)}"


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


# ============================================================================================
# Reading documents
# ============================================================================================
@dataclass
class _Ledger:
    """What a run produced from one file, in 8 bytes a chunk: the ids it wants kept, and the
    record keys (with their lines) to find duplicates."""

    file: _File
    purge: bool = True  # False when the file could not be read to its end: its chunks are kept
    wanted: array[int] = field(default_factory=lambda: array("Q"))
    keys: array[int] = field(default_factory=lambda: array("Q"))
    lines: array[int] = field(default_factory=lambda: array("I"))

    def duplicates(self) -> list[tuple[int, int]]:
        """(line, first line with the same record key), in line order."""
        if len(self.keys) < 2:
            return []
        keys = np.frombuffer(self.keys, dtype=np.uint64)
        order = np.argsort(keys, kind="stable")
        ordered = keys[order]
        starts = np.concatenate(([True], ordered[1:] != ordered[:-1]))
        first = np.maximum.accumulate(np.where(starts, np.arange(len(keys)), 0))
        lines = np.frombuffer(self.lines, dtype=np.uint32)
        pairs = [(int(lines[order[i]]), int(lines[order[first[i]]])) for i in np.nonzero(~starts)[0]]
        return sorted(pairs)


@dataclass
class _Doc:
    ledger: _Ledger
    source: str  # what chunk ids are made of
    metadata: dict[str, Any]  # the document's own metadata (hashed into its chunk ids)
    blocks: Iterable[str]


@dataclass
class _Options:
    encodings: list[str]
    problem: ProblemSink
    meter: _Meter


class _Meter:
    """Bytes of input consumed so far (for the progress bar)."""

    def __init__(self) -> None:
        self.done = 0  # files finished
        self.current = 0  # in the file being read

    def read(self, n: int) -> None:
        self.current += n

    def finish(self, size: int) -> None:
        self.done += size
        self.current = 0

    @property
    def total(self) -> int:
        return self.done + self.current


def _read(inputs: _Inputs, options: _Options) -> Iterator[_Doc | _Ledger]:
    """Each file's documents, then its ledger (the file is read to its end)."""
    for file in inputs.files:
        ledger = _Ledger(file)
        try:
            if file.jsonl:
                yield from _jsonl_docs(ledger, options)
            else:
                yield from _text_docs(ledger, options)
        except OSError as exc:
            ledger.purge = False
            options.problem(file.display, None, f"unreadable: {exc.strerror or exc}: its stored chunks are kept")
        options.meter.finish(file.size)
        yield ledger


def _text_docs(ledger: _Ledger, options: _Options) -> Iterator[_Doc]:
    file = ledger.file
    encoding, scan = _pick_encoding(file.path, options.encodings)
    if scan.error is not None:
        options.problem(file.display, None, _undecodable(encoding, scan, options.encodings))
        return
    if scan.blank:
        options.problem(file.display, None, "empty file")
        return
    with file.path.open("rb") as fh:
        yield _Doc(ledger, file.key, {"title": Path(file.key).stem}, _blocks(fh, encoding, ledger, options))


def _lines(fh: BinaryIO, meter: _Meter) -> Iterator[tuple[int, bytes | None]]:
    """(line number, bytes), or ``None`` for a line longer than MAX_LINE_BYTES (read past)."""
    number = 0
    while raw := fh.readline(MAX_LINE_BYTES + 1):
        number += 1
        meter.read(len(raw))
        if len(raw) <= MAX_LINE_BYTES or raw.endswith(b"\n"):
            yield number, raw
            continue
        while raw and not raw.endswith(b"\n"):
            raw = fh.readline(READ_BYTES)
            meter.read(len(raw))
        yield number, None


def _jsonl_docs(ledger: _Ledger, options: _Options) -> Iterator[_Doc]:
    file, problem = ledger.file, options.problem
    encoding, scan = _pick_encoding(file.path, options.encodings)
    if "{}\n".encode(_codec(encoding).replace("-sig", "")) != b"{}\n":
        problem(file.display, None, f"JSON lines in {encoding} are not supported: use UTF-8")
        return
    records = 0
    with file.path.open("rb") as fh:
        for number, raw in _lines(fh, options.meter):
            if raw is None:
                problem(file.display, number, f"line longer than {MAX_LINE_BYTES:,} bytes: skipped")
                continue
            parsed = _record(raw, encoding)
            if parsed is None:
                continue
            if isinstance(parsed, str):
                problem(file.display, number, f"{parsed}: skipped")
                continue
            key, metadata, text = parsed
            records += 1
            ledger.keys.append(_digest(key))
            ledger.lines.append(number)
            yield _Doc(ledger, f"{file.key}#{key}", metadata, (text,))
    for line, first in ledger.duplicates():
        problem(file.display, line, f"same record id as line {first}: both are stored (identical chunks once)")
    if not records and scan.error is None:
        problem(file.display, None, "empty file" if scan.blank else "no valid records")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _record(raw: bytes, encoding: str) -> tuple[str, dict[str, Any], str] | str | None:
    """(record key, metadata, text) of one JSON line, an error message, or None for a blank line."""
    try:
        line = raw.decode(_codec(encoding))
    except UnicodeDecodeError as exc:
        return f"not {'UTF-8' if encoding == 'utf-8' else encoding} ({exc.reason} at byte {exc.start} of the line)"
    if not line.strip():
        return None
    try:
        obj = json.loads(line, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        return f"malformed JSON: {exc}"
    if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
        return "expected an object with a string 'text'"
    text: str = obj["text"]
    if not text.strip():
        return "empty text"
    if (bad := _has_surrogate(text)) >= 0:
        return f"text has a lone surrogate ({text[bad]!a}) at character {bad}"
    metadata = _user_metadata(obj.get("metadata"))
    if isinstance(metadata, str):
        return metadata
    rid = obj.get("id")
    if rid is None:  # no id: the record is known by its content
        return f"~{_sha16(text + chr(0) + _canonical(metadata))}", metadata, text
    if isinstance(rid, bool) or not isinstance(rid, str | int):
        return f"'id' must be a string or an integer, not {type(rid).__name__}"
    if isinstance(rid, str) and _has_surrogate(rid) >= 0:
        return "'id' has a lone surrogate"
    return str(rid), {**metadata, "record_id": str(rid)}, text


def _user_metadata(meta: Any) -> dict[str, Any] | str:
    """A record's metadata as stores keep it exactly (scalars; lists and objects as JSON text),
    or why it cannot be stored as given."""
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        return f"'metadata' must be an object, not {type(meta).__name__}"
    out: dict[str, Any] = {}
    for key, value in meta.items():
        problem = _bad_key(key) or _bad_value(value)
        if problem:
            return f"metadata '{_shown(key)}': {problem}"
        if isinstance(value, list | dict):
            value = json.dumps(value, ensure_ascii=False, sort_keys=True)
        if value is not None:
            out[key] = value
    return out


def _bad_key(key: str) -> str | None:
    if not key or key.startswith(("#", "$", "chroma:")):
        return "Chroma rejects or drops empty keys and keys starting with '#', '$' or 'chroma:' (rename it)"
    if key in RESERVED_KEYS:
        return f"the ingester sets {key!r} itself (rename yours, e.g. 'user_{key}')"
    if _has_surrogate(key) >= 0:
        return "the key has a lone surrogate"
    return None


def _bad_value(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return None if -(2**63) <= value < 2**63 else "integer outside the 64-bit range"
    if isinstance(value, float):
        return None if math.isfinite(value) else "not a finite number"
    if isinstance(value, list | dict):
        try:
            value = json.dumps(value, ensure_ascii=False, allow_nan=False)
        except ValueError:
            return "holds a number that is not finite"
    return "has a lone surrogate" if _has_surrogate(value) >= 0 else None


# ============================================================================================
# Batching
# ============================================================================================
@dataclass
class _Batch:
    ids: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    metadatas: list[dict[str, Any]] = field(default_factory=list)
    finished: list[_Ledger] = field(default_factory=list)  # files read to their end
    bytes: int = 0  # input consumed to produce it (progress)
    repeated: int = 0  # chunks whose id is already in this batch (identical duplicates)

    def __len__(self) -> int:
        return len(self.ids)


def _batches(
    items: Iterable[_Doc | _Ledger], max_chars: int, size: int, report: IngestReport, meter: _Meter
) -> Iterator[_Batch]:
    """Chunks in batches of ``size``; a document's chunks may span batches. A file's ledger goes
    with the batch of its last chunk, so its stale chunks are removed after that batch is written."""
    batch, seen, mark = _Batch(), set[str](), 0
    for item in items:
        if isinstance(item, _Ledger):
            batch.finished.append(item)
            report.files += 1
            continue
        report.units += 1
        for index, text in enumerate(iter_chunks(item.blocks, max_chars)):
            cid = chunk_id(item.source, index, text, item.metadata)
            item.ledger.wanted.append(_digest(cid))
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
# Stores
# ============================================================================================
PAGE = 1000


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

    def stored(self, source: str | None) -> Iterator[list[tuple[str, str]]]:
        """Pages of ``(id, source)`` of the stored chunks of ``source`` (of all chunks: ``None``).

        Raises ``NotImplementedError`` where the store cannot list its chunks by metadata."""
        raise NotImplementedError

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
        return set(self.collection.get(ids=ids, include=[])["ids"]) if ids else set()

    def write(self, ids: list[str], texts: list[str], metadatas: list[dict[str, Any]], vectors: np.ndarray) -> None:
        self.collection.upsert(ids=ids, embeddings=vectors, documents=texts, metadatas=metadatas)

    def stored(self, source: str | None) -> Iterator[list[tuple[str, str]]]:
        where = None if source is None else {"source": source}
        offset = 0
        while True:
            got = self.collection.get(where=where, include=["metadatas"], limit=PAGE, offset=offset)
            if not got["ids"]:
                return
            yield [
                (cid, str((meta or {}).get("source", "")))
                for cid, meta in zip(got["ids"], got["metadatas"], strict=True)
            ]
            offset += len(got["ids"])

    def delete(self, ids: list[str]) -> None:
        for start in range(0, len(ids), PAGE):
            self.collection.delete(ids=ids[start : start + PAGE])


class _LlamaIndexTarget(_Target):
    """Any LlamaIndex vector store: nodes carry our vectors; ``get_nodes``/``delete_nodes`` with a
    metadata filter find stored and stale chunks where the store implements them."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.can_get = True

    def present(self, ids: list[str]) -> set[str]:
        if not self.can_get or not ids:  # get_nodes([]) means "all nodes"
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

    def stored(self, source: str | None) -> Iterator[list[tuple[str, str]]]:
        if not self.can_get:
            raise NotImplementedError
        from llama_index.core.vector_stores.types import MetadataFilter, MetadataFilters

        filters = None if source is None else MetadataFilters(filters=[MetadataFilter(key="source", value=source)])
        nodes = self.store.get_nodes(node_ids=None, filters=filters)
        yield [(n.node_id, str(n.metadata.get("source", ""))) for n in nodes]

    def delete(self, ids: list[str]) -> None:
        for start in range(0, len(ids), PAGE):
            self.store.delete_nodes(node_ids=ids[start : start + PAGE])


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
        return {d.id for d in self.store.get_by_ids(ids) if d.id is not None} if ids else set()

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


# ============================================================================================
# Progress
# ============================================================================================
class _Progress:
    """A bar over the input's bytes, advancing as each embedding request finishes, with files
    (of the total), chunks, documents/s and tokens/s."""

    def __init__(self, show: bool, inputs: _Inputs, report: IngestReport) -> None:
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

    def __init__(self, target: _Target, client: EmbeddingClient, report: IngestReport, progress: _Progress) -> None:
        self.target, self.client, self.report, self.progress = target, client, report, progress
        self.width = target.stored_width()
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
        elif vectors.shape[1] != self.width:
            raise ConfigurationError(
                f"the collection holds {self.width}-d vectors but this run produces {vectors.shape[1]}-d "
                "ones (another model or dimensions): use another collection"
            )
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

    def _purge(self, ledger: _Ledger) -> int:
        wanted = np.sort(np.frombuffer(ledger.wanted, dtype=np.uint64))
        stale: list[str] = []
        try:
            for page in self.target.stored(ledger.file.key):
                digests = np.array([_digest(cid) for cid, _ in page], dtype=np.uint64)
                found = np.searchsorted(wanted, digests).clip(max=max(len(wanted) - 1, 0))
                missing = (wanted[found] != digests) if len(wanted) else np.ones(len(page), dtype=bool)
                stale += [cid for (cid, _), gone in zip(page, missing, strict=True) if gone]
        except NotImplementedError:
            if not self.cannot_list:
                self.cannot_list = True
                logger.warning(
                    "%s cannot list chunks by source: old chunks of changed files are not removed",
                    type(self.target).__name__.strip("_"),
                )
            return 0
        if stale:
            self.target.delete(stale)
        return len(stale)

    def prune(self, inputs: _Inputs) -> int:
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


def iter_units(
    paths: Iterable[str | Path],
    problems: list[Problem],
    on_error: OnError = "report",
    encoding: str | Sequence[str] = "utf-8",
) -> Iterator[Unit]:
    """Yield the documents in ``paths`` (whole, for small inputs and tests: :func:`ingest`
    streams); append what cannot be read to ``problems``."""
    sink = _problem_sink(problems, on_error)
    options = _Options(check_encodings(encoding), sink, _Meter())
    for item in _read(_walk(paths, sink), options):
        if isinstance(item, _Doc) and (text := "".join(item.blocks)):
            yield Unit(item.source, text, dict(item.metadata))


def _problem_sink(problems: list[Problem], on_error: OnError) -> ProblemSink:
    def problem(path: str, line: int | None, message: str) -> None:
        p = Problem(path, line, message)
        if on_error == "fail":
            raise IngestError(str(p))
        logger.info("%s", p)
        problems.append(p)

    return problem


def ingest(
    paths: Sequence[str | Path],
    *,
    client: EmbeddingClient,
    collection: Any = None,
    store: Any = None,
    persist_dir: str | Path | None = None,
    collection_name: str | None = None,
    max_chars: int = 2000,
    chunks_per_write: int = 256,
    encoding: str | Sequence[str] = "utf-8",
    on_error: OnError = "report",
    prune: bool = False,
    show_progress: bool = True,
    report: IngestReport | None = None,
    batch_size: int | None = None,
) -> IngestReport:
    """Ingest ``paths`` into a vector store, streaming, resumable and idempotent.

    The destination is one of: ``collection`` (a Chroma collection), ``persist_dir`` +
    ``collection_name`` (an embedded Chroma, opened or created), or ``store`` (a Chroma
    collection, any LangChain ``VectorStore`` or any LlamaIndex vector store). Chroma and
    LlamaIndex stores get the client's vectors and, for every file read, end up holding exactly
    what that file produces now (edited, emptied, undecodable files and removed records included).
    LangChain stores get the vectors through ``add_embeddings`` where they have it and embed the
    texts with their own embeddings object otherwise; the ``VectorStore`` interface has no
    metadata query, so their changed files' old chunks are not removed (a warning says so).

    Args:
        paths: files and directories (read recursively: ``.txt``, ``.md``, ``.markdown``,
            ``.rst``, ``.jsonl``, ``.ndjson``).
        client: the embedding client (its ``batch_size`` is texts per request).
        max_chars: largest chunk, in characters.
        chunks_per_write: chunks looked up, embedded and written together.
        encoding: a codec name, a comma-separated list tried in order per file (the first
            that decodes the whole file wins), or ``"auto"`` (detection, needs
            charset-normalizer), e.g. ``"utf-8,gb18030"``.
        on_error: ``"report"`` bad inputs in ``report.problems`` and go on, or ``"fail"``.
        prune: also delete the chunks of files under ``paths`` that no longer exist.
        report: filled in as the run goes (pass one to read what was done after an exception).
        batch_size: deprecated name of ``chunks_per_write``.

    Example:
        ```python
        from qwen_sglang import EmbeddingClient
        from qwen_sglang.ingest import ingest

        client = EmbeddingClient(base_url="http://127.0.0.1:30000/v1", model="Qwen/Qwen3-Embedding-4B")
        report = ingest(["./docs"], client=client, persist_dir="./chroma", collection_name="docs")
        print(report.summary())
        ```
    """
    if batch_size is not None:
        warnings.warn("ingest(batch_size=) is now chunks_per_write=", DeprecationWarning, stacklevel=2)
        chunks_per_write = batch_size
    if chunks_per_write < 1:
        raise ConfigurationError("chunks_per_write must be positive")
    _Chunker(max_chars)  # validates max_chars before anything is opened
    encodings = check_encodings(encoding)
    if store is None and collection is None:
        if persist_dir is None or not collection_name:
            raise ConfigurationError("give a store, a Chroma collection, or persist_dir and collection_name")
        collection = _open_collection(persist_dir, collection_name)
    target = _target(store if store is not None else collection)
    if prune and isinstance(target, _LangChainTarget):
        raise ConfigurationError(
            "prune needs a store that can list its chunks: a Chroma collection or a LlamaIndex store"
        )
    report = report if report is not None else IngestReport()
    problem = _problem_sink(report.problems, on_error)
    started, tokens_before = time.monotonic(), client.prompt_tokens
    inputs = _walk(paths, problem)
    progress = _Progress(show_progress, inputs, report)
    options = _Options(encodings, problem, _Meter())
    try:
        run = _Run(target, client, report, progress)
        run.run(_batches(_read(inputs, options), max_chars, chunks_per_write, report, options.meter))
        if prune:
            report.pruned = run.prune(inputs)
        report.complete = True
    finally:
        progress.close()
        report.prompt_tokens = client.prompt_tokens - tokens_before
        report.seconds = time.monotonic() - started
    return report
