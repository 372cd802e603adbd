"""Ingestion into a real Chroma through a real server: kill, resume, rerun, change."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from qwen_sglang import ConfigurationError, EmbeddingClient
from qwen_sglang.ingest import chunk_id, ingest
from qwen_sglang.integrations.chroma import QwenSGLangEmbeddingFunction
from qwen_sglang.servers import ManagedServer
from tests.conftest import TOL, make_server


def collection(persist: Path, name: str = "docs"):  # type: ignore[no-untyped-def]
    import chromadb

    return chromadb.PersistentClient(path=str(persist)).get_or_create_collection(name)


def write_records(path: Path, n: int, model: str | None = "Qwen3-Embedding-test") -> list[str]:
    """n short JSON-lines records; returns the chunk ids the ingester must produce for ``model``'s
    vectors (``None``: a store that embeds the texts itself)."""
    ids = []
    with path.open("w") as fh:
        for i in range(n):
            text = f"Record {i}: a short document about topic {i % 37} and item {i * 7 % 101}."
            fh.write(json.dumps({"id": f"r{i}", "text": text, "metadata": {"n": i}}) + "\n")
            source, metadata = f"{path.resolve().as_posix()}#r{i}", {"n": i, "record_id": f"r{i}"}
            ids.append(chunk_id(source, 0, text, metadata, model=model))
    return ids


def ingest_cmd(
    server: ManagedServer, data: Path | list[Path], persist: Path, collection: str = "docs", *extra: str
) -> list[str]:
    """The `qwen-sglang ingest` command line against the test server."""
    return [
        sys.executable,
        "-m",
        "qwen_sglang",
        "ingest",
        *map(str, data if isinstance(data, list) else [data]),
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
    server: ManagedServer, data: Path | list[Path], persist: Path, collection: str = "docs", *extra: str
) -> subprocess.CompletedProcess[str]:
    cmd = ingest_cmd(server, data, persist, collection, *extra)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)


KILL_RUN = ("--chunks-per-write", "100", "--max-concurrency", "2")


def wait_for_progress(proc: subprocess.Popen[bytes], embedded: int) -> bytes:
    """Read the progress bar on stderr until it shows ``embedded`` chunks embedded (or EOF)."""
    assert proc.stderr is not None
    seen = b""
    while chunk := proc.stderr.read1(4096):  # type: ignore[attr-defined]
        seen += chunk
        counts = [int(x) for x in re.findall(rb"embedded=(\d+)", seen)]
        if counts and counts[-1] >= embedded:
            break
    return seen


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
    wait_for_progress(proc, 1000)  # a good part done, then SIGKILL
    os.killpg(proc.pid, signal.SIGKILL)
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
    fresh = EmbeddingClient(base_url=server.base_url).embed(again["documents"]).vectors
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
    client = EmbeddingClient(base_url=server.base_url)
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
    assert out.returncode == 3, out.stderr  # done, with problems
    assert "bad.jsonl:2: malformed JSON" in out.stderr and "exit status 3 (--allow-problems: 0)" in out.stderr
    assert "2 documents, 2 chunks: 2 embedded" in out.stdout and "1 problems" in out.stdout
    relaxed = run_ingest(server, data, tmp_path / "db", "col1", "--no-progress", "--allow-problems")
    assert relaxed.returncode == 0 and "0 embedded, 2 already stored" in relaxed.stdout
    failing = run_ingest(server, data, tmp_path / "db", "col2", "--on-error", "fail", "--no-progress")
    assert failing.returncode == 1 and "bad.jsonl:2" in failing.stderr


def test_a_collection_of_another_width_is_refused(server: ManagedServer, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("some text")
    col = collection(tmp_path / "db")
    ingest(
        [tmp_path / "a.txt"],
        client=EmbeddingClient(base_url=server.base_url),
        collection=col,
        show_progress=False,
    )
    (tmp_path / "b.txt").write_text("other text")
    narrow = EmbeddingClient(base_url=server.base_url, dimensions=64)
    with pytest.raises(ValueError, match="128-d vectors but this run produces 64-d"):
        ingest([tmp_path / "b.txt"], client=narrow, collection=col, show_progress=False)
    assert col.count() == 1


def test_a_rerun_with_other_dimensions_is_refused_before_embedding(server: ManagedServer, tmp_path: Path) -> None:
    """A rerun asking for a width the collection's vectors do not have is refused before any text
    is embedded: with nothing changed it used to succeed (every chunk "already stored", the user
    believing the collection now 64-d), and with a new file it failed only after embedding it."""
    data, persist = tmp_path / "data", tmp_path / "db"
    data.mkdir()
    (data / "a.txt").write_text("some text")
    assert run_ingest(server, data, persist).returncode == 0
    again = run_ingest(server, data, persist, "docs", "--dimensions", "64", "--no-progress")
    assert again.returncode == 1 and "holds 128-d vectors but this run produces 64-d" in again.stderr
    (data / "b.txt").write_text("other text")
    sent: list[str] = []
    http = httpx.Client(event_hooks={"request": [lambda request: sent.append(request.url.path)]})
    narrow = EmbeddingClient(base_url=server.base_url, dimensions=64, http_client=http)
    with pytest.raises(ConfigurationError, match="128-d vectors but this run produces 64-d"):
        ingest([data], client=narrow, store=collection(persist), show_progress=False)
    assert not any(path.endswith("/embeddings") for path in sent)
    assert collection(persist).count() == 1


def test_a_rerun_with_another_model_of_the_same_width_replaces_every_vector(
    server: ManagedServer, tmp_path: Path
) -> None:
    """Chunk ids carry the model: a rerun embedding with another model of the same width re-embeds
    every chunk and deletes the first model's (every chunk counted as already stored: the first
    model's vectors stayed, searched with the second model's queries)."""
    from qwen_sglang.testing.models import build_qwen3_embedding_model

    data, persist = tmp_path / "data", tmp_path / "db"
    data.mkdir()
    (data / "a.txt").write_text("the first file, about routers")
    (data / "b.txt").write_text("the second file, about rerankers")
    first = ingest(
        [data], client=EmbeddingClient(base_url=server.base_url), store=collection(persist), show_progress=False
    )
    assert first.embedded == 2
    other_dir = build_qwen3_embedding_model(tmp_path / "Other-Embedding-test", shape="small", seed=1)
    with make_server(other_dir) as other:
        client = EmbeddingClient(base_url=other.base_url)
        report = ingest([data], client=client, store=collection(persist), show_progress=False)
        assert (report.embedded, report.skipped, report.deleted) == (2, 0, 2)
        got = collection(persist).get(include=["embeddings", "documents"])
        assert len(got["ids"]) == 2
        np.testing.assert_allclose(got["embeddings"], client.embed_documents(got["documents"]), atol=TOL)
        again = ingest([data], client=client, store=collection(persist), show_progress=False)
        assert (again.embedded, again.skipped, again.deleted) == (0, 2, 0)


def test_a_write_larger_than_chromas_batch_limit_is_stored_whole(tmp_path: Path) -> None:
    """``--chunks-per-write`` above Chroma's ``max_batch_size`` (5,461): the chunks are written in
    pages (Chroma refused the upsert after every chunk of it had been embedded, on every rerun)."""
    import chromadb

    from qwen_sglang.ingest import ChromaTarget

    client = chromadb.PersistentClient(path=str(tmp_path / "db"))
    col = client.get_or_create_collection("docs")
    n = client.get_max_batch_size() + 100
    ids = [f"c{i}" for i in range(n)]
    vectors = np.random.default_rng(0).random((n, 8), dtype=np.float32)
    ChromaTarget(col).write(ids, [f"text {i}" for i in ids], [{"chunk": i} for i in range(n)], vectors)
    assert col.count() == n
    got = col.get(ids=[ids[0], ids[-1]], include=["embeddings", "documents"])
    assert sorted(got["documents"]) == sorted([f"text {ids[0]}", f"text {ids[-1]}"])


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
    rebuilt = QwenSGLangEmbeddingFunction.build_from_config(ef.get_config())
    assert rebuilt.client.base_url == server.base_url and rebuilt.client.settings.model == "Qwen3-Embedding-test"
    # settings left unset stay unset (learned from the server again), not frozen to the defaults
    assert set(ef.get_config()) == {"base_url", "model"}


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

    from llama_index_qwen_sglang import LlamaIndexStoreTarget

    data = tmp_path / "data.jsonl"
    ids = write_records(data, 300)
    note = tmp_path / "note.md"
    note.write_text("First version of the note. " * 5)
    chroma = chromadb.PersistentClient(path=str(tmp_path / "db")).get_or_create_collection("llama-docs")
    store = LlamaIndexStoreTarget(ChromaVectorStore(chroma_collection=chroma))
    client = EmbeddingClient(base_url=server.base_url)

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


def test_a_llama_index_store_that_ignores_filters_loses_no_other_files_chunks(
    server: ManagedServer, tmp_path: Path
) -> None:
    """``get_nodes(filters=...)`` is the store's to honour; one that ignores the filter returns
    every node, which the purge of a changed file must not take for that file's stale chunks."""
    import chromadb
    from llama_index.core.schema import BaseNode
    from llama_index.core.vector_stores.types import MetadataFilters
    from llama_index.vector_stores.chroma import ChromaVectorStore

    from llama_index_qwen_sglang import LlamaIndexStoreTarget

    class IgnoresFilters(ChromaVectorStore):
        def get_nodes(
            self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None
        ) -> list[BaseNode]:
            return super().get_nodes(node_ids=node_ids)  # type: ignore[no-any-return]

    changed, other = tmp_path / "changed.md", tmp_path / "other.md"
    changed.write_text("First version of the changed note.")
    other.write_text("A note that stays as it is.")
    chroma = chromadb.PersistentClient(path=str(tmp_path / "db")).get_or_create_collection("ignores-filters")
    store = LlamaIndexStoreTarget(IgnoresFilters(chroma_collection=chroma))
    client = EmbeddingClient(base_url=server.base_url)
    assert ingest([changed, other], client=client, store=store, show_progress=False).embedded == 2
    kept = chroma.get(where={"source": other.resolve().as_posix()}, include=[])["ids"]

    changed.write_text("Second version.")
    report = ingest([changed, other], client=client, store=store, show_progress=False)
    assert (report.embedded, report.deleted, chroma.count()) == (1, 1, 2)
    assert chroma.get(ids=kept, include=[])["ids"] == kept  # the other file's chunk is still there


def test_langchain_vector_store_is_resumable(
    server: ManagedServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from langchain_core.vectorstores import InMemoryVectorStore

    from langchain_qwen_sglang import LangChainStoreTarget, QwenSGLangEmbeddings

    data = tmp_path / "data.jsonl"
    ids = write_records(data, 120, model=None)  # the store embeds: its ids carry no model
    embeddings = QwenSGLangEmbeddings(base_url=server.base_url)
    vs = InMemoryVectorStore(embeddings)  # no add_embeddings: the store embeds with our class
    store = LangChainStoreTarget(vs)
    client = EmbeddingClient(base_url=server.base_url)

    with caplog.at_level("WARNING", logger="qwen_sglang.ingest"):
        first = ingest([data], client=client, store=store, show_progress=False)
    assert first.embedded == 120 and sorted(vs.store) == sorted(ids)
    assert "old chunks of changed files are not removed" in caplog.text
    again = ingest([data], client=client, store=store, show_progress=False)
    assert again.embedded == 0 and again.skipped == 120 and len(vs.store) == 120
    hit = vs.similarity_search_by_vector(client.embed_documents([vs.store[ids[7]]["text"]])[0], k=1)[0]
    assert hit.id == ids[7]


# ------------------------------------------------------------------------------------------
# Nothing lost, nothing stale (issue 15) and the first hour (issue 16)
# ------------------------------------------------------------------------------------------
def stored(persist: Path, name: str = "docs") -> dict[str, list[tuple[str, dict[str, object]]]]:
    """What the collection holds, by file name: (chunk text, metadata) pairs in id order."""
    got = collection(persist, name).get(include=["documents", "metadatas"])
    out: dict[str, list[tuple[str, dict[str, object]]]] = {}
    for _cid, text, meta in sorted(zip(got["ids"], got["documents"], got["metadatas"], strict=True)):
        out.setdefault(Path(str(meta["source"])).name, []).append((text, meta))
    return out


def test_records_sharing_an_id_across_batches_are_reported_and_all_kept(server: ManagedServer, tmp_path: Path) -> None:
    """They used to delete each other's chunks as "stale" when they landed in different batches."""
    records = [{"text": "no id, first line"}, {"id": 1, "text": "id one"}, {"id": "x", "text": "first x"}]
    records += [{"id": f"f{i}", "text": f"filler {i}"} for i in range(30)]
    records += [{"id": None, "text": "null a"}, {"id": None, "text": "null b"}, {"id": "x", "text": "second x"}]
    data = tmp_path / "r.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = run_ingest(server, data, tmp_path / "db", "docs", "--no-progress", "--chunks-per-write", "4")
    assert out.returncode == 3, out.stderr
    assert f"{data}:36: same record id as line 3: both are stored" in out.stderr
    texts = sorted(text for text, _ in stored(tmp_path / "db")["r.jsonl"])
    assert texts == sorted(r["text"] for r in records)  # all 36: nothing deleted
    again = run_ingest(server, data, tmp_path / "db", "docs", "--no-progress", "--chunks-per-write", "7")
    assert "0 embedded, 36 already stored, 0 stale removed" in again.stdout
    assert collection(tmp_path / "db").count() == 36


def test_a_rerun_leaves_exactly_what_the_files_hold_now(server: ManagedServer, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "emptied.txt").write_text("This file will be emptied.")
    (docs / "recoded.md").write_text("Caf\u00e9 au lait, written in UTF-8 first.")
    (docs / "deleted.txt").write_text("This file will be deleted from disk.")
    records = docs / "r.jsonl"
    records.write_text(
        '{"id": "keep", "text": "kept record", "metadata": {"v": 1}}\n'
        '{"id": "drop", "text": "removed record"}\n'
        '{"id": "meta", "text": "metadata changes", "metadata": {"v": 1}}\n'
    )
    db = tmp_path / "db"
    first = run_ingest(server, docs, db, "docs", "--no-progress")
    assert first.returncode == 0 and "4 files, 6 documents, 6 chunks: 6 embedded" in first.stdout, first.stderr

    (docs / "emptied.txt").write_text("   \n")
    (docs / "recoded.md").write_bytes("Caf\u00e9 au lait, now in Latin-1.".encode("latin-1"))
    (docs / "deleted.txt").unlink()
    records.write_text(
        '{"id": "keep", "text": "kept record", "metadata": {"v": 1}}\n'
        '{"id": "meta", "text": "metadata changes", "metadata": {"v": 2}}\n'
    )
    second = run_ingest(server, docs, db, "docs", "--no-progress")
    assert second.returncode == 3, second.stderr
    assert "emptied.txt: empty file" in second.stderr and "recoded.md: not UTF-8" in second.stderr
    assert "1 embedded, 1 already stored, 4 stale removed" in second.stdout
    now = stored(db)
    assert sorted(now) == ["deleted.txt", "r.jsonl"]  # a file gone from disk keeps its chunks...
    assert [(t, m["v"]) for t, m in now["r.jsonl"] if m["record_id"] == "meta"] == [("metadata changes", 2)]
    assert sorted(t for t, _ in now["r.jsonl"]) == ["kept record", "metadata changes"]

    pruned = run_ingest(server, docs, db, "docs", "--no-progress", "--prune", "--allow-problems")
    assert pruned.returncode == 0 and "1 pruned" in pruned.stdout, pruned.stderr
    assert sorted(stored(db)) == ["r.jsonl"]  # ...until --prune

    fixed = run_ingest(server, docs, db, "docs", "--no-progress", "--encoding", "utf-8,latin-1", "--allow-problems")
    assert [t for t, _ in stored(db)["recoded.md"]] == ["Caf\u00e9 au lait, now in Latin-1."], fixed.stderr


def test_the_same_file_reached_twice_and_identical_records_are_stored_once(
    server: ManagedServer, tmp_path: Path
) -> None:
    """They used to abort the run with a raw DuplicateIDError and store nothing of the batch."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("Alpha document.")
    (docs / "link.txt").symlink_to(docs / "a.txt")
    (docs / "twice.jsonl").write_text('{"id": "r", "text": "same"}\n{"id": "r", "text": "same"}\n{"text": "other"}\n')
    paths = [docs, docs / "a.txt", docs / "a.txt", docs / "link.txt"]
    out = run_ingest(server, paths, tmp_path / "db", "docs", "--no-progress")
    assert out.returncode == 3 and "Traceback" not in out.stderr, out.stderr
    assert "twice.jsonl:2: same record id as line 1" in out.stderr
    assert "2 files, 4 documents, 4 chunks: 3 embedded, 1 already stored" in out.stdout
    assert sorted(t for ts in stored(tmp_path / "db").values() for t, _ in ts) == ["Alpha document.", "other", "same"]


def test_hostile_files_are_reported_and_the_rest_ingested(server: ManagedServer, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "good.md").write_text("A good document.")
    with open(os.fsencode(docs) + b"/caf\xe9.txt", "wb") as fh:
        fh.write(b"under a Latin-1 file name")
    (docs / "sub" / "loop").symlink_to(docs)
    (docs / "r.jsonl").write_text(
        '{"id": "ok", "text": "fine", "metadata": {"url": "https://example.com"}}\n'
        '{"id": "s", "text": "lone \\ud800 surrogate"}\n'
        '{"id": "k", "text": "t", "metadata": {"#doc": 1}}\n'
        '{"id": "c", "text": "t", "metadata": {"chroma:document": "x"}}\n'
        '{"id": "e", "text": "t", "metadata": {"": 1}}\n'
        '{"id": "n", "text": "t", "metadata": {"score": NaN}}\n'
        '{"id": "i", "text": "t", "metadata": {"score": 1e999}}\n'
        '{"id": "src", "text": "t", "metadata": {"source": "the web"}}\n'
    )
    out = run_ingest(server, docs, tmp_path / "db", "docs", "--no-progress")
    assert out.returncode == 3 and "Traceback" not in out.stderr, out.stderr
    for where in ("caf\\xe9.txt: file name is not valid UTF-8", "sub/loop: symlink loop", "r.jsonl:2: text has a lone"):
        assert where in out.stderr
    for line in range(3, 9):
        assert f"r.jsonl:{line}: " in out.stderr
    held = stored(tmp_path / "db")
    assert sorted(held) == ["good.md", "r.jsonl"]
    [(text, meta)] = held["r.jsonl"]
    assert text == "fine" and meta["url"] == "https://example.com" and meta["source"] == str(docs / "r.jsonl")


@pytest.mark.parametrize("what", ["missing", "png", "empty dir"])
def test_nothing_to_ingest_is_an_error(server: ManagedServer, tmp_path: Path, what: str) -> None:
    target = tmp_path / "in"
    if what == "png":
        target = tmp_path / "photo.png"
        target.write_bytes(b"\x89PNG\r\n")
    elif what == "empty dir":
        target.mkdir()
        (target / "photo.png").write_bytes(b"\x89PNG\r\n")
    out = run_ingest(server, target, tmp_path / "db", "docs", "--no-progress", "--allow-problems")
    assert out.returncode == 4, out.stderr
    assert "error: nothing to ingest" in out.stderr


def test_ctrl_c_prints_a_partial_summary_and_the_rerun_completes(server: ManagedServer, tmp_path: Path) -> None:
    data = tmp_path / "records.jsonl"
    expected = write_records(data, 1500)
    persist = tmp_path / "chroma"
    cmd = ingest_cmd(server, data, persist, "docs", *KILL_RUN)
    # A suite started in the background (nohup, `cmd &`) ignores SIGINT and its children inherit
    # that: give the child the default disposition a terminal's Ctrl-C meets.
    proc = subprocess.Popen(
        cmd,
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    wait_for_progress(proc, 300)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    partial = collection(persist).count()
    assert b"stopped: " in err and f"{partial} embedded".encode() in err
    assert b"rerun the same command to resume" in err and b"Traceback" not in err
    done = run_ingest(server, data, persist, "docs", *KILL_RUN, "--no-progress")
    assert f"{1500 - partial} embedded, {partial} already stored" in done.stdout
    assert sorted(collection(persist).get(include=[])["ids"]) == sorted(expected)


def test_a_dead_server_stops_the_run_with_a_summary_and_the_rerun_completes(
    server: ManagedServer, qwen_model_dir: Path, tmp_path: Path
) -> None:
    data = tmp_path / "records.jsonl"
    expected = write_records(data, 1500)
    persist = tmp_path / "chroma"
    with make_server(qwen_model_dir) as doomed:
        cmd = ingest_cmd(doomed, data, persist, "docs", *KILL_RUN)
        proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True)
        wait_for_progress(proc, 300)
        assert doomed.pid is not None
        os.killpg(os.getpgid(doomed.pid), signal.SIGKILL)  # the server and its group (led by its watchdog)
        _, err = proc.communicate(timeout=180)
    assert proc.returncode == 1, err[-2000:]
    text = err.decode()
    assert "stopped: " in text and "rerun the same command to resume" in text and "error: " in text
    partial = collection(persist).count()
    assert 0 < partial < 1500 and f"{partial} embedded" in text
    done = run_ingest(server, data, persist, "docs", *KILL_RUN, "--no-progress")
    assert done.returncode == 0 and f"{1500 - partial} embedded, {partial} already stored" in done.stdout
    assert sorted(collection(persist).get(include=[])["ids"]) == sorted(expected)


def test_progress_has_totals_and_moves_with_each_request(server: ManagedServer, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(20):
        (docs / f"doc{i:02d}.txt").write_text(f"Document number {i} about topic {i % 3}.")
    args = ("--batch-size", "2", "--max-concurrency", "1")
    out = run_ingest(server, docs, tmp_path / "db", "docs", *args)
    assert out.returncode == 0, out.stderr
    bar = out.stderr
    assert "Ingesting" in bar and "/20" in bar and "docs/s=" in bar and "tokens/s=" in bar
    counts = sorted({int(n) for n in re.findall(r"embedded=(\d+)", bar)})
    assert counts == list(range(0, 21, 2)), counts  # one step per request of 2 texts
    sizes = sum(p.stat().st_size for p in docs.iterdir())
    assert f"/{sizes}" in bar.replace("B/s", "") and "files=20/20" in bar


def test_gbk_and_latin1_files_are_read_with_encoding(server: ManagedServer, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    chinese = "\u5411\u91cf\u68c0\u7d22\u628a\u95ee\u9898\u548c\u6587\u6863\u6620\u5c04\u5230\u540c\u4e00\u4e2a\u7a7a\u95f4\u3002"
    (docs / "zh.txt").write_bytes((chinese * 30).encode("gbk"))
    (docs / "fr.txt").write_bytes("Cr\u00e8me br\u00fbl\u00e9e et caf\u00e9.".encode("latin-1"))
    default = run_ingest(server, docs, tmp_path / "db", "plain", "--no-progress")
    assert default.returncode == 4 and "zh.txt: not UTF-8" in default.stderr and "--encoding" in default.stderr
    listed = run_ingest(server, docs, tmp_path / "db", "listed", "--no-progress", "--encoding", "utf-8,gb18030,latin-1")
    assert listed.returncode == 0, listed.stderr
    texts = {name: [t for t, _ in chunks] for name, chunks in stored(tmp_path / "db", "listed").items()}
    assert texts == {"zh.txt": [chinese * 30], "fr.txt": ["Cr\u00e8me br\u00fbl\u00e9e et caf\u00e9."]}
    detected = run_ingest(server, docs / "zh.txt", tmp_path / "db", "auto", "--no-progress", "--encoding", "auto")
    assert detected.returncode == 0 and [t for t, _ in stored(tmp_path / "db", "auto")["zh.txt"]] == [chinese * 30]


def test_the_old_batch_names_still_work_with_a_warning(server: ManagedServer, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("some text")
    out = run_ingest(server, tmp_path / "a.txt", tmp_path / "db", "docs", "--no-progress", "--batch", "5")
    assert out.returncode == 0 and "--batch is deprecated: use --chunks-per-write" in out.stderr
    client = EmbeddingClient(base_url=server.base_url)
    with pytest.warns(DeprecationWarning, match="chunks_per_write"):
        report = ingest([tmp_path / "a.txt"], client=client, collection=collection(tmp_path / "db2"), batch_size=5)
    assert report.embedded == 1


def test_a_large_sparse_file_is_read_in_bounded_memory(tmp_path: Path) -> None:
    """128 MB of NUL bytes (one unbroken paragraph) through ``ingest()`` in a fresh process, into a
    collection that holds every chunk already: the peak RSS does not move (it used to take twice
    the file, and splitting unbroken text was quadratic)."""
    out = tmp_path / "reading.json"
    bench = Path(__file__).resolve().parents[2] / "bench" / "ingest_reading.py"
    cmd = [sys.executable, str(bench), "--split-mb", "", "--sparse-mb", "128", "--json", str(out)]
    subprocess.run(cmd, check=True, timeout=300, capture_output=True)
    row = json.loads(out.read_text())["sparse"]
    assert row["chunks"] == -(-(128 << 20) // 2000) and row["embedded"] == 0 and row["problems"] == 0
    assert row["rss_peak_mb"] - row["rss_before_mb"] < 48, row
