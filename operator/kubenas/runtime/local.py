"""``kubenas run``: the whole search on this machine, trials as local processes.

The loop is the controller pattern in miniature: read the records, ask the engine, apply its
decisions, wait for a process to report. Records are persisted before anything is launched, so
an interrupted run started again with the same folder resumes where it stopped.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from kubenas.api.experiment import NASExperiment
from kubenas.api.loader import ExperimentError
from kubenas.api.records import TrialRecord, TrialState
from kubenas.contract import trial_environment, trial_name
from kubenas.engine import Decisions, StartTrial, decide, planner
from kubenas.runtime.display import Display
from kubenas.runtime.outputs import write_outputs
from kubenas.runtime.process import TrialProcess
from kubenas.runtime.store import RecordLog

POLL_SECONDS = 0.2


def detect_gpus() -> list[str]:
    """GPU indices from nvidia-smi (empty without a driver), without importing torch."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def _absolute_dataset(dataset: str) -> str:
    """``npz:``/``idx:`` paths relative to where the user ran the command."""
    kind, sep, rest = dataset.partition(":")
    if sep and kind in ("npz", "idx") and not Path(rest).is_absolute():
        return f"{kind}:{Path(rest).resolve()}"
    return dataset


class LocalRunner:
    def __init__(
        self, experiment: NASExperiment, out: Path, *, quiet: bool, cpu_slots: int
    ) -> None:
        self.experiment = experiment
        self.spec = experiment.spec
        self.out = out
        self.gpus = detect_gpus()
        self.parallel = self.spec.budget.parallel_trials
        if self.gpus:
            self.parallel = min(self.parallel, len(self.gpus))
        self.threads = max(1, cpu_slots // self.parallel)
        self.log = RecordLog(out / "trials.jsonl")
        self.running: dict[str, TrialProcess] = {}
        self.display = Display(experiment, quiet=quiet)
        self.plan = planner(self.spec)
        self.dataset = _absolute_dataset(self.spec.trial.dataset)

    # -- set-up and resume -------------------------------------------------------------------

    def _claim_folder(self) -> None:
        """Keep the experiment next to its results; refuse to mix two experiments in one folder."""
        self.out.mkdir(parents=True, exist_ok=True)
        saved = self.out / "experiment.yaml"
        current = self.experiment.to_wire()
        current.pop("status", None)
        if saved.exists():
            previous = yaml.safe_load(saved.read_text(encoding="utf-8"))
            if previous.get("spec") != current.get("spec"):
                raise ExperimentError(
                    str(saved),
                    [
                        f"spec: differs from the experiment already running in {self.out}; "
                        "use another --out to start a new search"
                    ],
                )
        else:
            saved.write_text(yaml.safe_dump(current, sort_keys=False), encoding="utf-8")

    def _resume_interrupted(self) -> None:
        """Trials that were running when the last run stopped start again, from their latest
        checkpoint when they wrote one."""
        for record in list(self.log.load().values()):
            if record.state.active:
                checkpoint = self.out / "trials" / record.name / "checkpoint" / "checkpoint.pt"
                resume = str(checkpoint) if checkpoint.exists() else record.resumed_from
                self.display.note(f"{record.name}: resuming after interruption")
                self._launch(record.with_changes(resumed_from=resume))

    # -- applying decisions --------------------------------------------------------------------

    def _architecture(self, record: TrialRecord) -> dict[str, Any]:
        return self.plan.space.to_architecture(self.plan.space.active(record.params))

    def _launch(self, record: TrialRecord) -> None:
        gpu = None
        if self.gpus:
            busy = {p.gpu for p in self.running.values()}
            gpu = next(g for g in self.gpus if g not in busy)
        env = trial_environment(
            self.experiment, record, self._architecture(record), dataset=self.dataset
        )
        env["OMP_NUM_THREADS"] = str(self.threads)
        env["KUBENAS_DEVICE"] = "cuda" if gpu is not None else "cpu"
        env["CUDA_VISIBLE_DEVICES"] = gpu if gpu is not None else ""
        now = time.time()
        record = record.with_changes(state=TrialState.RUNNING, started_at=now, intermediate=[])
        self.log.put(record)
        self.running[record.name] = TrialProcess.launch(
            record.name,
            self.out / "trials" / record.name,
            self.spec.trial.command,
            env,
            float(self.spec.trial.timeout_seconds),
            gpu,
        )
        self.display.note(f"{record.name}: started (fidelity {record.fidelity})")

    def _start(self, start: StartTrial) -> None:
        record = TrialRecord(
            name=trial_name(self.experiment.name, start.index),
            index=start.index,
            params=start.params,
            key=start.key,
            state=TrialState.PENDING,
            fidelity=start.fidelity,
            created_at=time.time(),
        )
        self.log.put(record)
        self._launch(record)

    def _apply(self, decisions: Decisions) -> None:
        for stop in decisions.stop:
            process = self.running.pop(stop.trial, None)
            if process is not None:
                process.terminate()
            if stop.failed:
                tail = process.stderr_tail() if process is not None else ""
                self._fail(stop.trial, stop.reason, f"{stop.message}\n{tail}".strip())
                continue
            record = self.log.records[stop.trial]
            self.log.put(
                record.with_changes(
                    state=TrialState.STOPPED,
                    reason=stop.reason,
                    message=stop.message,
                    finished_at=time.time(),
                )
            )
            self.display.note(f"{stop.trial}: stopped ({stop.reason})")
        for promotion in decisions.promote:
            record = self.log.records[promotion.trial]
            self._launch(
                record.with_changes(fidelity=promotion.fidelity, resumed_from=promotion.resume_from)
            )
        for start in decisions.start:
            self._start(start)

    # -- following processes -------------------------------------------------------------------

    def _collect(self) -> bool:
        """Fold new reports and exits into the records; True when something changed."""
        changed = False
        metric = self.spec.objective.metric
        for name, process in list(self.running.items()):
            record = self.log.records[name]
            fresh = process.new_epochs()
            if fresh:
                points = [
                    (int(e["epoch"]), float(e["metrics"][metric]))
                    for e in fresh
                    if metric in e.get("metrics", {})
                ]
                if points:
                    self.log.put(record.with_changes(intermediate=[*record.intermediate, *points]))
                    changed = True
            code = process.popen.poll()
            if code is None and process.timed_out():
                process.terminate()
                self._fail(
                    name,
                    "Timeout",
                    f"exceeded timeoutSeconds ({self.spec.trial.timeout_seconds})\n"
                    f"{process.stderr_tail()}",
                )
                changed = True
            elif code is not None:
                del self.running[name]
                self._finish(name, process, code)
                changed = True
        return changed

    def _fail(self, name: str, reason: str, message: str) -> None:
        self.running.pop(name, None)
        record = self.log.records[name]
        self.log.put(
            record.with_changes(
                state=TrialState.FAILED, reason=reason, message=message, finished_at=time.time()
            )
        )
        self.display.note(f"{name}: failed ({reason})")

    def _finish(self, name: str, process: TrialProcess, code: int) -> None:
        summary = process.final_summary()
        metrics = summary.get("metrics") if summary else None
        if code != 0 or not isinstance(metrics, dict):
            reason = f"exit code {code}" if code != 0 else "no final metrics reported"
            self._fail(name, "Crashed", f"{reason}\n{process.stderr_tail()}")
            return
        numbers = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
        if self.spec.objective.metric not in numbers:
            self._fail(name, "MissingObjective", f"final metrics lack {self.spec.objective.metric}")
            return
        record = self.log.records[name]
        checkpoint = summary.get("checkpoint") if summary else None
        self.log.put(
            record.with_changes(
                state=TrialState.SUCCEEDED,
                metrics=numbers,
                results={**record.results, record.fidelity or 0: numbers},
                checkpoint=str(checkpoint) if checkpoint else None,
                finished_at=time.time(),
            )
        )
        self.display.note(
            f"{name}: {self.spec.objective.metric} {numbers[self.spec.objective.metric]:.4f}"
        )

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        self._claim_folder()
        started = time.monotonic()
        decisions = Decisions()
        try:
            with self.display:
                self._resume_interrupted()
                while True:
                    records = list(self.log.records.values())
                    decisions = decide(self.spec, records, now=time.time())
                    self._apply(decisions)
                    self.display.update(
                        list(self.log.records.values()), decisions, time.monotonic() - started
                    )
                    if decisions.finished:
                        break
                    while not self._collect():
                        time.sleep(POLL_SECONDS)
        finally:
            for process in self.running.values():
                process.terminate()
        summary = write_outputs(
            self.out, self.experiment, list(self.log.records.values()), decisions
        )
        self.display.done(summary, self.out)
        return summary
