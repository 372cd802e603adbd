"""The Ray Data recipe (`qwen_sglang.integrations.ray`) on a local Ray cluster of 2 CPUs, against
the local backend, writing to a real Chroma server process (``chroma run``).

The cluster and the Chroma server are started once for the module and stopped after it; the
teardown checks that no process of either is left.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
import ray

from qwen_sglang import EmbeddingClient, QwenSGLangSettings
from qwen_sglang.errors import ConfigurationError
from qwen_sglang.ingest import ingest, with_model
from qwen_sglang.integrations.ray import ChromaHttpCollection, chunk_rows, ray_ingest
from qwen_sglang.servers import ManagedServer
from tests.conftest import TOL
from tests.integration.chroma_server import ChromaServer

MODEL = "Qwen3-Embedding-test"  # what the test server's chunk ids carry (its folder's name)

REPO = Path(__file__).resolve().parents[2]


def _children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


def _wait_gone(pids: set[int], seconds: float) -> set[int]:
    deadline = time.monotonic() + seconds
    alive = pids
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = {pid for pid in alive if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"}
    return alive


def _cpus_back(cpus: float, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while ray.available_resources().get("CPU", 0.0) < cpus:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    """A local Ray cluster of 2 CPUs; its workers import this checkout (tests included)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    before = _children()
    ray.init(
        num_cpus=2,
        object_store_memory=128 * 1024**2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}},
    )
    try:
        yield
    finally:
        started = _children() - before
        ray.shutdown()
        left = _wait_gone(started, 30)
        for pid in left:  # never leave them to the next test, then fail
            psutil.Process(pid).kill()
        assert not left, f"Ray processes outlived ray.shutdown(): {sorted(left)}"


@pytest.fixture(scope="module")
def chroma(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChromaServer]:
    """A real Chroma server (``chroma run``) on a free loopback port."""
    with ChromaServer(tmp_path_factory.mktemp("chroma") / "data") as srv:
        yield srv
    assert srv.proc is not None and srv.proc.poll() is not None


def corpus(root: Path) -> list[Path]:
    """Two shards (two reading tasks): text files, one split in several chunks, JSON lines with
    and without ids and metadata, and a malformed line (a problem, the rest ingested)."""
    a, b = root / "shard-a", root / "shard-b"
    (a / "sub").mkdir(parents=True)
    b.mkdir()
    para = "Qwen3-Embedding is served by SGLang on a GPU. " * 6
    (a / "long.md").write_text("\n\n".join(f"{i}: {para}" for i in range(6)), encoding="utf-8")
    for i in range(5):
        (a / "sub" / f"note-{i}.txt").write_text(f"Note {i} about vector stores and retrieval.", encoding="utf-8")
    lines = [
        f'{{"id": "r{i}", "text": "record {i} on bulk embedding", "metadata": {{"lang": "en", "n": {i}}}}}'
        for i in range(12)
    ]
    lines += ['{"text": "a record without an id"}', "{not json", '{"id": 7, "text": "an integer id"}']
    (b / "records.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [a, b]


def expected(paths: list[Path], max_chars: int = 120) -> dict[str, str]:
    """id -> text of every chunk the inputs produce (what the store must hold, exactly)."""
    return {
        with_model(row["id"], MODEL): row["text"]
        for path in paths
        for row in chunk_rows({"path": str(path)}, max_chars=max_chars)
        if row["kind"] == "chunk"
    }


def stored(collection: Any) -> dict[str, str]:
    got = collection.get(include=["documents"])
    assert len(got["ids"]) == len(set(got["ids"]))
    return dict(zip(got["ids"], got["documents"], strict=True))


def test_ray_ingest_stores_what_qwen_sglang_ingest_stores(
    server: ManagedServer, ray_cluster: None, chroma: ChromaServer, tmp_path: Path
) -> None:
    paths = corpus(tmp_path)
    want = expected(paths)
    target = ChromaHttpCollection(host=chroma.host, port=chroma.port, name="same-ids")
    settings = QwenSGLangSettings(base_url=server.base_url)

    report = ray_ingest(paths, target, settings=settings, actors=2, chunks_per_call=8, max_chars=120)

    assert report.complete and report.embedded == len(want) and report.skipped == 0
    assert report.files == 7 and report.units == 6 + 14 and report.chunks == len(want)
    assert [(p.line, p.message.split(":")[0]) for p in report.problems] == [(14, "malformed JSON")]
    collection = target()
    assert stored(collection) == want
    # The vectors are those of the stored documents (no vector paired with another chunk).
    got = collection.get(include=["documents", "embeddings"])
    with EmbeddingClient(settings) as client:
        direct = client.embed(list(got["documents"]), kind="document").vectors
    np.testing.assert_allclose(np.asarray(got["embeddings"]), direct, atol=TOL)

    # qwen-sglang ingest over the same files finds every chunk stored, with its source: it
    # embeds nothing and removes nothing (same ids, same metadata).
    with EmbeddingClient(settings) as client:
        again = ingest(paths, client=client, collection=collection, max_chars=120, show_progress=False)
    assert (again.embedded, again.deleted, again.skipped) == (0, 0, len(want))
    assert stored(collection) == want


class FailOnce:
    """Opens the collection; the first upsert after the marker's creation fails, once for the
    whole cluster (the marker file is shared by the actors): the crash of one batch, after its
    write (the run dies before it hears the write succeeded)."""

    def __init__(self, target: ChromaHttpCollection, marker: Path) -> None:
        self.target, self.marker = target, marker

    def __call__(self) -> Any:
        return _FailingCollection(self.target(), self.marker)


class _FailingCollection:
    def __init__(self, collection: Any, marker: Path) -> None:
        self.collection, self.marker, self.upserts = collection, marker, 0

    def get(self, **kwargs: Any) -> Any:
        return self.collection.get(**kwargs)

    def upsert(self, **kwargs: Any) -> None:
        self.collection.upsert(**kwargs)
        self.upserts += 1
        if self.upserts >= 2:
            try:
                self.marker.touch(exist_ok=False)
            except FileExistsError:
                return
            raise RuntimeError("injected crash after a write")


def test_rerun_after_a_crash_adds_nothing_twice(
    server: ManagedServer, ray_cluster: None, chroma: ChromaServer, tmp_path: Path
) -> None:
    paths = corpus(tmp_path)
    want = expected(paths)
    target = ChromaHttpCollection(host=chroma.host, port=chroma.port, name="crash")
    settings = QwenSGLangSettings(base_url=server.base_url)

    with pytest.raises(Exception, match="injected crash after a write"):
        ray_ingest(paths, FailOnce(target, tmp_path / "crashed"), settings=settings, chunks_per_call=4, max_chars=120)
    # The failed run's actors are gone: the cluster has its CPUs back for the rerun (the
    # exception, still referenced here, must not hold them), and nothing writes any more.
    assert _cpus_back(2.0, 60), ray.available_resources()
    before = stored(target())
    assert 0 < len(before) < len(want) and set(before) <= set(want)

    report = ray_ingest(paths, target, settings=settings, chunks_per_call=4, max_chars=120)

    assert report.complete
    assert report.embedded == len(want) - len(before)  # only what was missing
    assert report.skipped == len(before)
    assert stored(target()) == want  # every chunk once, nothing else

    third = ray_ingest(paths, target, settings=settings, chunks_per_call=4, max_chars=120)
    assert (third.embedded, third.skipped) == (0, len(want))


def test_bad_arguments_fail_before_anything_is_contacted(tmp_path: Path) -> None:
    target = ChromaHttpCollection(host="127.0.0.1", port=9, name="never")
    settings = QwenSGLangSettings(
        base_url="http://127.0.0.1:9/v1"
    )  # nothing listens: contacting it would fail otherwise
    for kwargs, match in (
        ({"actors": 0}, "must be positive"),
        ({"chunks_per_call": 0}, "must be positive"),
        ({"max_chars": 0}, "max_chars"),
        ({"encoding": "no-such-codec"}, "no-such-codec"),
    ):
        with pytest.raises(ConfigurationError, match=match):
            ray_ingest([tmp_path], target, settings=settings, **kwargs)


def scaling_page_recipe() -> str:
    """The Ray block of docs/scaling.md (skipped by the docs tests, which have no Ray cluster)."""
    lines = (REPO / "docs" / "scaling.md").read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if "test_ray.py::test_the_scaling_page_recipe_runs" in line)
    assert lines[start + 1] == "```python"
    end = lines.index("```", start + 2)
    return "\n".join(lines[start + 2 : end])


def test_the_scaling_page_recipe_runs(
    server: ManagedServer, ray_cluster: None, chroma: ChromaServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = scaling_page_recipe()
    for old, new in (
        ("http://127.0.0.1:30000/v1", server.base_url),
        ("port=8000", f"port={chroma.port}"),
        ("ray.init()", "ray.init(ignore_reinit_error=True)"),  # this module's cluster
        ("ray.shutdown()", "pass"),  # stopped by the fixture, after the other tests
    ):
        assert old in code, old
        code = code.replace(old, new)
    shards = corpus(tmp_path / "corpus")
    for i, shard in enumerate(shards):
        shard.rename(tmp_path / "corpus" / f"part-{i}")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "docs/scaling.md", "exec"), {})
    want = expected([tmp_path / "corpus" / "part-0", tmp_path / "corpus" / "part-1"], max_chars=2000)
    assert stored(chroma.client().get_collection("corpus")) == want
