"""A hostile HTTP server for the client's tests: a real socket on 127.0.0.1, in a thread.

No working server misbehaves this way (it drips its headers or body a byte at a time, or sends a
compressed bomb), so these exist only to show what the client does when something does. Each
connection reads one request and plays a *script*: a generator of ``(pause, bytes)`` steps. Every
script is finite, pauses are short, and leaving the context stops all of them (bounded tests).
"""

from __future__ import annotations

import socket
import struct
import threading
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Script = Callable[[bytes], Iterator[tuple[float, bytes]]]


def _read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


@contextmanager
def hostile_server(script: Script) -> Iterator[str]:
    """Serve ``script`` to every connection; yields the base URL (``http://127.0.0.1:PORT/v1``)."""
    stop = threading.Event()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)

    def play(conn: socket.socket) -> None:
        with conn:
            try:
                conn.settimeout(10)
                request = _read_request(conn)
                for pause, data in script(request):
                    if stop.wait(pause):
                        return
                    conn.sendall(data)
            except OSError:  # the client gave up (what most tests want to see)
                return

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=play, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


def response_head(status: str = "200 OK", **headers: str | int) -> bytes:
    lines = [f"HTTP/1.1 {status}"] + [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def drip(data: bytes, every: float) -> Iterator[tuple[float, bytes]]:
    """``data`` one byte at a time, ``every`` seconds apart."""
    for i in range(len(data)):
        yield every, data[i : i + 1]


def gzip_bomb(mib: int) -> tuple[int, Iterator[bytes]]:
    """A gzip body that expands to ``mib`` MiB of zeros: its length, and its bytes in pieces.

    One MiB of zeros compressed and fully flushed (so that the piece stands alone), repeated;
    about 1 KiB per MiB, made in milliseconds whatever ``mib``.
    """
    mebibyte = bytes(1 << 20)
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    first = compressor.compress(mebibyte) + compressor.flush(zlib.Z_FULL_FLUSH)
    again = compressor.compress(mebibyte) + compressor.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(mib):
        crc = zlib.crc32(mebibyte, crc)
    tail = b"\x03\x00" + struct.pack("<II", crc, (mib << 20) & 0xFFFFFFFF)  # an empty final block, CRC, size

    def pieces() -> Iterator[bytes]:
        yield first
        for _ in range(mib - 1):
            yield again
        yield tail

    return len(first) + (mib - 1) * len(again) + len(tail), pieces()
