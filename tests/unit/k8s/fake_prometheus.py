"""A fake Prometheus and Pushgateway on a real local HTTP server, for the reconciler's unit tier.

A fake, not Prometheus: it holds what trials "pushed" and answers the one instant query the
operator makes (``/api/v1/query``, vector result) with every series of the asked experiment,
and the Pushgateway's group ``DELETE``. The operator's real HTTP code (urllib, timeouts, JSON)
runs against it. It can be slow (``delay``), answer errors (``broken``) or be stopped. The e2e
tests use the real Prometheus and Pushgateway.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Pushed:
    metrics: dict[str, float]
    epoch: int
    final: bool = False


@dataclass
class FakeMetricsState:
    groups: dict[tuple[str, str, str], Pushed] = field(default_factory=dict)
    queries: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    delay: float = 0.0
    broken: bool = False


def _labels(query: str) -> dict[str, str]:
    return dict(re.findall(r'(\w+)="([^"]*)"', query))


def _vector(state: FakeMetricsState, query: str) -> list[dict[str, Any]]:
    asked = _labels(query)
    result: list[dict[str, Any]] = []
    for (namespace, experiment, trial), pushed in state.groups.items():
        if (asked.get("namespace"), asked.get("experiment")) != (namespace, experiment):
            continue
        if asked.get("trial", trial) != trial:
            continue
        base = {
            "job": "kubenas-trial",
            "namespace": namespace,
            "experiment": experiment,
            "trial": trial,
        }
        series: list[tuple[dict[str, str], float]] = [
            ({"__name__": "kubenas_trial_metric", "name": name}, value)
            for name, value in pushed.metrics.items()
        ]
        series.append(({"__name__": "kubenas_trial_epoch"}, pushed.epoch))
        series.append(({"__name__": "kubenas_trial_final"}, 1.0 if pushed.final else 0.0))
        result += [
            {"metric": {**labels, **base}, "value": [time.time(), str(value)]}
            for labels, value in series
        ]
    return result


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up (the operator's query timeout) is expected here."""


class FakeMetricsServer:
    """Serves ``state`` on 127.0.0.1 until :meth:`stop`; ``url`` is both its Prometheus and its
    Pushgateway address."""

    def __init__(self) -> None:
        self.state = FakeMetricsState()
        state = self.state

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _reply(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                url = urllib.parse.urlparse(self.path)
                query = urllib.parse.parse_qs(url.query).get("query", [""])[0]
                state.queries.append(query)
                time.sleep(state.delay)
                if state.broken:
                    self._reply(503, {"status": "error", "error": "fake outage"})
                elif url.path == "/api/v1/query":
                    self._reply(
                        200,
                        {
                            "status": "success",
                            "data": {"resultType": "vector", "result": _vector(state, query)},
                        },
                    )
                else:
                    self._reply(404, {"status": "error", "error": "not found"})

            def do_DELETE(self) -> None:
                state.deleted.append(urllib.parse.unquote(self.path))
                if state.broken:
                    self._reply(503, {"status": "error", "error": "fake outage"})
                    return
                parts = self.path.strip("/").split("/")[1:]
                labels = dict(
                    zip(parts[::2], (urllib.parse.unquote(p) for p in parts[1::2]), strict=True)
                )
                state.groups.pop(
                    (
                        labels.get("namespace", ""),
                        labels.get("experiment", ""),
                        labels.get("trial", ""),
                    ),
                    None,
                )
                self._reply(202, {})

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self.thread.start()

    def push(self, namespace: str, experiment: str, trial: str, pushed: Pushed) -> None:
        self.state.groups[(namespace, experiment, trial)] = pushed

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
