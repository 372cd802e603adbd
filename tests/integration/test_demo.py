"""The README's main job, `qwen-sglang demo`, end to end (real server, real Chroma)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from qwen_sglang.demo import DEMO_QUESTIONS, load_corpus


def test_corpus_is_bilingual_and_answers_every_demo_question() -> None:
    corpus = load_corpus()
    assert len(corpus) >= 80
    assert {r["lang"] for r in corpus} == {"en", "zh"}
    assert len({r["id"] for r in corpus}) == len(corpus)
    ids = {r["id"] for r in corpus}
    assert all(source in ids for _, source in DEMO_QUESTIONS)


def test_demo_cli_states_the_fallback_and_cites_the_right_sources(tmp_path: Path) -> None:
    env = dict(os.environ, HF_HUB_OFFLINE="1")  # deterministic: behave as if no hub is reachable
    persist = tmp_path / "chroma"
    cmd = [sys.executable, "-m", "qwen_sglang", "demo", "--backend", "local", "--persist-dir", str(persist)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    assert "NOTE: Qwen/Qwen3-Embedding-0.6B is not available here" in text
    assert "Falling back to all-MiniLM-L6-v2" in text
    for question, source in DEMO_QUESTIONS:
        block = text.split(f"Q: {question}", 1)[1]
        sources_line = next(line for line in block.splitlines() if line.startswith("Sources: "))
        assert sources_line.startswith(f"Sources: [{source}]"), sources_line
        assert "extractive" in block.splitlines()[1]
    # A second run on the same store neither duplicates nor loses anything.
    again = subprocess.run(
        cmd + ["--question", "What is the capital of France's famous tower?"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert again.returncode == 0, again.stderr
    import chromadb

    collection = chromadb.PersistentClient(path=str(persist)).get_collection("qwen_sglang_demo")
    assert collection.count() == len(load_corpus())
    assert "Sources: [eiffel]" in again.stdout


def test_explicit_model_that_does_not_exist_is_an_error_not_a_fallback(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "qwen_sglang", "demo", "--backend", "local", "--model", str(tmp_path / "missing")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 1
    assert "does not exist" in out.stderr and "Falling back" not in out.stdout
