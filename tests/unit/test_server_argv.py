"""The SGLang command line built by SGLangServer: right flags always, wrong flags never."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from qwen_sglang import ConfigurationError
from qwen_sglang.servers import WRONG_FLAGS, LocalEmbeddingServer, SGLangServer


def argv_of(**kw: Any) -> list[str]:
    kw.setdefault("port", 30123)
    return SGLangServer("/models/Qwen3-Embedding-4B", **kw).command()


def flag_value(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_defaults() -> None:
    argv = argv_of()
    assert argv[:3] == [sys.executable, "-m", "sglang.launch_server"]
    assert flag_value(argv, "--model-path") == "/models/Qwen3-Embedding-4B"
    assert "--is-embedding" in argv
    assert flag_value(argv, "--host") == "127.0.0.1"
    assert flag_value(argv, "--port") == "30123"
    assert json.loads(flag_value(argv, "--json-model-override-args")) == {"is_matryoshka": True}
    assert flag_value(argv, "--tp-size") == "1" and flag_value(argv, "--dp-size") == "1"
    for wrong in WRONG_FLAGS:
        assert wrong not in argv


OPTIONS = [
    ("tp_size", 2, "--tp-size", "2"),
    ("dp_size", 4, "--dp-size", "4"),
    ("mem_fraction_static", 0.35, "--mem-fraction-static", "0.35"),
    ("attention_backend", "triton", "--attention-backend", "triton"),
    ("context_length", 8192, "--context-length", "8192"),
    ("max_running_requests", 64, "--max-running-requests", "64"),
    ("chunked_prefill_size", 4096, "--chunked-prefill-size", "4096"),
    ("max_prefill_tokens", 32768, "--max-prefill-tokens", "32768"),
    ("dtype", "bfloat16", "--dtype", "bfloat16"),
    ("served_model_name", "qwen-emb", "--served-model-name", "qwen-emb"),
    ("device", "cpu", "--device", "cpu"),
    ("log_level", "warning", "--log-level", "warning"),
    ("host", "0.0.0.0", "--host", "0.0.0.0"),
]


@pytest.mark.parametrize(("name", "value", "flag", "expected"), OPTIONS, ids=[o[0] for o in OPTIONS])
def test_each_option_maps_to_its_flag(name: str, value: Any, flag: str, expected: str) -> None:
    argv = argv_of(**{name: value})
    assert flag_value(argv, flag) == expected
    assert "--is-embedding" in argv


def test_boolean_flags_and_extra_args() -> None:
    argv = argv_of(
        allow_auto_truncate=True, disable_radix_cache=True, matryoshka=False, extra_args=["--skip-server-warmup"]
    )
    assert "--allow-auto-truncate" in argv and "--disable-radix-cache" in argv
    assert "--json-model-override-args" not in argv
    assert argv[-1] == "--skip-server-warmup"


@pytest.mark.parametrize("wrong", sorted(WRONG_FLAGS))
def test_wrong_flags_are_refused_with_advice(wrong: str) -> None:
    with pytest.raises(ConfigurationError, match=wrong):
        SGLangServer("/m", extra_args=[wrong, "x"])
    with pytest.raises(ConfigurationError):
        SGLangServer("/m", extra_args=[f"{wrong}=x"])


BAD = [
    ({"port": 0}, "port"),
    ({"port": 70000}, "port"),
    ({"port": "30000"}, "port"),
    ({"mem_fraction_static": 0.0}, "mem_fraction_static"),
    ({"mem_fraction_static": 1.0}, "mem_fraction_static"),
    ({"tp_size": 0}, "tp_size"),
    ({"dp_size": -1}, "dp_size"),
    ({"tp_size": 1.5}, "tp_size"),
    ({"context_length": 0}, "context_length"),
    ({"chunked_prefill_size": 0}, "chunked_prefill_size"),
    ({"device": "tpu"}, "device"),
    ({"extra_args": "--foo bar"}, "sequence"),
    ({"startup_timeout": 0}, "startup_timeout"),
]


@pytest.mark.parametrize(("kw", "match"), BAD, ids=[str(b[0]) for b in BAD])
def test_bad_options_are_rejected(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        SGLangServer("/m", **kw)


def test_api_key_is_masked_in_the_displayed_command() -> None:
    server = SGLangServer("/m", port=1234, api_key="sk-top-secret-999")
    assert "sk-top-secret-999" in server.command()  # SGLang needs it
    shown = server.display_command()
    assert "sk-top-secret-999" not in shown and "--api-key '***'" in shown
    assert "sk-top-secret-999" not in repr(server)


def test_local_backend_argv() -> None:
    argv = LocalEmbeddingServer("/m", port=4321, matryoshka=False, context_length=512).command()
    assert argv[:6] == [sys.executable, "-m", "qwen_sglang", "serve", "--backend", "local"]
    assert "--no-matryoshka" in argv and argv[argv.index("--context-length") + 1] == "512"
    assert "--allowed-hosts" not in argv  # nothing for an empty list
    named = LocalEmbeddingServer("/m", port=4321, allowed_hosts=["gpu-box.lan", "emb.internal"]).command()
    assert named[named.index("--allowed-hosts") + 1] == "gpu-box.lan,emb.internal"


def test_cli_dry_run_prints_the_sglang_command_with_key_masked() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "qwen_sglang",
            "serve",
            "--backend",
            "sglang",
            "--model",
            "/models/Qwen3-Embedding-4B",
            "--port",
            "31000",
            "--mem-fraction-static",
            "0.3",
            "--attention-backend",
            "triton",
            "--api-key",
            "sk-abc-123",
            "--dry-run",
            "--",
            "--skip-server-warmup",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    line = out.stdout.strip().splitlines()[-1]
    assert "sglang.launch_server" in line and "--is-embedding" in line and "--mem-fraction-static 0.3" in line
    assert "--skip-server-warmup" in line and "sk-abc-123" not in line


def test_cli_help_for_every_command() -> None:
    for command in ([], ["serve"], ["embed"], ["doctor"], ["ingest"], ["eval"], ["demo"]):
        out = subprocess.run(
            [sys.executable, "-m", "qwen_sglang", *command, "--help"], capture_output=True, text=True, check=False
        )
        assert out.returncode == 0 and "usage: qwen-sglang" in out.stdout


def test_cli_errors_are_one_line_without_traceback() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "qwen_sglang", "embed", "--base-url", "http://127.0.0.1:9/v1", "hello"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 1
    assert out.stderr.startswith("error: could not connect to the embedding server at http://127.0.0.1:9/v1")
    assert "Traceback" not in out.stderr


def test_auto_picked_sglang_ports_leave_room_for_the_derived_grpc_port() -> None:
    from qwen_sglang.servers import MAX_SGLANG_PORT

    for _ in range(20):
        assert SGLangServer("/m").port <= MAX_SGLANG_PORT


def test_ingest_request_size_options_reach_the_client(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import qwen_sglang.ingest
    from qwen_sglang.cli import main
    from qwen_sglang.ingest import IngestReport

    seen: dict[str, object] = {}

    def fake_ingest(paths: object, *, client: object, report: IngestReport, **kwargs: object) -> IngestReport:
        seen["settings"] = client.settings  # type: ignore[attr-defined]
        report.units = 1  # something was read: exit 0
        return report

    monkeypatch.setattr(qwen_sglang.ingest, "ingest", fake_ingest)
    argv = ["ingest", str(tmp_path), "--collection", "docs", "--persist-dir", str(tmp_path / "db")]
    assert main([*argv, "--batch-size", "1000", "--max-batch-tokens", "1000000", "--max-concurrency", "1"]) == 0
    settings = seen["settings"]
    assert (settings.batch_size, settings.max_batch_tokens, settings.max_concurrency) == (1000, 1_000_000, 1)  # type: ignore[attr-defined]
    assert main(argv) == 0
    assert (seen["settings"].batch_size, seen["settings"].max_batch_tokens) == (32, 8192)  # type: ignore[attr-defined]


# ------------------------------------------------------------- one options table, versions (issue 17)
_REMOVED_IN_0523 = ["--cuda-graph-max-bs", "8", "--cuda-graph-bs", "1", "2", "4", "--enable-breakable-cuda-graph"]


def test_flags_removed_in_0_5_23_are_never_passed_to_it() -> None:
    argv = argv_of(sglang_version="0.5.23", disable_cuda_graph=True, extra_args=_REMOVED_IN_0523)
    for removed in ("--cuda-graph-max-bs", "--cuda-graph-bs", "--enable-breakable-cuda-graph", "--disable-cuda-graph"):
        assert removed not in argv, argv
    assert flag_value(argv, "--cuda-graph-max-bs-decode") == "8"
    assert argv[argv.index("--cuda-graph-bs-decode") + 1 : argv.index("--cuda-graph-bs-decode") + 4] == ["1", "2", "4"]
    assert flag_value(argv, "--cuda-graph-backend-decode") == "disabled"
    assert flag_value(argv, "--cuda-graph-backend-prefill") in ("disabled", "breakable")


def test_older_sglang_keeps_the_spelling_it_knows() -> None:
    argv = argv_of(sglang_version="0.5.12", disable_cuda_graph=True, extra_args=["--cuda-graph-max-bs", "8"])
    assert "--disable-cuda-graph" in argv and flag_value(argv, "--cuda-graph-max-bs") == "8"
    assert "--cuda-graph-backend-decode" not in argv


def test_a_flag_removed_without_replacement_is_refused_before_start() -> None:
    with pytest.raises(ConfigurationError, match=r"--torchao-config was removed in SGLang 0\.5\.23"):
        argv_of(sglang_version="0.5.23", extra_args=["--torchao-config", "int8wo"])
    assert "--torchao-config" in argv_of(sglang_version="0.5.17", extra_args=["--torchao-config", "int8wo"])


def test_options_are_validated_by_the_table_naming_the_option() -> None:
    with pytest.raises(ConfigurationError, match="SGLangServer has no option 'max_num_batched_tokens'"):
        argv_of(max_num_batched_tokens=8192)
    with pytest.raises(ConfigurationError, match="not an SGLang version"):
        argv_of(sglang_version="latest")


def test_cli_dry_run_for_a_named_sglang_version() -> None:
    def dry(*args: str) -> str:
        cmd = [sys.executable, "-m", "qwen_sglang", "serve", "--backend", "sglang", "--model", "/m", "--dry-run"]
        out = subprocess.run([*cmd, *args], capture_output=True, text=True, check=False)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip().splitlines()[-1]

    new = dry("--sglang-version", "0.5.23", "--disable-cuda-graph", "--", "--cuda-graph-max-bs", "16")
    assert "--disable-cuda-graph" not in new and "--cuda-graph-max-bs " not in new
    assert "--cuda-graph-backend-decode disabled" in new and "--cuda-graph-max-bs-decode 16" in new
    old = dry("--sglang-version", "0.5.12", "--disable-cuda-graph")
    assert "--disable-cuda-graph" in old


def test_hopper_without_fa3_gets_triton(monkeypatch: pytest.MonkeyPatch) -> None:
    from qwen_sglang.servers import sglang
    from qwen_sglang.servers.options import SGLangOptions

    assert sglang.attention_fallback(SGLangOptions(), "9.0", False) is not None
    assert sglang.attention_fallback(SGLangOptions(), "9.0", True) is None  # FA3 there: SGLang's default
    assert sglang.attention_fallback(SGLangOptions(), "8.0", False) is None  # Ampere defaults to flashinfer
    assert sglang.attention_fallback(SGLangOptions(attention_backend="fa3"), "9.0", False) is None  # asked for
    monkeypatch.setattr(sglang, "gpu_compute_capability", lambda: "9.0")
    monkeypatch.setattr(sglang, "fa3_installed", lambda: False)
    assert flag_value(argv_of(), "--attention-backend") == "triton"
    assert flag_value(argv_of(attention_backend="flashinfer"), "--attention-backend") == "flashinfer"


def test_the_options_table_of_the_docs_is_the_options_model() -> None:
    from qwen_sglang.servers.options import FLAG_CHANGES, SGLangOptions, option_fields

    text = (Path(__file__).parents[2] / "docs" / "server.md").read_text(encoding="utf-8")
    table = text.split("## Options and their SGLang flags", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1:3] for line in table.splitlines() if line.startswith("| `")]
    for name, flag in option_fields(SGLangOptions).items():
        assert any(f"`{name}`" in first and f"`{flag.name}" in second for first, second in rows), name
    versions = text.split("## Flags across SGLang versions", 1)[1].split("\n## ", 1)[0]
    for change in FLAG_CHANGES:
        assert f"| `{change.flag}`" in versions or f"| `{change.flag} " in versions, change.flag


def test_a_reranker_gets_no_embedding_flags() -> None:
    argv = argv_of(task="rerank", extra_args=["--chat-template", "qwen3_reranker.jinja"])
    assert "--is-embedding" not in argv and "--json-model-override-args" not in argv
    assert flag_value(argv, "--chat-template") == "qwen3_reranker.jinja"
    with pytest.raises(ConfigurationError, match="--chat-template"):
        argv_of(extra_args=["--chat-template", "x.jinja"])  # an embedding server must not get one


def test_old_request_size_spellings_still_work_and_say_what_replaces_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import qwen_sglang.ingest
    from qwen_sglang.cli import main
    from qwen_sglang.ingest import IngestReport

    seen: dict[str, object] = {}

    def fake_ingest(paths: object, *, client: object, report: IngestReport, **kwargs: object) -> IngestReport:
        seen["settings"], seen["chunks_per_write"] = client.settings, kwargs["chunks_per_write"]  # type: ignore[attr-defined]
        report.units = 1
        return report

    monkeypatch.setattr(qwen_sglang.ingest, "ingest", fake_ingest)
    argv = ["ingest", str(tmp_path), "--collection", "docs", "--persist-dir", str(tmp_path / "db")]
    assert main([*argv, "--request-size", "7", "--request-tokens", "700", "--batch", "5"]) == 0
    assert (seen["settings"].batch_size, seen["settings"].max_batch_tokens, seen["chunks_per_write"]) == (7, 700, 5)  # type: ignore[attr-defined]
    err = capsys.readouterr().err
    assert "--request-size is deprecated: use --batch-size" in err
    assert "--request-tokens is deprecated: use --max-batch-tokens" in err
    assert "--batch is deprecated: use --chunks-per-write" in err


@pytest.mark.parametrize("command", [["embed", "x"], ["eval", "--demo-data"]])
def test_every_client_command_takes_the_request_shape_options(command: list[str]) -> None:
    from qwen_sglang.cli import _build_parser

    args = _build_parser().parse_args(
        [*command, "--batch-size", "3", "--max-batch-tokens", "30", "--max-concurrency", "2"]
    )
    assert (args.batch_size, args.max_batch_tokens, args.max_concurrency) == (3, 30, 2)


def test_a_router_for_gpus_gives_each_worker_its_gpu() -> None:
    from qwen_sglang.servers import ManagedRouter

    router = ManagedRouter.for_gpus("/models/Qwen3-Embedding-4B", [0, 1], mem_fraction_static=0.3, env={"A": "1"})
    assert [w.env for w in router.workers] == [
        {"A": "1", "CUDA_VISIBLE_DEVICES": "0"},
        {"A": "1", "CUDA_VISIBLE_DEVICES": "1"},
    ]
    assert all(flag_value(w.command(), "--mem-fraction-static") == "0.3" for w in router.workers)
    argv = router.router.command()  # the workers' URLs are filled in once they listen (start)
    assert flag_value(argv, "--policy") == "round_robin"
    assert router.router.host == "127.0.0.1" and all(w.host == "127.0.0.1" for w in router.workers)


@pytest.mark.parametrize("task", ["embed", "rerank"])
def test_the_managed_server_schedules_by_priority_unless_told_not_to(task: str) -> None:
    # the client's single queries carry a priority for SGLang to order its waiting queue by
    assert "--enable-priority-scheduling" in argv_of(task=task)
    assert "--enable-priority-scheduling" not in argv_of(task=task, enable_priority_scheduling=False)


def test_a_taken_port_is_recognised_in_every_backends_wording() -> None:
    # ManagedServer.start picks another port when a picked one was taken before the server bound
    # it; the local backend says so in its own words (a router's worker died of it unretried)
    from qwen_sglang.servers.ports import port_in_use_message, port_taken
    from qwen_sglang.servers.report import diagnose_log

    local = port_in_use_message("127.0.0.1", 40805)
    sglang = "ERROR: [Errno 98] error while attempting to bind on address: address already in use"
    assert port_taken(local) and port_taken(sglang)
    assert not port_taken("CUDA out of memory") and not port_taken("the model is in use")
    assert "port is already in use" in str(diagnose_log(local))
