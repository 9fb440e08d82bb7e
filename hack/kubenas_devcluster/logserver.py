"""The kubelet's log endpoint, so ``kubectl logs`` works through the API server.

One HTTPS server per agent process, on a free loopback port that every Node it serves
advertises as ``daemonEndpoints.kubeletEndpoint.Port``. It demands a client certificate signed
by the cluster CA, so only the API server (its kubelet-client cert) or an admin reads logs.
"""

from __future__ import annotations

import logging
import ssl
import threading
import urllib.parse
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# (namespace, pod, container) -> that container's log file; None when the agent runs no such
# pod or the pod has no such container.
LogLookup = Callable[[str, str, str], Path | None]
REQUEST_TIMEOUT_SECONDS = 30.0


class LogServer:
    """Binds at construction (so the port can go into the Node status), serves from
    :meth:`start`."""

    def __init__(self, cert: Path, key: Path, client_ca: Path) -> None:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(cert, key)
        tls.load_verify_locations(cafile=client_ca)
        tls.verify_mode = ssl.CERT_REQUIRED
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
        # Handshake in the request's thread, not in accept(): a stalled client blocks only itself.
        self._http.socket = tls.wrap_socket(
            self._http.socket, server_side=True, do_handshake_on_connect=False
        )
        self.port: int = self._http.server_address[1]

    def start(self, lookup: LogLookup) -> None:
        self._http.RequestHandlerClass = _handler(lookup)
        threading.Thread(target=self._http.serve_forever, name="kubelet-logs", daemon=True).start()

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()


def _handler(lookup: LogLookup) -> type[BaseHTTPRequestHandler]:
    class ContainerLogs(BaseHTTPRequestHandler):
        """``GET /containerLogs/{namespace}/{pod}/{container}``: the container's log file.

        ``tailLines`` then ``limitBytes`` apply, in the kubelet's order. ``follow``,
        ``timestamps`` and ``sinceSeconds``/``sinceTime`` are ignored: the answer is the file as
        it is now, and lines carry no time. ``previous=true`` is refused with 400, since the
        one file holds every run of a restarted container, not one per run.
        """

        timeout = REQUEST_TIMEOUT_SECONDS

        def handle(self) -> None:
            try:
                super().handle()
            except OSError as error:  # no or a foreign client cert, a reset, a timeout
                log.info("log request from %s dropped: %s", self.client_address[0], error)

        def do_GET(self) -> None:
            status, body = self._read()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _read(self) -> tuple[HTTPStatus, bytes]:
            url = urllib.parse.urlsplit(self.path)
            parts = [urllib.parse.unquote(p) for p in url.path.split("/")]
            if len(parts) != 5 or parts[:2] != ["", "containerLogs"]:
                return HTTPStatus.NOT_FOUND, f"no such path: {url.path}\n".encode()
            query = dict(urllib.parse.parse_qsl(url.query))
            if query.get("previous") == "true":
                return HTTPStatus.BAD_REQUEST, b"the dev cluster keeps no previous logs apart\n"
            try:
                tail, limit = (_count(query.get(k)) for k in ("tailLines", "limitBytes"))
            except ValueError as error:
                return HTTPStatus.BAD_REQUEST, f"{error}\n".encode()
            namespace, pod, container = parts[2:]
            path = lookup(namespace, pod, container)
            if path is None:
                return (
                    HTTPStatus.NOT_FOUND,
                    f"no container {container} in {namespace}/{pod}\n".encode(),
                )
            try:
                data = path.read_bytes()
            except FileNotFoundError:  # not started yet
                data = b""
            if tail is not None:
                data = _tail(data, tail)
            return HTTPStatus.OK, data if limit is None else data[:limit]

        def log_message(self, format: str, *args: Any) -> None:
            log.info("kubelet endpoint: %s", format % args)

    return ContainerLogs


def _count(value: str | None) -> int | None:
    if value is None:
        return None
    number = int(value)
    if number < 0:
        raise ValueError(f"negative count: {value}")
    return number


def _tail(data: bytes, lines: int) -> bytes:
    """The last ``lines`` lines; a last line without its newline counts, as for the kubelet."""
    if lines == 0:
        return b""
    start = len(data) - 1 if data.endswith(b"\n") else len(data)
    for _ in range(lines):
        start = data.rfind(b"\n", 0, start)
        if start < 0:
            return data
    return data[start + 1 :]
