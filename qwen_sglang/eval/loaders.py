"""Evaluation data: queries and corpus as JSON lines, relevance judgements as BEIR TSV or TREC, a
BEIR folder, or the small set shipped with the package. The corpus is read lazily (streamed)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from qwen_sglang._jsonl import read_objects
from qwen_sglang.errors import InvalidInputError

__all__ = ["EvalDataset", "load_beir", "load_dataset", "load_demo_dataset", "read_qrels", "read_queries"]


def _open_text(path: Path) -> Iterator[tuple[int, str]]:
    """Numbered non-blank lines of a UTF-8 text file (the qrels)."""
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if line.strip():
                yield number, line


def _id_and_text(path: Path, number: int, record: dict[str, Any]) -> tuple[str, str]:
    rid = record.get("_id", record.get("id"))
    text = record.get("text")
    if rid is None or not isinstance(text, str):
        raise InvalidInputError(f'{path}:{number}: a record needs "_id" (or "id") and a string "text"')
    title = record.get("title")
    if isinstance(title, str) and title.strip():
        text = f"{title} {text}"  # BEIR's convention: title, a space, the text
    if not text.strip():
        raise InvalidInputError(f"{path}:{number}: empty text for id {rid!r}")
    return str(rid), text


def read_queries(path: str | os.PathLike[str]) -> dict[str, str]:
    """Queries from JSON lines with ``_id`` (or ``id``) and ``text``."""
    p = Path(path)
    return dict(_id_and_text(p, n, record) for n, record in read_objects(p))


def read_qrels(path: str | os.PathLike[str]) -> dict[str, dict[str, int]]:
    """Relevance judgements: BEIR TSV (``query-id corpus-id score``, header optional) or TREC
    (``qid 0 docid rel``), tab- or space-separated."""
    p = Path(path)
    qrels: dict[str, dict[str, int]] = {}
    for number, line in _open_text(p):
        parts = line.split()
        if len(parts) == 4:
            qid, _, doc, score = parts
        elif len(parts) == 3:
            qid, doc, score = parts
        else:
            raise InvalidInputError(f"{p}:{number}: expected 3 (BEIR) or 4 (TREC) columns, got {len(parts)}")
        try:
            rel = int(float(score))
        except ValueError:
            if number == 1:
                continue  # the header line
            raise InvalidInputError(f"{p}:{number}: relevance {score!r} is not a number") from None
        qrels.setdefault(qid, {})[doc] = rel
    if not qrels:
        raise InvalidInputError(f"{p}: no relevance judgements")
    return qrels


@dataclass
class EvalDataset:
    """Queries, relevance judgements and a corpus that is read lazily (streamed, never held)."""

    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    corpus: Callable[[], Iterator[tuple[str, str]]]
    name: str = "dataset"

    def scored_queries(self) -> dict[str, str]:
        """Queries with at least one relevant document (the others cannot be scored)."""
        return {qid: text for qid, text in self.queries.items() if any(r > 0 for r in self.qrels.get(qid, {}).values())}


def _corpus_reader(path: Path) -> Callable[[], Iterator[tuple[str, str]]]:
    def read() -> Iterator[tuple[str, str]]:
        for number, record in read_objects(path):
            yield _id_and_text(path, number, record)

    return read


def load_dataset(
    queries: str | os.PathLike[str], corpus: str | os.PathLike[str], qrels: str | os.PathLike[str]
) -> EvalDataset:
    """A dataset from three files: queries and corpus as JSON lines, qrels as TSV."""
    for label, path in (("queries", queries), ("corpus", corpus), ("qrels", qrels)):
        if not Path(path).is_file():
            raise InvalidInputError(f"{label} file not found: {path}")
    return EvalDataset(read_queries(queries), read_qrels(qrels), _corpus_reader(Path(corpus)), Path(corpus).stem)


def load_beir(folder: str | os.PathLike[str], split: str = "test") -> EvalDataset:
    """A BEIR-style folder: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/{split}.tsv``."""
    root = Path(folder)
    data = load_dataset(root / "queries.jsonl", root / "corpus.jsonl", root / "qrels" / f"{split}.tsv")
    data.name = root.name
    return data


def load_demo_dataset() -> EvalDataset:
    """The small evaluation set shipped with the package (CC0): the demo corpus, English and
    Chinese questions, one relevant passage each."""
    base = resources.files("qwen_sglang").joinpath("data")
    with resources.as_file(base) as folder:
        data = load_dataset(folder / "eval_queries.jsonl", folder / "demo_corpus.jsonl", folder / "eval_qrels.tsv")
    data.name = "qwen-sglang-demo"
    return data
