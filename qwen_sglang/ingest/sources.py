"""The documents to ingest: files found under the paths given, decoded, text files and JSON-lines
records as documents; bad inputs as `Problem` (file and line), reported or fatal."""

from __future__ import annotations

import codecs
import errno
import logging
import os
import stat
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np

from qwen_sglang import _jsonl
from qwen_sglang._jsonl import READ_BYTES, iter_lines
from qwen_sglang.errors import QwenSGLangError
from qwen_sglang.ingest.decoding import check_encodings, codec, has_surrogate, pick_encoding, printable, undecodable
from qwen_sglang.ingest.ids import digest
from qwen_sglang.ingest.records import parse_record

__all__ = [
    "Document",
    "IngestError",
    "Inputs",
    "Ledger",
    "Meter",
    "OnError",
    "Problem",
    "ProblemSink",
    "ReadOptions",
    "SourceFile",
    "Unit",
    "find_files",
    "iter_units",
    "problem_sink",
    "read_documents",
]

logger = logging.getLogger("qwen_sglang.ingest")

TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".rst"}
JSONL_SUFFIXES = {".jsonl", ".ndjson"}
OnError = Literal["report", "fail"]
ProblemSink = Callable[[str, "int | None", str], None]


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
    path: str = ""  # the file's resolved path: the ``source`` its chunks are stored with


# ============================================================================================
# Finding the files
# ============================================================================================
@dataclass
class SourceFile:
    path: Path  # as reached (what is opened)
    key: str  # resolved POSIX path: the ``source`` of its chunks
    display: str  # printable (a non-UTF-8 name shown with escapes)
    size: int
    jsonl: bool


@dataclass
class Inputs:
    files: list[SourceFile] = field(default_factory=list)
    roots: list[str] = field(default_factory=list)  # resolved paths given: the scope of ``prune``
    blind: list[str] = field(default_factory=list)  # directories that could not be listed
    keys: set[str] = field(default_factory=set)  # every file reached, read or not


def find_files(paths: Iterable[str | Path], problem: ProblemSink) -> Inputs:
    """The files to read: given files and supported files under given directories, each once."""
    inputs = Inputs()
    for raw in paths:
        path = Path(raw)
        root = Path(os.path.realpath(path)).as_posix()
        try:
            info = path.stat()
        except OSError as exc:  # never pruned: an unmounted disk must not empty the collection
            inputs.blind.append(root)
            problem(printable(str(path)), None, _stat_error(path, exc))
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


def _walk_dir(root: Path, ident: tuple[int, int], inputs: Inputs, problem: ProblemSink) -> None:
    """Depth-first in name order, following directory symlinks (each directory once); symlink
    loops and directories that cannot be listed are reported."""
    stack: list[tuple[Path, tuple[int, int], tuple[tuple[int, int], ...]]] = [(root, ident, ())]
    visited: set[tuple[int, int]] = set()
    while stack:
        directory, ident, ancestors = stack.pop()
        if ident in ancestors:
            problem(printable(str(directory)), None, "symlink loop (points to a directory above it): skipped")
            continue
        if ident in visited:
            continue  # reached twice through symlinks: read once
        visited.add(ident)
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            inputs.blind.append(Path(os.path.realpath(directory)).as_posix())
            problem(printable(str(directory)), None, f"cannot list directory: {exc.strerror or exc}: skipped")
            continue
        subdirs = []
        for entry in entries:
            path = Path(entry.path)
            suffix = path.suffix.lower()
            try:
                child = path.stat()
            except OSError as exc:
                if suffix in TEXT_SUFFIXES | JSONL_SUFFIXES or exc.errno == errno.ELOOP:
                    problem(printable(str(path)), None, _stat_error(path, exc))
                continue
            if stat.S_ISDIR(child.st_mode):
                subdirs.append((path, (child.st_dev, child.st_ino), (*ancestors, ident)))
            elif suffix in TEXT_SUFFIXES | JSONL_SUFFIXES:
                _add_file(path, child, inputs, problem, explicit=False)
        stack += reversed(subdirs)


def _add_file(path: Path, info: os.stat_result, inputs: Inputs, problem: ProblemSink, *, explicit: bool) -> None:
    key = Path(os.path.realpath(path)).as_posix()
    display = printable(str(path))
    if key in inputs.keys:
        logger.debug("%s: reached twice, read once", display)
        return
    inputs.keys.add(key)
    suffix = path.suffix.lower()
    if has_surrogate(key) >= 0:
        problem(display, None, "file name is not valid UTF-8 (rename the file): skipped")
    elif not stat.S_ISREG(info.st_mode):
        problem(display, None, "not a regular file: skipped")
    elif explicit and suffix not in TEXT_SUFFIXES | JSONL_SUFFIXES:
        kinds = ", ".join(sorted(TEXT_SUFFIXES | JSONL_SUFFIXES))
        problem(display, None, f"unsupported file type {suffix or '(none)'!r} (ingest reads {kinds}): skipped")
    else:
        inputs.files.append(SourceFile(path, key, display, info.st_size, suffix in JSONL_SUFFIXES))


# ============================================================================================
# Reading documents
# ============================================================================================
@dataclass
class Ledger:
    """What a run produced from one file, in 8 bytes a chunk: the ids it wants kept, and the
    record keys (with their lines) to find duplicates."""

    file: SourceFile
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
class Document:
    ledger: Ledger
    source: str  # what chunk ids are made of
    metadata: dict[str, Any]  # the document's own metadata (hashed into its chunk ids)
    blocks: Iterable[str]


@dataclass
class ReadOptions:
    encodings: list[str]
    problem: ProblemSink
    meter: Meter


class Meter:
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


def read_documents(inputs: Inputs, options: ReadOptions) -> Iterator[Document | Ledger]:
    """Each file's documents, then its ledger (the file is read to its end)."""
    for file in inputs.files:
        ledger = Ledger(file)
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


def _text_docs(ledger: Ledger, options: ReadOptions) -> Iterator[Document]:
    file = ledger.file
    encoding, scan = pick_encoding(file.path, options.encodings)
    if scan.error is not None:
        options.problem(file.display, None, undecodable(encoding, scan, options.encodings))
        return
    if scan.blank:
        options.problem(file.display, None, "empty file")
        return
    with file.path.open("rb") as fh:
        yield Document(ledger, file.key, {"title": Path(file.key).stem}, read_blocks(fh, encoding, ledger, options))


def _jsonl_docs(ledger: Ledger, options: ReadOptions) -> Iterator[Document]:
    file, problem = ledger.file, options.problem
    encoding, scan = pick_encoding(file.path, options.encodings)
    if "{}\n".encode(codec(encoding).replace("-sig", "")) != b"{}\n":
        problem(file.display, None, f"JSON lines in {encoding} are not supported: use UTF-8")
        return
    records = 0
    with file.path.open("rb") as fh:
        for number, raw in iter_lines(fh, options.meter.read):
            if raw is None:
                problem(file.display, number, f"line longer than {_jsonl.MAX_LINE_BYTES:,} bytes: skipped")
                continue
            parsed = parse_record(raw, encoding)
            if parsed is None:
                continue
            if isinstance(parsed, str):
                problem(file.display, number, f"{parsed}: skipped")
                continue
            key, metadata, text = parsed
            records += 1
            ledger.keys.append(digest(key))
            ledger.lines.append(number)
            yield Document(ledger, f"{file.key}#{key}", metadata, (text,))
    for line, first in ledger.duplicates():
        problem(file.display, line, f"same record id as line {first}: both are stored (identical chunks once)")
    if not records and scan.error is None:
        problem(file.display, None, "empty file" if scan.blank else "no valid records")


def read_blocks(fh: BinaryIO, encoding: str, ledger: Ledger, options: ReadOptions) -> Iterator[str]:
    """The file's text, a block at a time (it decoded whole when scanned: a failure now means
    it changed meanwhile, or the disk failed)."""
    decoder = codecs.getincrementaldecoder(codec(encoding))("strict")
    try:
        while raw := fh.read(READ_BYTES):
            options.meter.read(len(raw))
            yield decoder.decode(raw)
        yield decoder.decode(b"", final=True)
    except (OSError, UnicodeDecodeError) as exc:
        ledger.purge = False
        options.problem(ledger.file.display, None, f"failed while being read ({exc}): its older chunks are kept")


def iter_units(
    paths: Iterable[str | Path],
    problems: list[Problem],
    on_error: OnError = "report",
    encoding: str | Sequence[str] = "utf-8",
) -> Iterator[Unit]:
    """Yield the documents in ``paths`` (whole, for small inputs and tests: :func:`ingest`
    streams); append what cannot be read to ``problems``."""
    sink = problem_sink(problems, on_error)
    options = ReadOptions(check_encodings(encoding), sink, Meter())
    for item in read_documents(find_files(paths, sink), options):
        if isinstance(item, Document) and (text := "".join(item.blocks)):
            yield Unit(item.source, text, dict(item.metadata), item.ledger.file.key)


def problem_sink(problems: list[Problem], on_error: OnError) -> ProblemSink:
    def problem(path: str, line: int | None, message: str) -> None:
        p = Problem(path, line, message)
        if on_error == "fail":
            raise IngestError(str(p))
        logger.info("%s", p)
        problems.append(p)

    return problem
