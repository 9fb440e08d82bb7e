"""The operator's API client over a real keep-alive HTTP connection (a local server playing the
API server): a response whose body the client does not want must not leak into the next call.

Found in the operator benchmark: the body of a Job create, released unread, was read back as
the status line of the next request on that connection (``BadStatusLine``), failing the pass.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from kubernetes import client

from kubenas.k8s.client import Api

BODY_DELAY_SECONDS = 0.2


class _ApiServer(BaseHTTPRequestHandler):
    """Answers every request with a JSON echo of it; the headers go out at once and the body
    a moment later, as a busy API server's would."""

    protocol_version = "HTTP/1.1"  # keep-alive, like the API server
    connections: set[int] = set()

    def _answer(self, status: int) -> None:
        self.connections.add(id(self.connection))
        length = int(self.headers.get("Content-Length") or 0)
        sent = json.loads(self.rfile.read(length) or b"{}")
        body = json.dumps(
            {"method": self.command, "path": self.path, "sent": sent, "pad": "x" * 2000}
        ).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.flush()
        time.sleep(BODY_DELAY_SECONDS)
        self.wfile.write(body)

    def do_POST(self) -> None:
        self._answer(201)

    def do_DELETE(self) -> None:
        self._answer(200)

    def do_PATCH(self) -> None:
        self._answer(200)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def api() -> Iterator[Api]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ApiServer)
    _ApiServer.connections = set()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    previous = client.Configuration.get_default_copy()
    configuration = client.Configuration(host=f"http://127.0.0.1:{server.server_port}")
    client.Configuration.set_default(configuration)
    try:
        yield Api()
    finally:
        client.Configuration.set_default(previous)
        server.shutdown()
        server.server_close()


JOB = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "t-1", "namespace": "ns"}}


def test_a_created_jobs_unread_answer_does_not_become_the_next_calls(api: Api) -> None:
    assert api.create_job(JOB) is True
    patched = api.patch_trial_status("ns", "t-1", {"phase": "Running"})
    assert patched["method"] == "PATCH"
    assert patched["sent"] == {"status": {"phase": "Running"}}
    assert len(_ApiServer.connections) == 1, "the connection was reused, not dropped"


def test_a_deleted_jobs_unread_answer_does_not_become_the_next_calls(api: Api) -> None:
    api.delete_job("ns", "t-1")
    patched = api.patch_trial_status("ns", "t-2", {"phase": "Succeeded"})
    assert patched["path"].endswith("/namespaces/ns/nastrials/t-2/status")
    assert len(_ApiServer.connections) == 1
