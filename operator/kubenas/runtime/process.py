"""One trial on this machine: launch it (as its own process, or in a warm worker), follow its
reports, end it."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from kubenas.api.records import ScreenScores
from kubenas.screening import reported_scores

if TYPE_CHECKING:
    from kubenas.runtime.workers import Worker

STDERR_TAIL_BYTES = 2048
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Runs in the child before exec: a killed runner must not leave trainers behind."""
    os.setsid()
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def resolve_command(command: list[str]) -> list[str]:
    """``python`` in a trial command means this interpreter, so the installed trainer is found."""
    if command and command[0] in ("python", "python3"):
        return [sys.executable, *command[1:]]
    return list(command)


def end_process_group(popen: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM the process group ``popen`` leads (see die_with_parent), SIGKILL it after
    ``grace`` seconds; nothing if it has ended."""
    if popen.poll() is not None:
        return
    try:
        os.killpg(popen.pid, signal.SIGTERM)
        popen.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(popen.pid, signal.SIGKILL)
        popen.wait()
    except ProcessLookupError:
        pass


class Run(Protocol):
    """What runs a trial: when it started running (None: not yet), its exit code once it has
    ended, and a way to end it."""

    def started_at(self) -> float | None: ...
    def poll(self) -> int | None: ...
    def terminate(self, grace: float) -> None: ...


@dataclass
class OwnProcess:
    """The trial in a process of its own (``trial.command``), in its own process group."""

    popen: subprocess.Popen[bytes]
    launched: float = field(default_factory=time.time)

    def started_at(self) -> float | None:
        return self.launched

    def poll(self) -> int | None:
        return self.popen.poll()

    def terminate(self, grace: float) -> None:
        end_process_group(self.popen, grace)


@dataclass
class TrialProcess:
    name: str
    directory: Path
    run: Run
    gpu: str | None
    _offset: int = 0
    epochs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def report_path(self) -> Path:
        return self.directory / "report.jsonl"

    @property
    def termination_path(self) -> Path:
        return self.directory / "termination.json"

    @classmethod
    def launch(
        cls,
        name: str,
        directory: Path,
        command: list[str],
        env: dict[str, str],
        gpu: str | None,
        worker: Worker | None = None,
        checkpoint_dir: Path | None = None,
    ) -> TrialProcess:
        """Start the trial: in ``worker`` when given (the built-in trainer, warm), else as
        ``command`` in a process of its own. Either way it writes the same files; checkpoints
        go to ``checkpoint_dir``, by default ``directory/checkpoint``."""
        directory.mkdir(parents=True, exist_ok=True)
        termination = directory / "termination.json"
        termination.unlink(missing_ok=True)
        report = directory / "report.jsonl"
        offset = report.stat().st_size if report.exists() else 0
        trial_env = {
            **env,
            "KUBENAS_REPORT": f"jsonl:{report}",
            "KUBENAS_TERMINATION_MESSAGE_PATH": str(termination),
            "KUBENAS_CHECKPOINT_DIR": str(checkpoint_dir or directory / "checkpoint"),
        }
        stdout, stderr = directory / "stdout.log", directory / "stderr.log"
        if worker is not None:
            return cls(name, directory, worker.start(trial_env, stdout, stderr), gpu, offset)
        with stderr.open("ab") as err, stdout.open("ab") as out:
            popen = subprocess.Popen(
                resolve_command(command),
                env={**os.environ, **trial_env},
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                cwd=os.getcwd(),
                preexec_fn=die_with_parent,
            )
        return cls(name, directory, OwnProcess(popen), gpu, offset)

    def new_epochs(self) -> list[dict[str, Any]]:
        """Epoch reports written since the last call."""
        if not self.report_path.exists():
            return []
        with self.report_path.open("rb") as f:
            f.seek(self._offset)
            chunk = f.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self._offset += len(complete)
        fresh = []
        for line in complete.decode("utf-8", "replace").splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(event, dict) and event.get("event") == "epoch":
                fresh.append(event)
        self.epochs.extend(fresh)
        return fresh

    def screen_scores(self) -> ScreenScores | None:
        """The ``screen`` event of a screen trial's report: its scores per proxy."""
        try:
            return reported_scores(self.report_path.read_text(encoding="utf-8").splitlines())
        except OSError:
            return None

    def final_summary(self) -> dict[str, Any] | None:
        try:
            summary = json.loads(self.termination_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None
        return summary if isinstance(summary, dict) else None

    def stderr_tail(self) -> str:
        path = self.directory / "stderr.log"
        try:
            with path.open("rb") as f:
                f.seek(max(0, path.stat().st_size - STDERR_TAIL_BYTES))
                return f.read().decode("utf-8", "replace").strip()
        except OSError:
            return ""

    def started_at(self) -> float | None:
        """When the trial began running; None while its warm worker is still starting up."""
        return self.run.started_at()

    def poll(self) -> int | None:
        return self.run.poll()

    def terminate(self, grace: float = 5.0) -> None:
        self.run.terminate(grace)
