"""Chunking, ids and input problems of the ingester (no server)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qwen_sglang.ingest import IngestError, Problem, chunk_id, iter_units, split_text


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


def test_paragraphs_stay_whole_when_they_fit() -> None:
    text = "First paragraph here.\n\nSecond one.\n\nThird."
    assert split_text(text, 1000) == [text]
    assert split_text(text, 25) == ["First paragraph here.", "Second one.\n\nThird."]


def test_chunk_ids_are_deterministic_and_content_addressed() -> None:
    a = chunk_id("/data/a.txt", 0, "hello")
    assert a == chunk_id("/data/a.txt", 0, "hello")
    assert a != chunk_id("/data/a.txt", 1, "hello")
    assert a != chunk_id("/data/a.txt", 0, "hello!")
    assert a != chunk_id("/data/b.txt", 0, "hello")


def test_bad_inputs_are_reported_with_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "good.txt").write_text("Some text.")
    (tmp_path / "empty.md").write_text("  \n")
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))
    (tmp_path / "records.jsonl").write_text(
        '{"id": "r1", "text": "ok", "metadata": {"tags": ["a"], "n": 1}}\n'
        "{not json}\n"
        '{"id": "r3"}\n'
        '{"id": "r4", "text": "   "}\n'
        '{"text": "no id"}\n'
    )
    (tmp_path / "image.png").write_bytes(b"\x89PNG")  # not a text type: not read from a directory
    problems: list[Problem] = []
    units = list(iter_units([tmp_path, tmp_path / "missing.txt"], problems))
    assert sorted(u.text for u in units) == ["Some text.", "no id", "ok"]
    r1 = next(u for u in units if u.text == "ok")
    assert r1.source.endswith("records.jsonl#r1") and r1.metadata == {"tags": '["a"]', "n": 1, "record_id": "r1"}
    assert next(u for u in units if u.text == "no id").source.endswith("#5")  # line number as id
    text = "\n".join(map(str, problems))
    assert "empty.md: empty file" in text
    assert "latin1.txt: not UTF-8" in text
    assert "records.jsonl:2: malformed JSON" in text
    assert "records.jsonl:3: expected an object with a string 'text'" in text
    assert "records.jsonl:4: empty text" in text
    assert "missing.txt: unreadable" in text
    assert len(problems) == 6


def test_fail_mode_stops_at_the_first_problem(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text('{"text": "fine"}\n[1, 2]\n')
    with pytest.raises(IngestError, match=r"a.jsonl:2"):
        list(iter_units([tmp_path], [], on_error="fail"))
