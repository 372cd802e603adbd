"""The README's main job, `qwen-sglang demo`, end to end (real server, real Chroma)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from qwen_sglang.cli.demo import DEMO_QUESTIONS, load_corpus


def test_corpus_is_bilingual_and_answers_every_demo_question() -> None:
    corpus = load_corpus()
    assert len(corpus) >= 80
    assert {r["lang"] for r in corpus} == {"en", "zh"}
    assert len({r["id"] for r in corpus}) == len(corpus)
    ids = {r["id"] for r in corpus}
    assert all(source in ids for _, source in DEMO_QUESTIONS)


def run_demo(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    temp = tmp_path / "tmp"  # the demo's own temporary files go here, to be checked
    temp.mkdir(exist_ok=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TMPDIR=str(temp))  # deterministic: as if no hub is reachable
    cmd = [sys.executable, "-m", "qwen_sglang", "demo", "--backend", "local", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    return out


def left_behind(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "tmp").iterdir() if p.name.startswith("qwen-sglang"))


def test_demo_cli_states_the_fallback_and_cites_the_right_sources(tmp_path: Path) -> None:
    persist = tmp_path / "chroma"
    out = run_demo(tmp_path, "--persist-dir", str(persist), "--keep-logs")
    text = out.stdout
    assert "NOTE: Qwen/Qwen3-Embedding-0.6B is not available here" in text
    assert "Falling back to all-MiniLM-L6-v2" in text
    # the English-only fallback indexes what it can read, and says so
    english = load_corpus(["en"])
    assert "only the English passages are indexed" in text
    assert f"Indexed {len(english)} English passages" in text
    for question, source in DEMO_QUESTIONS:
        block = text.split(f"Q: {question}", 1)[1]
        sources_line = next(line for line in block.splitlines() if line.startswith("Sources: "))
        assert sources_line.startswith(f"Sources: [{source}]"), sources_line
        assert "[zh-" not in sources_line  # no off-topic passage it cannot read
        assert "extractive" in block.splitlines()[1]
    # kept on purpose: the log is named, and it is the server's
    log = Path(text.split("Server log kept at ", 1)[1].splitlines()[0])
    assert "ready to roll" in log.read_text() and left_behind(tmp_path) == [log.parent.name]
    shutil.rmtree(log.parent)
    # A second run on the same store neither duplicates nor loses anything, and leaves nothing behind.
    again = run_demo(
        tmp_path, "--persist-dir", str(persist), "--question", "What is the capital of France's famous tower?"
    )
    import chromadb

    collection = chromadb.PersistentClient(path=str(persist)).get_collection("qwen_sglang_demo")
    assert collection.count() == len(english)
    assert "Sources: [eiffel]" in again.stdout
    assert left_behind(tmp_path) == [] and "Server log kept" not in again.stdout


def test_demo_without_persist_dir_leaves_nothing_behind(tmp_path: Path) -> None:
    out = run_demo(tmp_path, "--question", "Why does bread dough rise?")
    assert "Sources: [bread]" in out.stdout
    directory = out.stdout.split("into Chroma at ", 1)[1].splitlines()[0]
    assert Path(directory).parent == tmp_path / "tmp" and not Path(directory).exists()
    assert left_behind(tmp_path) == []  # no Chroma directory, no server log


def test_explicit_model_that_does_not_exist_is_an_error_not_a_fallback(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "qwen_sglang", "demo", "--backend", "local", "--model", str(tmp_path / "missing")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 1
    assert "does not exist" in out.stderr and "Falling back" not in out.stdout
