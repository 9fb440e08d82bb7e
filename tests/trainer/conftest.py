"""Shared fixtures for the trainer tests: small architectures and a fake Pushgateway."""

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest

NB201_SMALL = {
    "cell": "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|"
    "skip_connect~2|",
    "stem_channels": 16,
    "cells_per_stage": 1,
}
CHAIN_TINY = {
    "stem_channels": 8,
    "stages": [{"width": 8, "blocks": ["conv3x3"]}, {"width": 16, "blocks": ["sepconv3x3"]}],
}


@pytest.fixture
def small_architectures() -> dict[str, dict[str, Any]]:
    """One small, quick-to-train architecture per family, keyed by family name."""
    return {"nb201-cell": dict(NB201_SMALL), "chain": dict(CHAIN_TINY)}


@dataclass
class RecordedRequest:
    method: str
    path: str
    body: str


@dataclass
class FakePushgateway:
    """Records every request; stands in for a real Pushgateway (its e2e test lives elsewhere)."""

    url: str
    requests: list[RecordedRequest] = field(default_factory=list)


@pytest.fixture
def fake_pushgateway() -> Iterator[FakePushgateway]:
    """A FAKE Pushgateway: a local HTTP server that answers 200 and records what was pushed."""
    recorded: list[RecordedRequest] = []

    class Handler(BaseHTTPRequestHandler):
        def _record(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode()
            recorded.append(RecordedRequest(self.command, self.path, body))
            self.send_response(200)
            self.end_headers()

        do_PUT = do_POST = do_DELETE = _record

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield FakePushgateway(f"http://127.0.0.1:{server.server_port}", recorded)
    finally:
        server.shutdown()
        server.server_close()
