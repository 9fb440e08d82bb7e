"""The warm worker as a worker pod (``worker --serve``) against a fake operator: leases asked
for, trials run and reported, retried through operator failures, and the exits it ends with.

The end-to-end tests run the real worker process (each pays its warm-up, a few seconds); the
others drive the lease client in-process with a recorded sleep, so back-off costs no time and
can be checked exactly.
"""

import itertools
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from kubenas_trainer.lease_client import (
    Assignment,
    LeaseClient,
    ServeError,
    Stop,
    serve_leases,
    trial_environment,
)

REPO = Path(__file__).resolve().parents[2]
TOKEN = "s3cret-token"
IDENTITY = {"namespace": "team", "experiment": "exp", "worker": "exp-w0", "pod": "exp-w0-x1"}
WORKER_ENV = {
    "KUBENAS_NAMESPACE": "team",
    "KUBENAS_EXPERIMENT": "exp",
    "KUBENAS_WORKER": "exp-w0",
    "KUBENAS_POD": "exp-w0-x1",
    "KUBENAS_WORKER_TOKEN": TOKEN,
    "KUBENAS_DEVICE": "cpu",
    "CUDA_VISIBLE_DEVICES": "",
}
# A user's trial in miniature: it prints, leaves a summary where the contract says and exits
# with the code its assignment asks for. The summary shows what environment it saw.
TRIAL_SCRIPT = """
import json, os, sys
print("hello from", os.environ["KUBENAS_TRIAL"])
path = os.environ["KUBENAS_TERMINATION_MESSAGE_PATH"]
seen = {name: os.environ.get(name) for name in ("KUBENAS_WORKER_TOKEN", "COLOUR")}
with open(path, "w") as stream:
    json.dump({"trial": os.environ["KUBENAS_TRIAL"], "seen": seen, "path": path}, stream)
sys.exit(int(os.environ.get("TRIAL_EXIT", "0")))
"""

Reply = tuple[int, dict[str, Any]]


def assignment(trial: str, exit_code: int = 0) -> Reply:
    env = {"KUBENAS_TRIAL": trial, "TRIAL_EXIT": str(exit_code), "COLOUR": "teal"}
    command = [sys.executable, "-c", TRIAL_SCRIPT]
    return 200, {
        "assignment": {"trial": trial, "lease": f"lease-{trial}", "command": command, "env": env}
    }


@dataclass
class Request:
    action: str
    path: str
    authorization: str
    body: dict[str, Any]


class FakeLeaseServer:
    """A FAKE operator lease endpoint: answers each /next and /done with the next scripted reply
    for it and records every request. A /next past its script says stop; a /done, recorded."""

    def __init__(self, next_replies: Iterable[Reply] = (), done_replies: Iterable[Reply] = ()):
        self.requests: list[Request] = []
        scripts = {"next": iter(next_replies), "done": iter(done_replies)}
        defaults: dict[str, Reply] = {
            "next": (200, {"stop": True, "reason": "no more candidates"}),
            "done": (200, {"recorded": True}),
        }
        lock = threading.Lock()
        requests = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"null")
                action = self.path.rsplit("/", 1)[-1]
                with lock:
                    authorization = self.headers.get("Authorization", "")
                    requests.append(Request(action, self.path, authorization, body))
                    known = action in scripts
                    status, reply = next(scripts[action], defaults[action]) if known else (404, {})
                payload = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()

    def actions(self) -> list[str]:
        return [request.action for request in self.requests]

    def done(self) -> list[dict[str, Any]]:
        return [request.body for request in self.requests if request.action == "done"]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


StartServer = Callable[..., FakeLeaseServer]


@pytest.fixture
def lease_server() -> Iterator[StartServer]:
    """Starts a FakeLeaseServer with the replies given; each is closed after the test."""
    started: list[FakeLeaseServer] = []

    def start(*replies: Iterable[Reply]) -> FakeLeaseServer:
        started.append(FakeLeaseServer(*replies))
        return started[-1]

    yield start
    for server in started:
        server.close()


def run_worker(
    url: str, *flags: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The real worker process, as a worker Job starts it."""
    paths = [str(REPO / "operator"), str(REPO / "trainer"), os.environ.get("PYTHONPATH", "")]
    environment = {
        **os.environ,
        **(WORKER_ENV if env is None else env),
        "PYTHONPATH": os.pathsep.join(filter(None, paths)),
    }
    return subprocess.run(
        [sys.executable, "-m", "kubenas_trainer.worker", "--serve", url, *flags],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def no_builtin(env: dict[str, str]) -> int:
    raise AssertionError("no built-in trial was assigned")


def client(url: str, sleeps: list[float]) -> LeaseClient:
    return LeaseClient(url, IDENTITY, TOKEN, sleep=sleeps.append)


def test_two_assignments_then_stop(lease_server: StartServer) -> None:
    fake = lease_server([assignment("exp-0001", 0), assignment("exp-0002", 3)])
    worker = run_worker(fake.url, "--max-trials", "5")
    assert worker.returncode == 0, worker.stderr
    assert fake.actions() == ["next", "done", "next", "done", "next"]
    assert all(r.authorization == f"Bearer {TOKEN}" for r in fake.requests)
    assert {r.path for r in fake.requests if r.action == "next"} == {"/v1/leases/team/exp/next"}
    assert all(r.body["worker"] == "exp-w0" and r.body["pod"] == "exp-w0-x1" for r in fake.requests)
    reports = fake.done()
    assert [(r["trial"], r["lease"], r["exit"]) for r in reports] == [
        ("exp-0001", "lease-exp-0001", 0),
        ("exp-0002", "lease-exp-0002", 3),
    ]
    for report in reports:
        message = json.loads(report["message"])
        assert message["trial"] == report["trial"]
        assert message["seen"] == {"KUBENAS_WORKER_TOKEN": None, "COLOUR": "teal"}
        assert not Path(message["path"]).exists()  # each trial's file, removed after it
    assert reports[0]["message"] != reports[1]["message"]
    out = worker.stdout
    assert "kubenas worker: trial exp-0001 (lease lease-exp-0001) starts" in out
    assert "hello from exp-0002" in out  # the trial's output is the pod's log
    assert "kubenas worker: trial exp-0002 ended with exit code 3" in out
    assert "stopping: no more candidates" in out


def test_max_trials_ends_the_worker_however_much_work_is_left(lease_server: StartServer) -> None:
    fake = lease_server(assignment(f"exp-{n:04}") for n in itertools.count())
    worker = run_worker(fake.url, "--max-trials", "2")
    assert worker.returncode == 0, worker.stderr
    assert fake.actions() == ["next", "done", "next", "done"]


def test_an_unreachable_operator_ends_the_worker_with_1_after_its_patience() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    worker = run_worker(f"http://127.0.0.1:{port}", "--patience", "1")
    assert worker.returncode == 1
    assert "gave up on the operator" in worker.stderr
    assert "--patience 1" in worker.stderr


def test_a_missing_variable_is_named_and_ends_the_worker_with_2() -> None:
    env = {name: value for name, value in WORKER_ENV.items() if name != "KUBENAS_POD"}
    worker = run_worker("http://127.0.0.1:9", env=env)
    assert worker.returncode == 2
    assert "KUBENAS_POD" in worker.stderr


def test_a_refused_token_ends_the_worker_with_3(lease_server: StartServer) -> None:
    fake = lease_server([(403, {})])
    with pytest.raises(
        ServeError, match=r"refused this worker's token \(HTTP 403 on /next\)"
    ) as ended:
        client(fake.url, []).next()
    assert ended.value.code == 3
    assert fake.actions() == ["next"]


def test_done_is_retried_with_the_same_body_before_the_next_trial(
    lease_server: StartServer,
) -> None:
    fake = lease_server(
        [assignment("exp-0001", 1), assignment("exp-0002")],
        [(503, {}), (503, {}), (200, {"recorded": True})],
    )
    sleeps: list[float] = []
    serve_leases(client(fake.url, sleeps), 2, no_builtin)
    assert fake.actions() == ["next", "done", "done", "done", "next", "done"]
    first, again, recorded, _ = fake.done()
    assert first == again == recorded
    assert first["exit"] == 1
    assert sleeps == [0.5, 1.0]


def test_a_lease_given_away_is_not_retried(
    lease_server: StartServer, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = lease_server([assignment("exp-0001"), assignment("exp-0002")], [(410, {})])
    serve_leases(client(fake.url, []), 3, no_builtin)
    assert [r["trial"] for r in fake.done()] == ["exp-0001", "exp-0002"]
    assert fake.actions() == ["next", "done", "next", "done", "next"]
    assert "lease of trial exp-0001 was given to another worker" in capsys.readouterr().out


def test_retry_asks_again_at_once(lease_server: StartServer) -> None:
    fake = lease_server([(200, {"retry": True}), (200, {"retry": True}), assignment("exp-0001")])
    sleeps: list[float] = []
    serve_leases(client(fake.url, sleeps), 1, no_builtin)
    assert fake.actions() == ["next", "next", "next", "done"]
    assert sleeps == []


def test_errors_back_off_doubling_up_to_5_s_until_patience_runs_out(
    lease_server: StartServer,
) -> None:
    fake = lease_server(itertools.repeat((409, {})))
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    lease_client = LeaseClient(
        fake.url, IDENTITY, TOKEN, patience=20, sleep=sleep, clock=lambda: now[0]
    )
    with pytest.raises(ServeError) as ended:
        lease_client.next()
    assert ended.value.code == 1
    assert sleeps == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 2.5]


def test_a_malformed_answer_is_an_error_to_retry(lease_server: StartServer) -> None:
    fake = lease_server([(200, {"assignment": {"trial": "exp-0001"}}), (200, {"what": 1})])
    sleeps: list[float] = []
    assert client(fake.url, sleeps).next() == Stop("no more candidates")
    assert sleeps == [0.5, 1.0]


def test_a_trial_sees_the_pod_without_the_token_then_its_assignment() -> None:
    base = {"KUBENAS_WORKER_TOKEN": TOKEN, "HOME": "/root", "COLOUR": "red"}
    env = trial_environment(base, {"COLOUR": "teal", "KUBENAS_TRIAL": "t"}, "/tmp/term")
    assert env == {
        "HOME": "/root",
        "COLOUR": "teal",
        "KUBENAS_TRIAL": "t",
        "KUBENAS_TERMINATION_MESSAGE_PATH": "/tmp/term",
    }


def test_an_assignment_must_name_its_trial_lease_and_command() -> None:
    with pytest.raises(ValueError):
        Assignment.from_json({"trial": "t", "lease": "l", "command": []})
    parsed = Assignment.from_json({"trial": "t", "lease": "l", "command": ["run"]})
    assert parsed == Assignment("t", "l", ["run"], {})


def test_a_builtin_trial_trains_in_the_worker_process(
    lease_server: StartServer, tmp_path: Path
) -> None:
    architecture = {"stem_channels": 4, "stages": [{"width": 4, "blocks": ["conv3x3"]}]}
    env = {
        "KUBENAS_TRIAL": "exp-0001",
        "KUBENAS_FAMILY": "chain",
        "KUBENAS_ARCHITECTURE": json.dumps(architecture),
        "KUBENAS_DATASET": "digits",
        "KUBENAS_EPOCHS": "1",
        "KUBENAS_CHECKPOINT_DIR": str(tmp_path / "checkpoint"),
    }
    command = ["python", "-m", "kubenas_trainer"]
    reply = {"trial": "exp-0001", "lease": "l1", "command": command, "env": env}
    fake = lease_server([(200, {"assignment": reply})])
    worker = run_worker(fake.url, "--dataset", "digits")
    assert worker.returncode == 0, worker.stderr
    [report] = fake.done()
    assert report["exit"] == 0
    summary = json.loads(report["message"])
    assert summary["event"] == "final" and summary["trial"] == "exp-0001"
    assert 0 <= summary["metrics"]["val_accuracy"] <= 1
