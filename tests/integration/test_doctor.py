"""`qwen-sglang doctor` names each fault of the troubleshooting page, with its fix."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from qwen_sglang import ServerStartError
from qwen_sglang.servers import LocalEmbeddingServer, ManagedServer
from qwen_sglang.servers.probe import diagnose_log, probe_server
from tests.integration.broken_servers import broken_server, canned_server


def doctor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qwen_sglang", "doctor", *args], capture_output=True, text=True, timeout=120, check=False
    )


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize(
    ("fault", "says"),
    [
        ("identical", "two different texts got the same vector"),
        ("batch-dependent", "a text's vector changes with its batch"),
        ("zero", "all-zero vectors for non-empty texts"),
        ("nan", "NaN or infinite values"),
    ],
)
def test_doctor_names_broken_vectors(fault: str, says: str) -> None:
    with broken_server(fault) as url:  # type: ignore[arg-type]
        out = doctor("--base-url", url)
    assert out.returncode == 1, out.stdout
    text = flat(out.stdout)
    assert f"FAIL vectors {says}" in text
    assert "fix:" in text.split("FAIL vectors", 1)[1]


def test_doctor_compares_the_configured_model_with_the_served_one(server: ManagedServer) -> None:
    wrong = doctor("--base-url", server.base_url, "--model", "Qwen/Qwen3-Embedding-4B")
    assert wrong.returncode == 1
    assert "FAIL configured model Qwen/Qwen3-Embedding-4B makes 2560-d vectors; this server makes 128-d" in flat(
        wrong.stdout
    )
    right = doctor("--base-url", server.base_url, "--model", server.model)
    assert right.returncode == 0, right.stdout
    assert "OK configured model" in flat(right.stdout)


def test_doctor_reports_empty_input_and_speed(server: ManagedServer) -> None:
    report = probe_server(server.base_url)
    rows = {c.name: c for c in report.checks}
    assert rows["empty input"].status == "info" and rows["empty input"].value.startswith("400")
    assert rows["vectors"].status == "ok"
    speed = rows["speed"]
    assert "vectors/s" in speed.value
    if (report.version or "").startswith("qwen-sglang-local"):
        assert speed.status == "info" and "--batch-size 1000" in speed.fix


@pytest.mark.parametrize(
    ("line", "cause"),
    [
        ("RuntimeError: Not enough memory. Please try to increase --mem-fraction-static.", "did not fit in"),
        (
            "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.50 GiB. GPU 0 has a total capacity "
            "of 23.55 GiB of which 1.12 GiB is free.",
            "CUDA ran out of memory outside the reserved pool",
        ),
        ("OSError: [Errno 98] error while attempting to bind on address: address already in use", "port"),
        ("launch_server.py: error: unrecognized arguments: --max-num-batched-tokens 8192", "rejected a flag"),
        ("RuntimeError: No CUDA GPUs are available", "no usable CUDA GPU"),
        ("ModuleNotFoundError: No module named 'xgrammar'", "a Python module the server imports is missing"),
    ],
)
def test_log_signatures(line: str, cause: str) -> None:
    found = diagnose_log("[2026-11-25 10:00:00] loading weights\n" + line + "\nexiting\n")
    assert len(found) == 1 and found[0].status == "fail"
    assert cause in found[0].value and line[:60] in found[0].value
    assert found[0].fix
    assert diagnose_log("[2026-11-25] The server is fired up and ready to roll!") == []


def test_doctor_reads_the_log_of_a_server_that_could_not_find_its_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a real failed start: a hub id where no hub can be reached
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    srv = LocalEmbeddingServer("Qwen/Qwen3-Embedding-0.6B", log_path=tmp_path / "server.log", startup_timeout=120)
    with pytest.raises(ServerStartError, match="could not be found") as info:
        srv.start()
    assert info.value.log_path
    out = doctor("--base-url", srv.base_url, "--log", info.value.log_path, "--timeout", "2")
    assert out.returncode == 1
    text = flat(out.stdout)
    assert "FAIL reachable" in text and "FAIL start log the model could not be found or downloaded" in text


_HTML = (200, "text/html; charset=utf-8", b"<html><body>Please log in</body></html>")
_EMPTY = (200, "application/json", b"{}")
_LIST = (200, "application/json", b"[]")


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        (_EMPTY, "200 without vectors (no data[].embedding)"),
        (_HTML, "200 with a body that is not a JSON object (text/html"),
        (_LIST, "200 with a body that is not a JSON object (application/json"),
    ],
    ids=["empty-object", "html", "list"],
)
def test_doctor_reports_malformed_answers_instead_of_crashing(answer: tuple[int, str, bytes], says: str) -> None:
    with canned_server(answer) as url:
        out = doctor("--base-url", url)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "Traceback" not in out.stderr and "KeyError" not in out.stdout + out.stderr
    assert says in flat(out.stdout), out.stdout
    assert "FAIL embedding model" in flat(out.stdout) and "problems found" in out.stdout


@pytest.mark.parametrize(("version", "warns"), [("0.5.23", True), ("0.5.17", False), ("0.5.30", True)])
def test_doctor_says_when_sglang_is_newer_than_verified(version: str, warns: bool) -> None:
    info = (200, "application/json", json.dumps({"version": version}).encode())
    with canned_server(_EMPTY, {"/server_info": info}) as url:
        report = probe_server(url)
    row = next(c for c in report.checks if c.name == "version")
    assert report.version == version
    assert (row.status == "warn") is warns, row
    if warns:
        assert "newer than the newest SGLang verified on a GPU (0.5.17)" in row.value and "0.5.17" in row.fix


def test_doctor_uses_ready_where_the_server_has_it() -> None:
    starting = (503, "application/json", b"")
    with canned_server(_EMPTY, {"/ready": starting}) as url:
        report = probe_server(url)
    row = next(c for c in report.checks if c.name == "healthy")
    assert (row.status, row.value) == ("fail", "503 on /ready")  # /health says 200 (as SGLang's before warm-up)


def test_doctor_recognises_a_reranker_server(rerank_server: ManagedServer) -> None:
    report = probe_server(rerank_server.base_url)
    rows = {c.name: c for c in report.checks}
    assert report.kind == "reranker" and report.ok, report.table()
    assert rows["reranker"].status == "ok" and "/v1/score" in rows["reranker"].value
    assert rows["embedding model"].status == "info" and "reranker server" in rows["embedding model"].value
    # an embedding client pointed at it: doctor says so, naming both
    wrong = probe_server(rerank_server.base_url, model="Qwen/Qwen3-Embedding-0.6B")
    row = next(c for c in wrong.checks if c.name == "configured model")
    assert row.status == "fail" and "serves a reranker" in row.value and not wrong.ok
    out = doctor("--base-url", rerank_server.base_url)
    assert out.returncode == 0 and "a reranker server" in flat(out.stdout), out.stdout + out.stderr


@pytest.mark.parametrize(
    ("path", "kind"), [("/models/Qwen3-Reranker-0.6B", "reranker"), ("/models/Qwen3-0.6B", "generation")]
)
def test_doctor_tells_an_sglang_reranker_from_a_generation_model(path: str, kind: str) -> None:
    """SGLang says only ``is_generation: true`` for both; the model's name tells a reranker."""
    info = {"model_path": path, "is_generation": True, "architectures": ["Qwen3ForCausalLM"]}
    routes = {
        "/model_info": (200, "application/json", json.dumps(info).encode()),
        "/v1/score": (200, "application/json", b'{"scores": [[0.6, 0.4]], "object": "scoring"}'),
    }
    with canned_server(_EMPTY, routes) as url:
        report = probe_server(url)
    rows = {c.name: c for c in report.checks}
    assert report.kind == kind
    if kind == "reranker":
        assert rows["reranker"].status == "ok" and rows["embedding model"].status == "info"
    else:
        assert rows["embedding model"].status == "fail" and "generation model" in rows["embedding model"].value


@pytest.mark.parametrize(
    ("models", "path", "kind"),
    [
        ([{"id": "Qwen3-0.6B"}], "/models/Qwen3-0.6B", "generation"),
        ([{"id": "ranker"}], "/models/Qwen3-Reranker-4B", "reranker"),
        # an adapter (a LoRA of SGLang's ``--lora-paths``) named a reranker: once only the client saw it
        (
            [{"id": "Qwen3-0.6B"}, {"id": "qwen3-reranker-lora", "parent": "Qwen3-0.6B"}],
            "/models/Qwen3-0.6B",
            "reranker",
        ),
    ],
    ids=["generation", "reranker-by-path", "reranker-adapter"],
)
def test_doctor_and_the_client_recognise_a_reranker_by_one_rule(
    models: list[dict[str, str]], path: str, kind: str
) -> None:
    """doctor's verdict is the client's (`ServerFacts.is_reranker`), read from the same answers."""
    from qwen_sglang import EmbeddingClient

    routes = {
        "/v1/models": (200, "application/json", json.dumps({"object": "list", "data": models}).encode()),
        "/model_info": (200, "application/json", json.dumps({"model_path": path, "is_generation": True}).encode()),
        "/v1/score": (200, "application/json", b'{"scores": [[0.6, 0.4]], "object": "scoring"}'),
    }
    with canned_server(_EMPTY, routes) as url:
        report = probe_server(url)
        facts = EmbeddingClient(base_url=url, max_retries=0).discover()
    assert report.kind == kind and facts.is_reranker == (kind == "reranker")


def test_doctor_probes_each_server_of_a_comma_separated_base_url(server: ManagedServer) -> None:
    # once the comma-joined string was probed as one URL (host "127.0.0.1:X,http" ...)
    with broken_server("zero") as broken:  # type: ignore[arg-type]
        out = doctor("--base-url", f"{server.base_url},{broken}")
        as_json = doctor("--base-url", f"{server.base_url},{broken}", "--json")
    assert out.returncode == 1, out.stdout
    text = flat(out.stdout)
    assert f"qwen-sglang doctor: {server.base_url}" in text and f"qwen-sglang doctor: {broken}" in text
    assert text.count("FAIL vectors all-zero vectors") == 1
    reports = json.loads(as_json.stdout)
    assert [r["base_url"] for r in reports] == [server.base_url, broken]
    assert [r["ok"] for r in reports] == [True, False]
