"""`qwen-sglang eval` against real servers: prefixes equal server-side `dimensions`, a real model
beats a random one, files and folders, the no-Matryoshka server, bad settings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qwen_sglang import EmbeddingClient
from qwen_sglang.errors import ConfigurationError
from qwen_sglang.eval import evaluate, load_demo_dataset, mrr_at_k, ndcg_at_k, recall_at_k
from qwen_sglang.integrations.chroma import bytes_per_vector
from qwen_sglang.servers import ManagedServer
from tests.conftest import BACKEND, TOL


def run_eval(server: ManagedServer, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "qwen_sglang", "eval", "--base-url", server.base_url, "--out", str(out)]
    cmd += ["--no-progress", "--latency-samples", "3", "--chroma-sample", "0", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)


def test_prefix_scores_equal_server_side_dimensions(server: ManagedServer) -> None:
    data = load_demo_dataset()
    with EmbeddingClient(base_url=server.base_url, model=server.model) as client:
        report = evaluate(
            data,
            client=client,
            dimensions=[128, 64, 32],
            latency_samples=2,
            chroma_sample=50,
            measure_storage=bytes_per_vector,
            show_progress=False,
        )
        check = report.matryoshka_check
        assert check["dimensions"] == 32 and check["server_side"] is True
        assert check["min_cosine"] > 1 - TOL

        # the same metrics from vectors the server truncated itself
        ids, texts = zip(*data.corpus(), strict=True)
        qids = list(data.scored_queries())
        for width in (64, 32):
            docs = client.embed(list(texts), kind="document", dimensions=width).vectors
            queries = client.embed([data.queries[q] for q in qids], kind="query", dimensions=width).vectors
            scores = queries @ docs.T
            ranked = [[ids[i] for i in np.lexsort((np.arange(len(ids)), -row))[:10]] for row in scores]
            row = next(r for r in report.rows if r.instruction == "default" and r.dimensions == width)
            tol = 1e-6 if BACKEND == "local" else 0.05
            pairs = list(zip(ranked, (data.qrels[q] for q in qids), strict=True))
            assert row.ndcg == pytest.approx(np.mean([ndcg_at_k(r, g) for r, g in pairs]), abs=tol)
            assert row.recall == pytest.approx(np.mean([recall_at_k(r, g) for r, g in pairs]), abs=tol)
            assert row.mrr == pytest.approx(np.mean([mrr_at_k(r, g) for r, g in pairs]), abs=tol)

    assert report.native_dim == 128 and report.n_corpus >= 80
    assert {(r.instruction, r.dimensions) for r in report.rows} == {
        (i, w) for i in ("default", "none") for w in (128, 64, 32)
    }
    assert all(r.chroma_mb_per_million and r.chroma_mb_per_million > r.dimensions * 4 for r in report.rows)
    assert all(r.query_ms_p50 > 0 and r.search_ms_per_query > 0 for r in report.rows)


def test_real_model_beats_random_weights_through_the_cli(
    minilm_server: ManagedServer, server: ManagedServer, tmp_path: Path
) -> None:
    # no --model: the client learns the served model (and that it takes no Qwen3 instruction)
    real = run_eval(minilm_server, tmp_path / "real", "--demo-data", "--instruction", "qa")
    assert real.returncode == 0, real.stderr
    assert "recommended:" in real.stdout and "all-MiniLM-L6-v2 (384-d)" in real.stdout
    assert "default for all-MiniLM-L6-v2 is no query instruction" in real.stdout
    rand = run_eval(server, tmp_path / "random", "--demo-data", "--no-plot")
    assert rand.returncode == 0, rand.stderr

    real_res = json.loads((tmp_path / "real" / "results.json").read_text())
    rand_res = json.loads((tmp_path / "random" / "results.json").read_text())
    real_best, rand_best = real_res["best"]["ndcg"], rand_res["best"]["ndcg"]
    assert real_best > 0.8, real.stdout
    assert real_best - rand_best > 0.4, (real_best, rand_best)
    # MiniLM was not trained with instructions: raw queries must do best at full width
    assert real_res["best"]["instruction"] == "none" and real_res["best"]["dimensions"] == 384

    rows = (tmp_path / "real" / "results.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * 5  # header + (none, qa) x (384, 256, 128, 64, 32): the default is none
    assert (tmp_path / "real" / "quality.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "random" / "quality.png").exists()


def test_beir_folder_float16_matrix_and_no_matryoshka_server(server_no_mrl: ManagedServer, tmp_path: Path) -> None:
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    docs = [f"Passage {i} about subject {i % 7} with detail {i * 3}." for i in range(30)]
    (beir / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": f"d{i}", "title": f"Title {i}", "text": t}) + "\n" for i, t in enumerate(docs))
    )
    (beir / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": f"q{i}", "text": f"subject {i} detail"}) + "\n" for i in range(6))
    )
    # q5 has only a zero judgement: it cannot be scored and must be counted apart
    (beir / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(5)) + "q5\td5\t0\n"
    )
    work = tmp_path / "work"
    out = run_eval(
        server_no_mrl,
        tmp_path / "out",
        "--beir",
        str(beir),
        "--model",
        server_no_mrl.model,
        "--dimensions",
        "128,32",
        "--dtype",
        "float16",
        "--work-dir",
        str(work),
        "--instruction",
        "Find the passage about the subject",
        "--no-plot",
    )
    assert out.returncode == 0, out.stderr
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["n_corpus"] == 30 and res["n_queries"] == 6 and res["n_scored_queries"] == 5
    assert set(res["instructions"]) == {"default", "none", "Find the passage abou..."}
    # this server rejects `dimensions`: the client truncated, exactly as the prefixes do
    assert res["matryoshka_check"]["server_side"] is False
    assert res["matryoshka_check"]["min_cosine"] > 1 - 1e-3  # float16 matrix
    assert (work / "corpus.mat").stat().st_size == 30 * 128 * 2
    assert "applied by the client" in out.stdout


def test_bad_settings_fail_before_any_embedding(server: ManagedServer, tmp_path: Path) -> None:
    data = load_demo_dataset()
    with EmbeddingClient(base_url=server.base_url, model=server.model, dimensions=64) as client:
        with pytest.raises(ConfigurationError, match="without `dimensions`"):
            evaluate(data, client=client, show_progress=False)
        assert client.prompt_tokens == 0
    with EmbeddingClient(base_url=server.base_url, model=server.model) as client:
        with pytest.raises(ConfigurationError, match="dtype"):
            evaluate(data, client=client, dtype="int8", show_progress=False)
        assert client.prompt_tokens == 0
    missing = run_eval(
        server, tmp_path / "o", "--queries", str(tmp_path / "nope.jsonl"), "--corpus", "c", "--qrels", "r"
    )
    assert missing.returncode == 1 and "queries file not found" in missing.stderr
    wide = run_eval(server, tmp_path / "o", "--demo-data", "--dimensions", "256", "--model", server.model)
    assert wide.returncode == 1 and "wider than the model's native width 128" in wide.stderr


def test_widths_above_the_served_model_are_left_out_with_a_note(minilm_server: ManagedServer, tmp_path: Path) -> None:
    # the README's line, on a server of a smaller model (384-d): 2560 and 1024 cannot be scored
    out = run_eval(minilm_server, tmp_path / "o", "--demo-data", "--dimensions", "2560,1024,256", "--no-plot")
    assert out.returncode == 0, out.stderr
    assert "note: left out dimensions 2560, 1024: wider than the 384-d vectors of all-MiniLM-L6-v2" in out.stdout
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    assert {row["dimensions"] for row in res["rows"]} == {256}
    assert any("left out dimensions 2560, 1024" in note for note in res["notes"])
