"""A real Chroma server process (``chroma run`` of the chromadb package) for tests and docs blocks.

The vector store of a multi-machine pipeline is a server: `ChromaServer` starts one on a free
loopback port with its data in a given directory, waits until it answers, and stops it (SIGTERM,
then SIGKILL to its process group) on exit, checking that it is gone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from qwen_sglang.servers import free_port

CHROMA = Path(sys.executable).parent / "chroma"


class ChromaServer:
    """``chroma run --path PATH --host 127.0.0.1 --port FREE``, as a context manager."""

    def __init__(self, path: Path, *, startup_timeout: float = 60.0) -> None:
        self.path = path
        self.host = "127.0.0.1"
        self.port = free_port(self.host)
        self.startup_timeout = startup_timeout
        self.log = path.parent / f"{path.name}.chroma.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ChromaServer:
        argv = [str(CHROMA), "run", "--path", str(self.path), "--host", self.host, "--port", str(self.port)]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()

    def client(self) -> Any:
        import chromadb

        return chromadb.HttpClient(host=self.host, port=self.port)

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chroma run exited {self.proc.returncode}:\n{self.log.read_text(errors='replace')}")
            try:
                self.client().heartbeat()
                return
            except Exception:  # not listening yet
                time.sleep(0.2)
        raise RuntimeError(f"chroma run did not answer in {self.startup_timeout:.0f}s:\n{self.log.read_text()}")

    def stop(self) -> None:
        """Stop the server and wait for it: nothing of it outlives the test."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
