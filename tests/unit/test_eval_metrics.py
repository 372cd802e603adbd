"""`qwen-sglang eval` pieces that need no server: metrics, readers, the chunked top-k."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qwen_sglang.errors import ConfigurationError, InvalidInputError
from qwen_sglang.eval import (
    EvalReport,
    EvalRow,
    Instruction,
    load_beir,
    load_demo_dataset,
    mrr_at_k,
    ndcg_at_k,
    parse_widths,
    read_qrels,
    recall_at_k,
)
from qwen_sglang.eval.run import _widths
from qwen_sglang.eval.search import exact_search, top_k
from qwen_sglang.instructions import TASKS


def test_ndcg_matches_a_hand_computed_value() -> None:
    # relevant: d1 (2), d3 (1); ranked d2, d1, d3
    # DCG = 0/log2(2) + 2/log2(3) + 1/log2(4) = 1.261860 + 0.5; IDCG = 2/1 + 1/log2(3) = 2.630930 -> 0.669672
    ranked = ["d2", "d1", "d3", "d4"]
    rel = {"d1": 2, "d3": 1}
    expected = (2 / math.log2(3) + 1 / 2) / (2 + 1 / math.log2(3))
    assert ndcg_at_k(ranked, rel, 10) == pytest.approx(expected)
    assert ndcg_at_k(ranked, rel, 10) == pytest.approx(0.669672, abs=1e-6)
    assert ndcg_at_k(["d1", "d3"], rel, 10) == pytest.approx(1.0)
    assert ndcg_at_k(["x", "y"], rel, 10) == 0.0
    # the cut-off drops d3 (rank 3) when k = 2
    assert ndcg_at_k(ranked, rel, 2) == pytest.approx((2 / math.log2(3)) / (2 + 1 / math.log2(3)))


def test_recall_and_mrr_match_hand_computed_values() -> None:
    rel = {"a": 1, "b": 1, "c": 0, "z": 1}
    ranked = ["c", "x", "b", "a"]
    assert recall_at_k(ranked, rel, 10) == pytest.approx(2 / 3)
    assert recall_at_k(ranked, rel, 3) == pytest.approx(1 / 3)
    assert mrr_at_k(ranked, rel, 10) == pytest.approx(1 / 3)  # "c" has relevance 0: not a hit
    assert mrr_at_k(ranked, rel, 2) == 0.0
    assert recall_at_k(ranked, {"c": 0}, 10) == 0.0


def test_qrels_reader_takes_beir_with_header_and_trec(tmp_path: Path) -> None:
    beir = tmp_path / "test.tsv"
    beir.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t2\nq2\td9\t0\n")
    assert read_qrels(beir) == {"q1": {"d1": 1, "d2": 2}, "q2": {"d9": 0}}
    trec = tmp_path / "qrels.txt"
    trec.write_text("q1 0 d1 1\nq3 0 d4 3\n")
    assert read_qrels(trec) == {"q1": {"d1": 1}, "q3": {"d4": 3}}
    bad = tmp_path / "bad.tsv"
    bad.write_text("q1\td1\t1\nq2\td2\n")
    with pytest.raises(InvalidInputError, match=r"bad.tsv:2: expected 3"):
        read_qrels(bad)
    nonnum = tmp_path / "nonnum.tsv"
    nonnum.write_text("q1\td1\t1\nq2\td2\thigh\n")
    with pytest.raises(InvalidInputError, match=r"nonnum.tsv:2: relevance 'high'"):
        read_qrels(nonnum)


def test_beir_folder_reader_reports_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text('{"_id": "d1", "title": "T", "text": "body"}\n{"_id": "d2"}\n')
    (tmp_path / "queries.jsonl").write_text('{"_id": "q1", "text": "question"}\n')
    (tmp_path / "qrels" / "test.tsv").write_text("q1\td1\t1\n")
    data = load_beir(tmp_path)
    assert data.queries == {"q1": "question"}
    corpus = data.corpus()
    assert next(corpus) == ("d1", "T body")  # BEIR's title + " " + text
    with pytest.raises(InvalidInputError, match=r"corpus.jsonl:2: a record needs"):
        next(corpus)
    with pytest.raises(InvalidInputError, match="qrels file not found"):
        load_beir(tmp_path, split="dev")


def test_shipped_evaluation_set_is_consistent() -> None:
    data = load_demo_dataset()
    ids = {rid for rid, _ in data.corpus()}
    assert len(data.queries) >= 60
    assert set(data.scored_queries()) == set(data.queries)
    judged = {doc for rels in data.qrels.values() for doc in rels}
    assert judged <= ids, judged - ids
    assert any("\u4e00" <= ch <= "\u9fff" for q in data.queries.values() for ch in q)  # Chinese queries too


def test_instruction_variants_and_widths() -> None:
    assert Instruction.parse("none", "T") == Instruction("none", None)
    assert Instruction.parse("default", "T") == Instruction("default", "T")
    assert Instruction.parse("qa", "T") == Instruction("qa", f"Instruct: {TASKS['qa']}\nQuery:")
    long = Instruction.parse("Given a scientific claim, retrieve documents that support or refute it", "T")
    assert long.prompt is not None and long.prompt.startswith("Instruct: Given a scientific claim")
    assert len(long.label) == 24
    assert long.apply(["q"]) == [long.prompt + "q"] and Instruction("none", None).apply(["q"]) == ["q"]
    assert _widths(None, 2560, 32) == ([2560, 2048, 1024, 768, 512, 384, 256, 128, 64, 32], [])
    assert _widths(None, 128, 32) == ([128, 64, 32], [])
    assert _widths([64, 128, 64], 128, 32) == ([128, 64], [])
    # widths above the native one are left out (and reported), unless nothing is left
    assert _widths([2560, 1024, 256, 64], 384, 1) == ([256, 64], [2560, 1024])
    with pytest.raises(ConfigurationError, match="all wider than the model's native width 128"):
        _widths([256], 128, 32)
    with pytest.raises(ConfigurationError, match="positive ints"):
        _widths([0], 128, 32)
    assert parse_widths("1024, 256,64") == [1024, 256, 64]
    with pytest.raises(ConfigurationError, match="comma-separated integers"):
        parse_widths("1024;256")


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=700),
    n_q=st.integers(min_value=1, max_value=6),
    k=st.integers(min_value=1, max_value=12),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_chunked_search_equals_brute_force(
    tmp_path_factory: pytest.TempPathFactory, n: int, n_q: int, k: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    corpus = rng.standard_normal((n, 16)).astype(np.float32)
    corpus[rng.integers(0, n, size=n // 5)] = corpus[0]  # exact ties must break towards the lower index
    path = tmp_path_factory.mktemp("m") / "c.mat"
    matrix = np.memmap(path, dtype="float32", mode="w+", shape=corpus.shape)
    matrix[:] = corpus
    queries = rng.standard_normal((n_q, 16)).astype(np.float32)
    ranked, _ = exact_search(matrix, {"q": queries}, [16, 4], k)
    for w in (16, 4):
        c = corpus[:, :w] / np.linalg.norm(corpus[:, :w], axis=1, keepdims=True)
        q = queries[:, :w] / np.linalg.norm(queries[:, :w], axis=1, keepdims=True)
        scores = q @ c.T
        for row in range(n_q):
            expected = sorted(range(n), key=lambda i: (-scores[row, i], i))[: min(k, n)]
            got = ranked[("q", w)][row].tolist()
            # equal scores up to float rounding may swap; the score sequence must match exactly
            np.testing.assert_allclose(scores[row, got], scores[row, expected], rtol=0, atol=1e-5)


@pytest.mark.parametrize("k", [1, 3, 7])
def test_exact_ties_go_to_the_lower_corpus_index(tmp_path: Path, k: int) -> None:
    """Equal vectors score exactly alike: the ranking keeps the lowest ids, inside a chunk (where
    a partial sort picks any of the tied ones) and when chunks are merged."""
    rng = np.random.default_rng(7)
    corpus = rng.standard_normal((700, 8)).astype(np.float32)
    twins = [5, 40, 300, 301, 511, 512, 650]  # the best vector, seven times
    corpus[twins] = np.abs(corpus[0]) + 3
    matrix = np.memmap(tmp_path / "c.mat", dtype="float32", mode="w+", shape=corpus.shape)
    matrix[:] = corpus
    query = (np.abs(corpus[0]) + 3)[None, :]
    ranked, _ = exact_search(matrix, {"q": query}, [8], k)
    assert ranked[("q", 8)][0].tolist() == twins[:k]
    # and the merge alone: equal scores from two chunks keep the lower indices, in order
    scores = np.zeros((1, 10), np.float32)
    best_s, best_i = top_k(scores, 100, np.zeros((1, 3), np.float32), np.array([[7, 8, 9]], np.int64), 4)
    assert best_i.tolist() == [[7, 8, 9, 100]] and best_s.tolist() == [[0, 0, 0, 0]]


def _row(label: str, dims: int, ndcg: float) -> EvalRow:
    return EvalRow(label, dims, ndcg, ndcg, ndcg, dims * 4.0, dims * 2.0, None, 1.0, 2.0, 0.01)


def test_recommendation_is_the_smallest_width_within_tolerance() -> None:
    rows = [
        _row("default", 1024, 0.70),
        _row("default", 512, 0.695),
        _row("default", 256, 0.687),
        _row("none", 1024, 0.66),
        _row("none", 128, 0.69),
    ]
    report = EvalReport(rows, 10, "t", "m", "u", 1024, 10, 5, 5, {"default": "T", "none": None}, 1.0, 100)
    assert report.best().dimensions == 1024 and report.best().instruction == "default"
    assert report.recommended().dimensions == 256  # 0.687 >= 0.70 * 0.98 = 0.686; "none" rows are another instruction
    report.tolerance = 0.01
    assert report.recommended().dimensions == 512
    csv_lines = report.to_csv().splitlines()
    assert csv_lines[0].startswith("instruction,dimensions,ndcg") and len(csv_lines) == 6
    assert "<- recommended" in report.table().splitlines()[3]
