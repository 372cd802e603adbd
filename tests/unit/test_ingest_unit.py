"""Chunking, ids, reading and input problems of the ingester (no server)."""

from __future__ import annotations

import json
import os
import re
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import qwen_sglang._jsonl as jsonl_module
import qwen_sglang.ingest as ingest_module
import qwen_sglang.ingest.decoding as decoding_module
import qwen_sglang.ingest.sources as sources_module
import qwen_sglang.ingest.splitting as splitting_module
from qwen_sglang.errors import ConfigurationError
from qwen_sglang.ingest import IngestError, Problem, chunk_id, iter_chunks, iter_units, split_text


@given(st.text(min_size=0, max_size=3000), st.integers(min_value=5, max_value=400))
@settings(max_examples=200, deadline=None)
def test_chunks_are_bounded_verbatim_and_cover_the_text(text: str, max_chars: int) -> None:
    chunks = split_text(text, max_chars)
    assert all(0 < len(c) <= max_chars for c in chunks)
    # each paragraph piece of a chunk is a verbatim stretch of the text (paragraphs are re-joined
    # with a blank line), and no non-space character is lost or duplicated
    for c in chunks:
        assert all(part in text for part in c.split("\n\n"))
    assert "".join(c for c in "".join(chunks) if not c.isspace()) == "".join(c for c in text if not c.isspace())


def _reference_split(text: str, max_chars: int) -> list[str]:
    """The splitter as it was before it streamed (whole text in memory, quadratic on unbroken
    text): streaming must give the same chunks, so stored ids stay valid."""
    sentence_end = re.compile(r"((?<=[.!?])\s+|(?<=[\u3002\uff01\uff1f])\s*)")
    pieces: list[tuple[str, str]] = []
    for para in re.split(r"\n\s*\n", text):
        para = para.strip()
        if not para:
            continue
        if len(para) <= max_chars:
            pieces.append(("\n\n", para))
            continue
        parts = sentence_end.split(para)
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


_PIECES = ["word", "x" * 40, " ", "  ", "\t", "\n", "\n\n", " \n \n ", "\r\n", ".", "!", "?", "\u3002", "\uff01"]
_PIECES += ["\uff1f", "\u3000", "\u2028", "\x1c", "\u4e2d\u6587", "Hello world. "]


@given(
    st.lists(st.sampled_from(_PIECES), max_size=120).map("".join),
    st.integers(min_value=1, max_value=120),
    st.lists(st.integers(min_value=0, max_value=4000), max_size=12),
)
@settings(max_examples=400, deadline=None)
def test_streamed_chunks_equal_the_whole_text_ones_whatever_the_blocks(
    text: str, max_chars: int, cuts: list[int]
) -> None:
    edges = sorted({min(c, len(text)) for c in cuts})
    blocks = [text[a:b] for a, b in zip([0, *edges], [*edges, len(text)], strict=True)]
    whole = split_text(text, max_chars)
    assert list(iter_chunks(iter(blocks), max_chars)) == whole
    assert whole == _reference_split(text, max_chars)


def _unbroken(n: int, block: int = 1 << 16) -> Iterator[str]:
    for _ in range(n // block):
        yield "x" * block


def _peak_streaming(n: int) -> int:
    tracemalloc.start()
    try:
        count = sum(1 for _ in iter_chunks(_unbroken(n), 2000))
        assert count == -(-n // 2000)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_splitting_memory_does_not_grow_with_the_text() -> None:
    """n and 4n characters of unbroken text (the old splitter held the whole text and copied
    its tail once per chunk: quadratic): the peak stays that of a block and a chunk."""
    small, large = _peak_streaming(1 << 20), _peak_streaming(4 << 20)
    assert large < 1.5 * small + 65536, (small, large)
    assert large < 1 << 20  # far below the 4 MiB of text


class _Counting:
    """A compiled pattern that counts the characters each search may scan."""

    def __init__(self, pattern: re.Pattern[str], counter: list[int]) -> None:
        self.pattern, self.counter = pattern, counter

    def search(self, text: str, pos: int = 0, endpos: int | None = None) -> re.Match[str] | None:
        end = len(text) if endpos is None else endpos
        found = self.pattern.search(text, pos, end)
        self.counter[0] += (end if found is None else found.end()) - pos
        return found

    def finditer(self, text: str, pos: int = 0, endpos: int | None = None) -> Iterator[re.Match[str]]:
        self.counter[0] += (len(text) if endpos is None else endpos) - pos
        return self.pattern.finditer(text, pos, len(text) if endpos is None else endpos)


def _scanned(monkeypatch: pytest.MonkeyPatch, text_blocks: list[str]) -> int:
    counter = [0]
    for name in ("_SENTENCE_END", "_PARAGRAPH_BREAK"):
        monkeypatch.setattr(splitting_module, name, _Counting(getattr(splitting_module, name), counter))
    for _ in iter_chunks(iter(text_blocks), 500):
        pass
    monkeypatch.undo()
    return counter[0]


@pytest.mark.parametrize("unit", ["x", "One sentence. ", "\u4e00\u53e5\u8bdd\u3002", "a\n\nb "])
def test_splitting_work_is_linear_in_the_text(monkeypatch: pytest.MonkeyPatch, unit: str) -> None:
    """Characters the splitter's searches scan, for n and 4n characters in 1,000-character
    blocks: 4x, not 16x (a splitter that rescans what it holds would grow faster)."""
    text = unit * (200_000 // len(unit))
    blocks = [text[i : i + 1000] for i in range(0, len(text), 1000)]
    one, four = _scanned(monkeypatch, blocks), _scanned(monkeypatch, blocks * 4)
    assert four <= 4.2 * one and one <= 4 * len(text), (one, four)


def test_paragraphs_stay_whole_when_they_fit() -> None:
    text = "First paragraph here.\n\nSecond one.\n\nThird."
    assert split_text(text, 1000) == [text]
    assert split_text(text, 25) == ["First paragraph here.", "Second one.\n\nThird."]


def test_a_very_long_whitespace_run_separates_paragraphs() -> None:
    run = " " * (splitting_module.MAX_SPACE_RUN + 1)
    assert split_text(f"a{run}b", 10) == ["a\n\nb"]
    assert split_text(f"a{run[:-1]}b", 10**6) == [f"a{run[:-1]}b"]


def test_chunk_ids_are_deterministic_and_content_addressed() -> None:
    a = chunk_id("/data/a.txt", 0, "hello")
    assert a == chunk_id("/data/a.txt", 0, "hello")
    assert a != chunk_id("/data/a.txt", 1, "hello")
    assert a != chunk_id("/data/a.txt", 0, "hello!")
    assert a != chunk_id("/data/b.txt", 0, "hello")
    assert a != chunk_id("/data/a.txt", 0, "hello", {"lang": "en"})  # metadata is part of the content
    # the model is part of the id; a hub id and a local folder of one model are the same model
    four = chunk_id("/data/a.txt", 0, "hello", model="Qwen/Qwen3-Embedding-4B")
    assert four == chunk_id("/data/a.txt", 0, "hello", model="/models/Qwen3-Embedding-4B/")
    assert four.startswith(a + "-") and four != chunk_id("/data/a.txt", 0, "hello", model="Qwen/Qwen3-Embedding-0.6B")
    # SGLang started on the hub cache's snapshot folder serves the same model as on its hub id
    # (the last part of that path is the revision's hash: a restart that way re-embedded everything)
    snapshot = "/root/.cache/huggingface/hub/models--Qwen--Qwen3-Embedding-4B/snapshots/c54f2e6e"
    assert chunk_id("/data/a.txt", 0, "hello", model=snapshot) == four
    assert chunk_id("/data/a.txt", 0, "hello", model=snapshot.replace("/", "\\") + "\\") == four


def problems_of(paths: list[Path], **kwargs: Any) -> tuple[list[ingest_module.Unit], list[str]]:
    problems: list[Problem] = []
    units = list(iter_units(paths, problems, **kwargs))
    return units, [str(p) for p in problems]


def test_bad_inputs_are_reported_with_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "good.txt").write_text("Some text.")
    (tmp_path / "empty.md").write_text("  \n")
    (tmp_path / "latin1.txt").write_bytes("caf\u00e9".encode("latin-1"))
    (tmp_path / "records.jsonl").write_text(
        '{"id": "r1", "text": "ok", "metadata": {"tags": ["a"], "n": 1}}\n'
        "{not json}\n"
        '{"id": "r3"}\n'
        '{"id": "r4", "text": "   "}\n'
        '{"text": "no id"}\n'
    )
    (tmp_path / "image.png").write_bytes(b"\x89PNG")  # not a text type: not read from a directory
    units, problems = problems_of([tmp_path, tmp_path / "missing.txt"])
    assert sorted(u.text for u in units) == ["Some text.", "no id", "ok"]
    r1 = next(u for u in units if u.text == "ok")
    assert r1.source.endswith("records.jsonl#r1") and r1.metadata == {"tags": '["a"]', "n": 1, "record_id": "r1"}
    assert re.search(r"records\.jsonl#~[0-9a-f]{16}$", next(u for u in units if u.text == "no id").source)
    text = "\n".join(problems)
    assert "empty.md: empty file" in text
    assert "latin1.txt: not UTF-8 (unexpected end of data at line 1, byte 3)" in text
    assert "records.jsonl:2: malformed JSON" in text
    assert "records.jsonl:3: expected an object with a string 'text'" in text
    assert "records.jsonl:4: empty text" in text
    assert "missing.txt: not found" in text
    assert len(problems) == 6


def test_fail_mode_stops_at_the_first_problem(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text('{"text": "fine"}\n[1, 2]\n')
    with pytest.raises(IngestError, match=r"a.jsonl:2"):
        list(iter_units([tmp_path], [], on_error="fail"))


def test_record_ids_duplicates_are_reported_by_line_and_kept(tmp_path: Path) -> None:
    lines = [
        {"text": "no id on line 1"},  # used to become id 1 and collide with line 2
        {"id": 1, "text": "id one"},
        {"id": "x", "text": "first x"},
        {"id": None, "text": "null id a"},
        {"id": None, "text": "null id b"},  # several null ids: distinct records
        {"id": "x", "text": "second x"},
        {"id": "1", "text": "string one"},  # "1" and 1 are the same id
        {"text": "no id on line 1"},  # an identical id-less record
        {"id": 2.5, "text": "float id"},
        {"id": True, "text": "bool id"},
    ]
    (tmp_path / "r.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    units, problems = problems_of([tmp_path / "r.jsonl"])
    assert len(units) == 8  # every record with a valid id is kept: none silently dropped
    sources = [u.source.rsplit("#", 1)[1] for u in units]
    assert sources[1:3] == ["1", "x"] and sources[0].startswith("~") and sources[3] != sources[4]
    assert problems == [  # as read; duplicates once the file is read to its end
        f"{tmp_path / 'r.jsonl'}:9: 'id' must be a string or an integer, not float: skipped",
        f"{tmp_path / 'r.jsonl'}:10: 'id' must be a string or an integer, not bool: skipped",
        f"{tmp_path / 'r.jsonl'}:6: same record id as line 3: both are stored (identical chunks once)",
        f"{tmp_path / 'r.jsonl'}:7: same record id as line 2: both are stored (identical chunks once)",
        f"{tmp_path / 'r.jsonl'}:8: same record id as line 1: both are stored (identical chunks once)",
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"text": "a", "metadata": {"": 1}}', "metadata '': Chroma rejects"),
        ('{"text": "a", "metadata": {"#doc": 1}}', "metadata '#doc': Chroma rejects"),
        ('{"text": "a", "metadata": {"chroma:document": 1}}', "metadata 'chroma:document': Chroma rejects"),
        ('{"text": "a", "metadata": {"$in": 1}}', "metadata '$in': Chroma rejects"),
        ('{"text": "a", "metadata": {"n": NaN}}', "malformed JSON: NaN is not valid JSON"),
        ('{"text": "a", "metadata": {"n": -Infinity}}', "malformed JSON: -Infinity is not valid JSON"),
        ('{"text": "a", "metadata": {"n": 1e400}}', "metadata 'n': not a finite number"),
        ('{"text": "a", "metadata": {"n": [1e400]}}', "metadata 'n': holds a number that is not finite"),
        ('{"text": "a", "metadata": {"n": 1180591620717411303424}}', "metadata 'n': integer outside the 64-bit"),
        ('{"text": "a \\ud800 b"}', "text has a lone surrogate ('\\ud800') at character 2"),
        ('{"text": "a", "metadata": {"k": "\\udc80"}}', "metadata 'k': has a lone surrogate"),
        ('{"text": "a", "metadata": {"k\\udc80": 1}}', "metadata 'k\\udc80': the key has a lone surrogate"),
        ('{"text": "a", "metadata": {"source": "web"}}', "metadata 'source': the ingester sets 'source' itself"),
        ('{"text": "a", "metadata": {"chunk": 3}}', "metadata 'chunk': the ingester sets 'chunk' itself"),
        ('{"text": "a", "metadata": ["x"]}', "'metadata' must be an object, not list"),
        ('{"id": "\\ud800", "text": "a"}', "'id' has a lone surrogate"),
        ("[" * 100_000, "malformed JSON"),
    ],
)
def test_records_a_store_would_reject_or_change_are_reported_by_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text(
        '{"text": "fine", "metadata": {"ok": 1.5, "nested": {"a": [1, "b"]}, "none": null}}\n' + line + "\n"
    )
    units, problems = problems_of([path])
    assert [(u.text, u.metadata) for u in units] == [("fine", {"ok": 1.5, "nested": '{"a": [1, "b"]}'})]
    assert len(problems) == 1 and problems[0].startswith(f"{path}:2: {message}"), problems


def test_an_overlong_json_line_is_reported_and_the_next_one_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jsonl_module, "MAX_LINE_BYTES", 1000)
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"text": "y" * 5000}) + "\n" + json.dumps({"text": "after"}) + "\n")
    units, problems = problems_of([path])
    assert [u.text for u in units] == ["after"]
    assert problems == [f"{path}:1: line longer than 1,000 bytes: skipped"]


def test_each_file_is_read_once_however_it_is_reached(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "a.txt").write_text("alpha")
    (docs / "sub" / "b.md").write_text("beta")
    (docs / "link.txt").symlink_to(docs / "a.txt")  # a symlink to a file of the tree
    (docs / "sub" / "up").symlink_to(docs)  # a symlink loop
    (docs / "sub2").symlink_to(docs / "sub")  # a directory reached twice, not a loop
    units, problems = problems_of([docs, docs / "a.txt", docs / "a.txt", docs / "link.txt"])
    assert sorted(u.text for u in units) == ["alpha", "beta"]
    assert problems == [f"{docs / 'sub' / 'up'}: symlink loop (points to a directory above it): skipped"]


def test_odd_files_are_reported_not_read(tmp_path: Path) -> None:
    (tmp_path / "ok.txt").write_text("fine")
    bad_name = os.fsencode(tmp_path) + b"/caf\xe9.txt"
    with open(bad_name, "wb") as fh:
        fh.write(b"text under a Latin-1 name")
    (tmp_path / "gone.md").symlink_to(tmp_path / "nowhere.md")
    (tmp_path / "self.txt").symlink_to(tmp_path / "self.txt")
    os.mkfifo(tmp_path / "pipe.txt")  # reading it would block
    units, problems = problems_of([tmp_path, tmp_path / "photo.png"])
    assert [u.text for u in units] == ["fine"]
    assert sorted(problems) == sorted(
        [
            f"{tmp_path}/caf\\xe9.txt: file name is not valid UTF-8 (rename the file): skipped",
            f"{tmp_path}/gone.md: broken symlink: skipped",
            f"{tmp_path}/self.txt: symlink loop: skipped",
            f"{tmp_path}/pipe.txt: not a regular file: skipped",
            f"{tmp_path}/photo.png: not found",
        ]
    )
    (tmp_path / "photo.png").write_bytes(b"\x89PNG")
    _, problems = problems_of([tmp_path / "photo.png"])
    assert problems[0].startswith(f"{tmp_path}/photo.png: unsupported file type '.png' (ingest reads .jsonl, .markdown")


def test_a_directory_that_cannot_be_listed_is_reported_and_the_rest_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "open").mkdir()
    (tmp_path / "open" / "a.txt").write_text("readable")
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / "b.txt").write_text("hidden")
    scandir = os.scandir

    def guarded(path: Any) -> Any:  # chmod 000 does not stop root: refuse as the kernel would
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied")
        return scandir(path)

    monkeypatch.setattr(sources_module.os, "scandir", guarded)
    units, problems = problems_of([tmp_path])
    assert [u.text for u in units] == ["readable"]
    assert problems == [f"{tmp_path}/locked: cannot list directory: Permission denied: skipped"]


CHINESE = (
    "\u5411\u91cf\u68c0\u7d22\u628a\u95ee\u9898\u548c\u6587\u6863\u6620\u5c04\u5230\u540c\u4e00\u4e2a\u7a7a\u95f4\u3002"
    * 20
)


def test_encodings_explicit_lists_and_detection(tmp_path: Path) -> None:
    (tmp_path / "gbk.txt").write_bytes(CHINESE.encode("gbk"))
    (tmp_path / "latin1.md").write_bytes("Caf\u00e9 cr\u00e8me br\u00fbl\u00e9e, d\u00e9j\u00e0 vu.".encode("latin-1"))
    (tmp_path / "utf8.txt").write_text("\ufeffplain UTF-8 with a BOM", encoding="utf-8")
    units, problems = problems_of([tmp_path])
    assert [u.text for u in units] == ["plain UTF-8 with a BOM"]
    assert all("not UTF-8" in p and "--encoding utf-8,gb18030" in p for p in problems) and len(problems) == 2

    units, problems = problems_of([tmp_path], encoding="utf-8,gb18030,latin-1")
    texts = {Path(u.source).name: u.text for u in units}
    assert texts["gbk.txt"] == CHINESE and texts["latin1.md"].startswith("Caf\u00e9 cr\u00e8me") and not problems

    units, problems = problems_of([tmp_path / "gbk.txt"], encoding="auto")
    assert [u.text for u in units] == [CHINESE] and not problems


def test_bad_encoding_options_are_clear_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match="unknown encoding 'utf-9': use a Python codec name"):
        ingest_module.check_encodings("utf-8,utf-9")
    with pytest.raises(ConfigurationError, match="'rot13' is not a text encoding"):
        ingest_module.check_encodings("rot13")
    monkeypatch.setitem(__import__("sys").modules, "charset_normalizer", None)
    with pytest.raises(ConfigurationError, match=r"needs charset-normalizer: pip install 'qwen-sglang\[detect\]'"):
        ingest_module.check_encodings("auto")


def test_a_file_that_changes_while_being_read_is_reported_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It decoded when scanned, not when read (it changed in between, or the disk failed): the
    run goes on and the file's older chunks are kept."""
    (tmp_path / "changed.txt").write_bytes("caf\u00e9 au lait".encode("latin-1"))
    (tmp_path / "fine.txt").write_text("fine")
    monkeypatch.setattr(decoding_module, "_scan", lambda path, encoding: decoding_module.Scan(blank=False))
    units, problems = problems_of([tmp_path])
    assert [u.text for u in units] == ["fine"]
    assert len(problems) == 1 and "changed.txt: failed while being read" in problems[0]
    assert problems[0].endswith("its older chunks are kept")


def test_a_store_is_chosen_by_its_protocol_and_anything_else_names_the_wrapper(tmp_path: Path) -> None:
    """No request is sent: the destination is checked first."""
    from langchain_core.embeddings import DeterministicFakeEmbedding
    from langchain_core.vectorstores import InMemoryVectorStore

    from langchain_qwen_sglang import LangChainStoreTarget
    from qwen_sglang import EmbeddingClient
    from qwen_sglang.ingest import ChromaTarget, StoreTarget, ingest
    from qwen_sglang.ingest.targets import as_target

    client = EmbeddingClient(base_url="http://127.0.0.1:9/v1", model="Qwen3-Embedding-0.6B")
    (tmp_path / "a.txt").write_text("text")
    raw = InMemoryVectorStore(DeterministicFakeEmbedding(size=8))
    with pytest.raises(ConfigurationError, match=r"not dict \(a LangChain VectorStore: langchain_qwen_sglang"):
        ingest([tmp_path], client=client, store={}, show_progress=False)
    with pytest.raises(
        ConfigurationError, match=r"wrap it as store=langchain_qwen_sglang.LangChainStoreTarget\(store\)"
    ):
        ingest([tmp_path], client=client, store=raw, show_progress=False)
    with pytest.raises(ConfigurationError, match=r"store=qwen_sglang.integrations.chroma.open_collection"):
        ingest([tmp_path], client=client, persist_dir=tmp_path / "db", collection_name="d", show_progress=False)
    with pytest.raises(ConfigurationError, match="prune needs a store that can list its chunks"):
        ingest([tmp_path], client=client, store=LangChainStoreTarget(raw), prune=True, show_progress=False)
    assert client.prompt_tokens == 0 and not (tmp_path / "db").exists()

    wrapped = LangChainStoreTarget(raw)
    assert isinstance(wrapped, StoreTarget) and as_target(wrapped) is wrapped and wrapped.embeds_itself

    class Collection:  # what ChromaTarget needs of a chromadb collection
        def get(self, **kwargs: Any) -> Any: ...
        def upsert(self, **kwargs: Any) -> Any: ...
        def delete(self, **kwargs: Any) -> Any: ...

    assert isinstance(as_target(Collection()), ChromaTarget)


def test_a_langchain_store_that_cannot_look_ids_up_is_refused_when_wrapped(tmp_path: Path) -> None:
    """A ``VectorStore`` without ``get_by_ids`` (optional in LangChain's interface): the wrapper
    says what it lacks, before anything is read (the run died at its first batch on LangChain's
    bare ``NotImplementedError``)."""
    from langchain_core.vectorstores import VectorStore

    from langchain_qwen_sglang import LangChainStoreTarget

    class NoIdsStore(VectorStore):
        def add_texts(self, texts: Any, metadatas: Any = None, **kwargs: Any) -> list[str]:
            return []

        def similarity_search(self, query: str, k: int = 4, **kwargs: Any) -> list[Any]:
            return []

        @classmethod
        def from_texts(cls, texts: Any, embedding: Any, metadatas: Any = None, **kwargs: Any) -> NoIdsStore:
            return cls()

    with pytest.raises(ConfigurationError, match="NoIdsStore has no get_by_ids: ingest cannot tell"):
        LangChainStoreTarget(NoIdsStore())


class DictTarget:
    """A StoreTarget in a dict that embeds itself (so no request is sent); ``fail_writes`` makes
    every write raise, as a store that went away would."""

    embeds_itself = True
    lists_sources = True

    def __init__(self) -> None:
        self.rows: dict[str, tuple[str, dict[str, Any]]] = {}
        self.fail_writes = False

    def stored_width(self) -> int | None:
        return None

    def present(self, ids: list[str]) -> set[str]:
        return {i for i in ids if i in self.rows}

    def write(self, ids: list[str], texts: list[str], metadatas: list[dict[str, Any]], vectors: Any) -> None:
        if self.fail_writes:
            raise OSError("the store went away")
        self.rows.update(zip(ids, zip(texts, metadatas, strict=True), strict=True))

    def stored(self, source: str | None) -> Iterator[list[tuple[str, str]]]:
        yield [(i, m["source"]) for i, (_, m) in self.rows.items() if source is None or m["source"] == source]

    def delete(self, ids: list[str]) -> None:
        for i in ids:
            del self.rows[i]


def test_a_changed_file_keeps_its_old_chunks_until_the_new_ones_are_written(tmp_path: Path) -> None:
    """Stale chunks go only after the new ones are stored: a write that fails loses nothing."""
    from qwen_sglang import EmbeddingClient
    from qwen_sglang.ingest import ingest

    client = EmbeddingClient(base_url="http://127.0.0.1:9/v1", model="Qwen3-Embedding-0.6B")
    doc = tmp_path / "a.txt"
    doc.write_text("First version.")
    target = DictTarget()
    assert ingest([doc], client=client, store=target, show_progress=False).embedded == 1
    before = dict(target.rows)
    doc.write_text("Second version.")
    target.fail_writes = True
    with pytest.raises(OSError, match="went away"):
        ingest([doc], client=client, store=target, show_progress=False)
    assert target.rows == before
    target.fail_writes = False
    report = ingest([doc], client=client, store=target, show_progress=False)
    assert (report.embedded, report.deleted) == (1, 1)
    assert [text for text, _ in target.rows.values()] == ["Second version."]
