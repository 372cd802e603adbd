"""Ingestion into a real Chroma through a real server: kill, resume, rerun, change."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qwen_sglang import EmbeddingClient
from qwen_sglang.chroma import QwenSGLangEmbeddingFunction
from qwen_sglang.ingest import chunk_id, ingest
from qwen_sglang.server import ManagedServer
from tests.conftest import TOL


def collection(persist: Path, name: str = "docs"):  # type: ignore[no-untyped-def]
    import chromadb

    return chromadb.PersistentClient(path=str(persist)).get_or_create_collection(name)


def write_records(path: Path, n: int) -> list[str]:
    """n short JSON-lines records; returns the chunk ids the ingester must produce."""
    ids = []
    with path.open("w") as fh:
        for i in range(n):
            text = f"Record {i}: a short document about topic {i % 37} and item {i * 7 % 101}."
            fh.write(json.dumps({"id": f"r{i}", "text": text, "metadata": {"n": i}}) + "\n")
            ids.append(chunk_id(f"{path.resolve().as_posix()}#r{i}", 0, text))
    return ids


def ingest_cmd(server: ManagedServer, data: Path, persist: Path, collection: str = "docs", *extra: str) -> list[str]:
    """The `qwen-sglang ingest` command line against the test server."""
    return [
        sys.executable,
        "-m",
        "qwen_sglang",
        "ingest",
        str(data),
        "--collection",
        collection,
        "--persist-dir",
        str(persist),
        "--base-url",
        server.base_url,
        "--model",
        "Qwen3-Embedding-test",
        *extra,
    ]


def run_ingest(
    server: ManagedServer, data: Path, persist: Path, collection: str = "docs", *extra: str
) -> subprocess.CompletedProcess[str]:
    cmd = ingest_cmd(server, data, persist, collection, *extra)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)


KILL_RUN = ("--batch", "100", "--max-concurrency", "2")


def test_kill_midway_then_rerun_gives_exactly_the_records(server: ManagedServer, tmp_path: Path) -> None:
    data = tmp_path / "records.jsonl"
    expected = write_records(data, 5000)
    persist = tmp_path / "chroma"
    proc = subprocess.Popen(
        ingest_cmd(server, data, persist, "docs", *KILL_RUN),
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stderr is not None
    seen = b""
    while True:  # wait until the progress bar shows a good part done, then SIGKILL
        ch = proc.stderr.read(64)
        if not ch:
            break
        seen += ch
        counts = [int(x) for x in re.findall(rb"Ingesting: (?:\s*\d+%\|[^|]*\| )?(\d+)", seen)]
        if counts and counts[-1] >= 1000:
            os.killpg(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    partial = collection(persist).count()
    assert 0 < partial < 5000
    before = collection(persist).get(include=["embeddings"], limit=50)

    done = run_ingest(server, data, persist, "docs", *KILL_RUN)
    assert done.returncode == 0, done.stderr
    assert f"{5000 - partial} embedded, {partial} already stored" in done.stdout
    col = collection(persist)
    stored = col.get(include=[])["ids"]
    assert len(stored) == 5000 and set(stored) == set(expected)  # 0 duplicates, 0 missing
    # what was written before the crash is intact: equal to a fresh embedding of the same text
    again = col.get(ids=before["ids"], include=["embeddings", "documents"])
    fresh = EmbeddingClient(base_url=server.base_url, model="x").embed(again["documents"]).vectors
    order = {cid: k for k, cid in enumerate(before["ids"])}
    old = np.array([before["embeddings"][order[cid]] for cid in again["ids"]])
    np.testing.assert_allclose(old, fresh, atol=TOL)

    third = run_ingest(server, data, persist, "docs", *KILL_RUN)
    assert "0 embedded, 5000 already stored" in third.stdout
    assert collection(persist).count() == 5000


def test_changed_file_replaces_its_chunks_and_nothing_else(server: ManagedServer, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    a, b = docs / "a.md", docs / "b.txt"
    a.write_text("Alpha one is here.\n\nAlpha two is here.\n\nAlpha three is here.")
    b.write_text("Beta is unchanged.")
    client = EmbeddingClient(base_url=server.base_url, model="x")
    col = collection(tmp_path / "chroma")
    first = ingest([docs], client=client, collection=col, max_chars=20, show_progress=False)
    assert (first.chunks, first.embedded, first.deleted) == (4, 4, 0)
    a.write_text("Alpha one is here.\n\nAlpha TWO changed.")
    second = ingest([docs], client=client, collection=col, max_chars=20, show_progress=False)
    assert (second.chunks, second.embedded, second.skipped, second.deleted) == (3, 1, 2, 2)
    got = col.get(include=["documents", "metadatas"])
    assert sorted(got["documents"]) == ["Alpha TWO changed.", "Alpha one is here.", "Beta is unchanged."]
    assert {m["source"] for m in got["metadatas"]} == {a.resolve().as_posix(), b.resolve().as_posix()}


def test_problems_are_reported_and_the_rest_ingested(server: ManagedServer, tmp_path: Path) -> None:
    data = tmp_path / "in"
    data.mkdir()
    (data / "ok.txt").write_text("fine text")
    (data / "bad.jsonl").write_text('{"text": "one"}\nnot json\n')
    out = run_ingest(server, data, tmp_path / "db", "col1", "--no-progress")
    assert out.returncode == 0, out.stderr
    assert "bad.jsonl:2: malformed JSON" in out.stderr
    assert "2 documents, 2 chunks: 2 embedded" in out.stdout and "1 problems" in out.stdout
    failing = run_ingest(server, data, tmp_path / "db", "col2", "--on-error", "fail", "--no-progress")
    assert failing.returncode == 1 and "bad.jsonl:2" in failing.stderr


def test_a_collection_of_another_width_is_refused(server: ManagedServer, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("some text")
    col = collection(tmp_path / "db")
    ingest(
        [tmp_path / "a.txt"],
        client=EmbeddingClient(base_url=server.base_url, model="x"),
        collection=col,
        show_progress=False,
    )
    (tmp_path / "b.txt").write_text("other text")
    narrow = EmbeddingClient(base_url=server.base_url, model="x", dimensions=64)
    with pytest.raises(ValueError, match="128-d vectors but this run produces 64-d"):
        ingest([tmp_path / "b.txt"], client=narrow, collection=col, show_progress=False)
    assert col.count() == 1


def test_chroma_embedding_function_instructs_queries_only(server: ManagedServer, tmp_path: Path) -> None:
    import chromadb

    ef = QwenSGLangEmbeddingFunction(base_url=server.base_url, model="Qwen3-Embedding-test")
    col = chromadb.PersistentClient(path=str(tmp_path / "db")).get_or_create_collection(
        "qwen-ef", embedding_function=ef, configuration={"hnsw": {"space": "cosine"}}
    )
    col.add(ids=["a", "b"], documents=["SGLang serves embeddings.", "Bread rises with yeast."])
    stored = col.get(ids=["a"], include=["embeddings"])["embeddings"][0]
    client = ef.client
    np.testing.assert_allclose(stored, client.embed_documents(["SGLang serves embeddings."])[0], atol=TOL)
    q = ef.embed_query(["what serves embeddings?"])[0]
    np.testing.assert_allclose(q, client.embed_query("what serves embeddings?"), atol=TOL)
    # Chroma's query path went through embed_query: its distances are 1 - cos(instructed query, doc)
    res = col.query(query_texts=["what serves embeddings?"], n_results=2, include=["distances"])
    docs = {
        i: np.array(client.embed_documents([t])[0])
        for i, t in (("a", "SGLang serves embeddings."), ("b", "Bread rises with yeast."))
    }
    for cid, dist in zip(res["ids"][0], res["distances"][0], strict=True):
        assert dist == pytest.approx(1 - float(np.dot(q, docs[cid])), abs=1e-4)
    assert QwenSGLangEmbeddingFunction.build_from_config(ef.get_config()).client.base_url == server.base_url


def test_bad_collection_name_is_one_clear_line(server: ManagedServer, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("x")
    out = run_ingest(server, tmp_path / "a.txt", tmp_path / "db", "c", "--no-progress")
    assert out.returncode == 1
    assert out.stderr.startswith("error: could not open Chroma collection 'c'") and "Traceback" not in out.stderr


def test_llama_index_vector_store_is_resumable_and_replaces_changed_files(
    server: ManagedServer, tmp_path: Path
) -> None:
    import chromadb
    from llama_index.vector_stores.chroma import ChromaVectorStore

    data = tmp_path / "data.jsonl"
    ids = write_records(data, 300)
    note = tmp_path / "note.md"
    note.write_text("First version of the note. " * 5)
    chroma = chromadb.PersistentClient(path=str(tmp_path / "db")).get_or_create_collection("llama-docs")
    store = ChromaVectorStore(chroma_collection=chroma)
    client = EmbeddingClient(base_url=server.base_url, model="x")

    first = ingest([data, note], client=client, store=store, show_progress=False)
    assert first.embedded == 301 and chroma.count() == 301
    assert set(ids) <= set(chroma.get(include=[])["ids"])
    stored = chroma.get(ids=ids[:3], include=["embeddings"])
    order = [stored["ids"].index(i) for i in ids[:3]]
    texts = [json.loads(line)["text"] for line in data.read_text().splitlines()[:3]]
    np.testing.assert_allclose(np.array(stored["embeddings"])[order], client.embed_documents(texts), atol=TOL)

    again = ingest([data, note], client=client, store=store, show_progress=False)
    assert again.embedded == 0 and again.skipped == 301 and chroma.count() == 301

    note.write_text("Second version, shorter.")
    changed = ingest([data, note], client=client, store=store, show_progress=False)
    assert changed.embedded == 1 and changed.deleted == 1 and chroma.count() == 301
    assert "Second version" in str(chroma.get(where={"source": str(note.resolve().as_posix())})["documents"])


def test_langchain_vector_store_is_resumable(
    server: ManagedServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from langchain_core.vectorstores import InMemoryVectorStore

    from langchain_qwen_sglang import QwenSGLangEmbeddings

    data = tmp_path / "data.jsonl"
    ids = write_records(data, 120)
    embeddings = QwenSGLangEmbeddings(base_url=server.base_url, model="x")
    store = InMemoryVectorStore(embeddings)  # no add_embeddings: the store embeds with our class
    client = EmbeddingClient(base_url=server.base_url, model="x")

    with caplog.at_level("WARNING", logger="qwen_sglang.ingest"):
        first = ingest([data], client=client, store=store, show_progress=False)
    assert first.embedded == 120 and sorted(store.store) == sorted(ids)
    assert "old chunks of changed files are not removed" in caplog.text
    again = ingest([data], client=client, store=store, show_progress=False)
    assert again.embedded == 0 and again.skipped == 120 and len(store.store) == 120
    hit = store.similarity_search_by_vector(client.embed_documents([store.store[ids[7]]["text"]])[0], k=1)[0]
    assert hit.id == ids[7]


def test_unknown_store_is_refused(server: ManagedServer, tmp_path: Path) -> None:
    from qwen_sglang.errors import ConfigurationError

    client = EmbeddingClient(base_url=server.base_url, model="x")
    with pytest.raises(ConfigurationError, match="LangChain VectorStore or a LlamaIndex vector store, not dict"):
        ingest([tmp_path], client=client, store={}, show_progress=False)
