"""What the dataset tests share: a private cache (imported into a test module, the autouse
fixture applies to every test there) and a real HTTP server on loopback for fetches."""
from __future__ import annotations

import contextlib
import functools
import http.server
import socket
import threading
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path) -> Path:
    """A private cache; no user data dirs or mirrors; loopback never via a proxy."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("DLBENCH_CACHE", str(cache))
    monkeypatch.delenv("DLBENCH_DATA_DIR", raising=False)
    monkeypatch.delenv("DLBENCH_DATA_MIRROR", raising=False)
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")
    return cache


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve(directory: Path):
    """A real HTTP server on 127.0.0.1 serving ``directory``; yields its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def closed_port_url() -> str:
    """A loopback URL nobody listens on: connecting is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"
