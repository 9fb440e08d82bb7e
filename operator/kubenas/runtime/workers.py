"""Warm workers for ``kubenas run``: one ``python -m kubenas_trainer.worker`` per slot (a GPU, or
a share of the CPUs), which trains the built-in trainer's trials one after another.

A worker imports torch and loads the dataset once; each trial then starts in milliseconds
instead of seconds. Isolation is kept where users rely on it: a trial that fails, hangs or
times out takes its worker with it, and the slot's next trial gets a new one. Each trial still
writes its own report, termination message, logs and checkpoint in its own folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from kubenas.runtime.process import STDERR_TAIL_BYTES, die_with_parent, end_process_group


class Worker:
    """One worker process; it runs at most one trial at a time."""

    def __init__(self, env: dict[str, str], dataset: str, log: Path) -> None:
        self.log = log
        self._trial_stderr: Path | None = None
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as stderr:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "kubenas_trainer.worker", "--dataset", dataset],
                env={**os.environ, **env},
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                preexec_fn=die_with_parent,
            )
        self._lock = threading.Lock()
        self._answer: int | None = None
        self._started_at: float | None = None
        self._answered = threading.Event()
        threading.Thread(target=self._read_answers, daemon=True).start()

    def _read_answers(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            message = json.loads(line)
            with self._lock:
                if "started" in message:
                    self._started_at = float(message["started"])
                    continue
                self._answer = int(message["exit"])
            self._answered.set()

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def start(self, env: dict[str, str], stdout: Path, stderr: Path) -> WorkerRun:
        job = {"env": env, "stdout": str(stdout), "stderr": str(stderr), "cwd": os.getcwd()}
        with self._lock:
            self._answer = None
            self._started_at = None
            self._answered.clear()
            self._trial_stderr = stderr
        assert self.popen.stdin is not None
        try:
            self.popen.stdin.write((json.dumps(job) + "\n").encode())
            self.popen.stdin.flush()
        except OSError:  # the worker has just died: answer() reports how
            pass
        return WorkerRun(self)

    @property
    def started_at(self) -> float | None:
        """When the worker began the running trial; None while it is still starting up."""
        with self._lock:
            return self._started_at

    def answer(self) -> int | None:
        """The running trial's exit code: the worker's answer, or how the worker itself ended
        (a negative signal number, as for a process of its own)."""
        with self._lock:
            if self._answer is not None:
                return self._answer
        code = self.popen.poll()
        if code is None:
            return None
        self._answered.wait(1.0)  # an answer written just before the worker ended
        with self._lock:
            if self._answer is not None:
                return self._answer
            stderr, self._trial_stderr = self._trial_stderr, None
        if stderr is not None:
            self._explain(stderr, code)
        return code

    def _explain(self, stderr: Path, code: int) -> None:
        """A worker that ended without answering (killed, or failed before it could run the
        trial) leaves its reason in its own log: the trial's log gets the end of it."""
        try:
            tail = self.log.read_bytes()[-STDERR_TAIL_BYTES:].decode("utf-8", "replace")
        except OSError:
            tail = ""
        with stderr.open("a", encoding="utf-8") as out:
            out.write(f"\nthe warm worker running this trial ended (exit code {code})\n{tail}")

    def stop(self, grace: float = 5.0) -> None:
        """End the worker, and a trial it runs."""
        end_process_group(self.popen, grace)


@dataclass
class WorkerRun:
    """A trial in a worker, seen as :class:`kubenas.runtime.process.Run`."""

    worker: Worker

    def poll(self) -> int | None:
        return self.worker.answer()

    def started_at(self) -> float | None:
        return self.worker.started_at

    def terminate(self, grace: float) -> None:
        self.worker.stop(grace)


class WorkerPool:
    """A worker per slot, started ahead of need and replaced when a trial ends it."""

    def __init__(self, dataset: str, logs: Path) -> None:
        self.dataset = dataset
        self.logs = logs
        self.workers: dict[str, Worker] = {}
        self.started = 0

    def warm(self, slot: str, env: dict[str, str]) -> Worker:
        """The slot's worker, started now if it has none alive."""
        worker = self.workers.get(slot)
        if worker is None or not worker.alive:
            self.started += 1
            worker = Worker(env, self.dataset, self.logs / f"worker-{slot}.log")
            self.workers[slot] = worker
        return worker

    def finished(self, slot: str, code: int) -> None:
        """A trial in the slot ended with ``code``: after a failure its worker goes, so no
        state a failing trial left behind reaches the next one."""
        if code != 0 and (worker := self.workers.pop(slot, None)) is not None:
            worker.stop()

    def close(self) -> None:
        for worker in self.workers.values():
            if worker.popen.stdin is not None:
                # The worker's loop ends at end of input; a dead worker's pipe refuses the
                # flush of what it never read.
                with contextlib.suppress(OSError):
                    worker.popen.stdin.close()
        for worker in self.workers.values():
            try:
                worker.popen.wait(5)
            except subprocess.TimeoutExpired:
                worker.stop()
        self.workers.clear()
