"""How API keys reach a managed server, and what is refused (no server started)."""

from __future__ import annotations

from pathlib import Path

import pytest

from qwen_sglang import ConfigurationError
from qwen_sglang.servers import SERVER_API_KEY_ENV, LocalEmbeddingServer, check_api_key, read_api_key


def test_the_key_comes_from_the_flag_the_file_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SERVER_API_KEY_ENV, raising=False)
    assert read_api_key() is None
    monkeypatch.setenv(SERVER_API_KEY_ENV, "sk-from-env")
    assert read_api_key() == "sk-from-env"
    assert read_api_key("sk-from-flag") == "sk-from-flag"
    key_file = tmp_path / "key"
    key_file.write_text("  sk-from-file\n")  # as `echo KEY > file` writes it
    assert read_api_key(key_file=key_file) == "sk-from-file"
    with pytest.raises(ConfigurationError, match="not both"):
        read_api_key("sk-a", key_file)
    with pytest.raises(ConfigurationError, match="could not read the API key file"):
        read_api_key(key_file=tmp_path / "missing")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigurationError, match="empty"):
        read_api_key(key_file=tmp_path / "empty")


@pytest.mark.parametrize("bad", ["sk-with space", "sk-line\nbreak", "sk-non-ascii-é", ""])
def test_keys_an_http_header_cannot_carry_are_refused(bad: str) -> None:
    with pytest.raises(ConfigurationError):
        check_api_key(bad)
    with pytest.raises(ConfigurationError):
        LocalEmbeddingServer("/m", api_key=bad)


def test_the_local_backend_gets_its_key_by_environment_not_argv() -> None:
    server = LocalEmbeddingServer("/m", port=4321, api_key="sk-env-only-4242", allowed_hosts=["gpu-box.lan"])
    argv = server.command()
    assert "sk-env-only-4242" not in " ".join(argv) and "--api-key" not in argv
    assert argv[argv.index("--allowed-hosts") + 1] == "gpu-box.lan"
    shown = server.display_command()
    assert shown.startswith(f"{SERVER_API_KEY_ENV}=*** ") and "sk-env-only-4242" not in shown
    with pytest.raises(ConfigurationError, match="allowed_hosts"):
        LocalEmbeddingServer("/m", allowed_hosts="gpu-box.lan")  # type: ignore[arg-type]
