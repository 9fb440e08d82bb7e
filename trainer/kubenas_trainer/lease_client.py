"""The worker pod's side of the operator's lease protocol (``worker --serve``).

The pod asks the operator for a trial (``/next``), runs it, reports its exit code and termination
message (``/done``) and only then asks again, so every result is recorded before the pod moves on
(docs/design-pod-reuse.md). Standard library only: the trainer image needs nothing more for it.
"""

import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

from kubenas.api.builtin_trainer import runs_builtin_trainer

TOKEN_VARIABLE = "KUBENAS_WORKER_TOKEN"
TERMINATION_VARIABLE = "KUBENAS_TERMINATION_MESSAGE_PATH"
# The worker Job's variables, by the field of a request body each one fills.
IDENTITY_VARIABLES = {
    "namespace": "KUBENAS_NAMESPACE",
    "experiment": "KUBENAS_EXPERIMENT",
    "worker": "KUBENAS_WORKER",
    "pod": "KUBENAS_POD",
}
REQUEST_TIMEOUT = 60.0  # the operator holds a /next for up to ~25 s before answering
FIRST_BACKOFF = 0.5
MAX_BACKOFF = 5.0
EXIT_GAVE_UP = 1
EXIT_MISCONFIGURED = 2
EXIT_REFUSED = 3
# A trial command that cannot be started at all, as a shell reports it.
EXIT_NOT_RUNNABLE = 127

Answer = TypeVar("Answer")


class ServeError(Exception):
    """Why the worker stops before it is told to, with the exit status it stops with."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class _Unanswered(Exception):
    """The operator answered, but not with something to act on: worth asking again."""


@dataclass(frozen=True)
class Assignment:
    """One trial the operator leased to this worker."""

    trial: str
    lease: str
    command: list[str]
    env: dict[str, str]

    @classmethod
    def from_json(cls, value: Any) -> "Assignment":
        """Raises ValueError for an assignment that is not shaped as the protocol says."""
        if not isinstance(value, dict):
            raise ValueError(f"malformed assignment {value!r}")
        trial, lease, command = value.get("trial"), value.get("lease"), value.get("command")
        env = value.get("env", {})
        if not (
            isinstance(trial, str)
            and isinstance(lease, str)
            and isinstance(command, list)
            and command
            and all(isinstance(part, str) for part in command)
            and isinstance(env, dict)
            and all(isinstance(item, str) for pair in env.items() for item in pair)
        ):
            raise ValueError(f"malformed assignment {value!r}")
        return cls(trial, lease, list(command), dict(env))


@dataclass(frozen=True)
class Stop:
    """The operator has no more work for this worker."""

    reason: str


class LeaseClient:
    """The two requests of the protocol. Each is repeated with back-off through an operator
    restart or a network fault, until ``patience`` seconds of failures in a row."""

    def __init__(
        self,
        url: str,
        identity: Mapping[str, str],
        token: str,
        *,
        patience: float = 600.0,
        timeout: float = REQUEST_TIMEOUT,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ServeError(
                f"--serve needs an http(s)://HOST[:PORT] URL, got {url!r}", EXIT_MISCONFIGURED
            )
        namespace, experiment = identity["namespace"], identity["experiment"]
        self.base = f"{url.rstrip('/')}/v1/leases/{quote(namespace)}/{quote(experiment)}"
        self.sender = {"worker": identity["worker"], "pod": identity["pod"]}
        self.token = token
        self.patience = patience
        self.timeout = timeout
        self.sleep = sleep
        self.clock = clock
        # The operator's Service is inside the cluster: a proxy meant for the outside must not
        # stand between them.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    @classmethod
    def from_env(cls, url: str, environ: Mapping[str, str], **options: Any) -> "LeaseClient":
        """The client the worker Job's environment describes; every variable it lacks is named."""
        wanted = (*IDENTITY_VARIABLES.values(), TOKEN_VARIABLE)
        missing = [name for name in wanted if not environ.get(name)]
        if missing:
            raise ServeError(
                f"--serve needs {', '.join(missing)} in the environment (the operator's worker "
                "Job sets them)",
                EXIT_MISCONFIGURED,
            )
        identity = {field: environ[name] for field, name in IDENTITY_VARIABLES.items()}
        return cls(url, identity, environ[TOKEN_VARIABLE], **options)

    def next(self) -> Assignment | Stop:
        """The trial the operator gives this worker next, or why there is none."""
        while True:
            answer = self._exchange("next", self.sender, _next_answer)
            if answer is not None:
                return answer

    def done(self, assignment: Assignment, code: int, message: str) -> bool:
        """Report how a trial ended: True once recorded, False when its lease had been given
        to another worker (410), whose run is the one that counts."""
        body = {
            **self.sender,
            "trial": assignment.trial,
            "lease": assignment.lease,
            "exit": code,
            "message": message,
        }
        return self._exchange("done", body, _done_answer)

    def _exchange(
        self, action: str, body: Mapping[str, Any], decode: Callable[[int, Any], Answer]
    ) -> Answer:
        """POST ``body`` until ``decode`` accepts the answer; a refused token ends at once."""
        failing_since: float | None = None
        backoff = FIRST_BACKOFF
        while True:
            try:
                status, answer = self._post(action, body)
                if status in (401, 403):
                    raise ServeError(
                        f"the operator refused this worker's token (HTTP {status} on /{action})",
                        EXIT_REFUSED,
                    )
                return decode(status, answer)
            except (_Unanswered, OSError, http.client.HTTPException, ValueError) as error:
                problem = str(error) if isinstance(error, _Unanswered) else repr(error)
            now = self.clock()
            failing_since = now if failing_since is None else failing_since
            failing = now - failing_since
            if failing >= self.patience:
                raise ServeError(
                    f"gave up on the operator at {self.base}/{action} after {failing:.1f} s of "
                    f"failures (--patience {self.patience:g}); last: {problem}",
                    EXIT_GAVE_UP,
                )
            pause = min(backoff, self.patience - failing)
            print(
                f"kubenas worker: /{action} failed ({problem}); retrying in {pause:.1f} s",
                file=sys.stderr,
                flush=True,
            )
            self.sleep(pause)
            backoff = min(2 * backoff, MAX_BACKOFF)

    def _post(self, action: str, body: Mapping[str, Any]) -> tuple[int, Any]:
        """One attempt: the HTTP status and, for a 200, the decoded JSON answer."""
        request = urllib.request.Request(
            f"{self.base}/{action}",
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                status: int = response.status
                raw = response.read()
                return status, json.loads(raw) if status == 200 and raw else None
        except urllib.error.HTTPError as error:
            error.close()
            return error.code, None


def _next_answer(status: int, answer: Any) -> Assignment | Stop | None:
    """What a /next answer asks of the worker; None: ask again at once."""
    if status != 200:
        raise _Unanswered(f"HTTP {status}")
    if isinstance(answer, dict):
        if "assignment" in answer:
            return Assignment.from_json(answer["assignment"])
        if answer.get("stop") is True:
            return Stop(str(answer.get("reason") or "no reason given"))
        if answer.get("retry") is True:
            return None
    raise _Unanswered(f"unexpected answer {answer!r}")


def _done_answer(status: int, answer: Any) -> bool:
    """Whether the operator recorded this run (410: the lease had moved on); else ask again."""
    if status in (200, 410):
        return status == 200
    raise _Unanswered(f"HTTP {status}")


def trial_environment(
    base: Mapping[str, str], assigned: Mapping[str, str], termination_path: str
) -> dict[str, str]:
    """The pod's environment without the worker token (a trial is user code and must not speak
    to the operator as this worker), then the assignment's, then where to leave the summary."""
    env = {name: value for name, value in base.items() if name != TOKEN_VARIABLE}
    env.update(assigned)
    env[TERMINATION_VARIABLE] = termination_path
    return env


def run_command(command: list[str], env: Mapping[str, str]) -> int:
    """A trial command as a child sharing the pod's output; death by a signal is 128 + its
    number, as a shell (and the kubelet) reports it."""
    try:
        returncode = subprocess.run(command, env=env, check=False).returncode
    except OSError as error:
        print(f"kubenas worker: cannot run {command[0]!r}: {error}", file=sys.stderr, flush=True)
        return EXIT_NOT_RUNNABLE
    return 128 - returncode if returncode < 0 else returncode


def run_assignment(
    assignment: Assignment, run_builtin: Callable[[dict[str, str]], int]
) -> tuple[int, str]:
    """Run one trial, the built-in trainer through ``run_builtin`` (in this warm process), any
    other command as a child; its exit code and termination message ("" when it left none)."""
    descriptor, termination = tempfile.mkstemp(prefix="kubenas-termination-", suffix=".json")
    os.close(descriptor)
    env = trial_environment(os.environ, assignment.env, termination)
    print(f"kubenas worker: trial {assignment.trial} (lease {assignment.lease}) starts", flush=True)
    try:
        if runs_builtin_trainer(assignment.command):
            code = run_builtin(env)
        else:
            code = run_command(assignment.command, env)
        try:
            message = Path(termination).read_text(errors="replace")
        except OSError:
            message = ""
    finally:
        Path(termination).unlink(missing_ok=True)
    print(f"kubenas worker: trial {assignment.trial} ended with exit code {code}", flush=True)
    return code, message


def serve_leases(
    client: LeaseClient, max_trials: int, run_builtin: Callable[[dict[str, str]], int]
) -> None:
    """Ask for, run and report trials until the operator says stop or ``max_trials`` are done;
    raises ServeError when the operator cannot be reached or refuses the worker."""
    for _ in range(max_trials):
        work = client.next()
        if isinstance(work, Stop):
            print(f"kubenas worker: stopping: {work.reason}", flush=True)
            return
        code, message = run_assignment(work, run_builtin)
        if not client.done(work, code, message):
            print(
                f"kubenas worker: the lease of trial {work.trial} was given to another worker; "
                "this run's result is not recorded",
                flush=True,
            )
    print(
        f"kubenas worker: ran {max_trials} trial(s), this worker's limit (--max-trials)", flush=True
    )
