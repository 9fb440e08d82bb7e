"""``kubenas run``: the whole search on this machine, trials as local processes (the built-in
trainer's in warm workers, one per slot, unless ``--no-reuse``).

The loop is the controller pattern in miniature: read the records, ask the engine, apply its
decisions, wait for a process to report. Records are persisted before anything is launched, so
an interrupted run started again with the same folder resumes where it stopped.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from kubenas import transitions
from kubenas.api.builtin_trainer import runs_builtin_trainer
from kubenas.api.experiment import NASExperiment
from kubenas.api.loader import ExperimentError
from kubenas.api.records import TrialRecord, TrialRole, TrialState
from kubenas.contract import checkpoint_folder, record_architecture, trial_environment, trial_name
from kubenas.engine import Decisions, decide, planner, timeout_deadline
from kubenas.final import Approval
from kubenas.oneshot import supernet_ended
from kubenas.runtime.display import Display
from kubenas.runtime.outputs import write_outputs
from kubenas.runtime.process import TrialProcess
from kubenas.runtime.store import RecordLog
from kubenas.runtime.workers import WorkerPool

POLL_SECONDS = 0.2
REPORT_FILE = "report file"  # where a local trial's final metrics are read from
APPROVAL_FILE = "approval.json"  # a person's release of the final stage (``kubenas approve``)


def read_approval(out: Path) -> Approval | None:
    """The approval ``kubenas approve`` left in a results folder, if any."""
    path = out / APPROVAL_FILE
    if not path.exists():
        return None
    trials = json.loads(path.read_text(encoding="utf-8")).get("trials") or []
    return Approval(trials=tuple(str(t) for t in trials))


def write_approval(out: Path, trials: tuple[str, ...]) -> None:
    """Release the final stage of the run in ``out``: retrain ``trials`` (none: the proposed)."""
    (out / APPROVAL_FILE).write_text(json.dumps({"trials": list(trials)}), encoding="utf-8")


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
        self,
        experiment: NASExperiment,
        out: Path,
        *,
        quiet: bool,
        cpu_slots: int,
        reuse: bool = True,
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
        # Slots: one per GPU, else one per parallel trial; with reuse, each keeps a worker.
        self.slots = self.gpus[: self.parallel] or [f"cpu{i}" for i in range(self.parallel)]
        self.slot_of: dict[str, str] = {}
        self.pool = (
            WorkerPool(self.dataset, out / "workers")
            if reuse and runs_builtin_trainer(self.spec.trial.command)
            else None
        )

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
        now = time.time()
        for record in list(self.log.load().values()):
            if record.state.active:
                checkpoint = self._checkpoint_dir(record) / "checkpoint.pt"
                resume = str(checkpoint) if checkpoint.exists() else record.resumed_from
                self.display.note(f"{record.name}: resuming after interruption")
                queued = transitions.resumed(record, resume, now)
                self.save(record, queued)
                self.launch(queued)

    # -- effects of applied decisions (kubenas.transitions.Effects) --------------------------

    def _checkpoint_dir(self, record: TrialRecord) -> Path:
        """Where a trial's checkpoints go: its own folder, a supernet's its stage's."""
        return self.out / "trials" / checkpoint_folder(record) / "checkpoint"

    def halt(self, record: TrialRecord) -> str:
        process = self.running.pop(record.name, None)
        if process is None:
            return ""
        process.terminate()
        self._freed(record.name, -signal.SIGTERM)
        return process.stderr_tail()

    def _gpu(self, slot: str) -> str | None:
        return None if slot.startswith("cpu") else slot

    def _slot_env(self, slot: str) -> dict[str, str]:
        """What a slot fixes for every trial on it: its threads and its device."""
        gpu = self._gpu(slot)
        return {
            "OMP_NUM_THREADS": str(self.threads),
            "KUBENAS_DEVICE": "cuda" if gpu is not None else "cpu",
            "CUDA_VISIBLE_DEVICES": gpu if gpu is not None else "",
        }

    def _freed(self, trial: str, code: int) -> None:
        """The trial's slot is free again; a worker it ended (or failed in) is replaced now, so
        the slot's next trial finds one warm."""
        slot = self.slot_of.pop(trial, None)
        if slot is not None and self.pool is not None:
            self.pool.finished(slot, code)
            self.pool.warm(slot, self._slot_env(slot))

    def save(self, before: TrialRecord | None, after: TrialRecord) -> None:
        self.log.put(after)
        if after.state is TrialState.STOPPED:
            self.display.note(f"{after.name}: stopped ({after.reason})")
        elif after.state is TrialState.FAILED:
            self.display.note(f"{after.name}: failed ({after.reason})")

    def launch(self, record: TrialRecord) -> TrialRecord:
        busy = set(self.slot_of.values())
        slot = next(s for s in self.slots if s not in busy)
        self.slot_of[record.name] = slot
        env = trial_environment(
            self.experiment,
            record,
            record_architecture(self.experiment, record),
            dataset=self.dataset,
        )
        slot_env = self._slot_env(slot)
        env.update(slot_env)
        worker = self.pool.warm(slot, slot_env) if self.pool is not None else None
        process = TrialProcess.launch(
            record.name,
            self.out / "trials" / record.name,
            self.spec.trial.command,
            env,
            self._gpu(slot),
            worker=worker,
            checkpoint_dir=self._checkpoint_dir(record),
        )
        self.running[record.name] = process
        self.display.note(f"{record.name}: started (fidelity {record.fidelity})")
        return self._clock_started(record, process)

    def _clock_started(self, record: TrialRecord, process: TrialProcess) -> TrialRecord:
        """Running from when its process, or its warm worker, began the trial: a worker still
        starting up (importing torch, loading data) is queue time, as a pod's start is in a
        cluster."""
        at = process.started_at()
        if record.state is not TrialState.PENDING or at is None:
            return record
        running = transitions.started(record, at)
        self.log.put(running)
        return running

    # -- following processes -------------------------------------------------------------------

    def _collect(self) -> bool:
        """Fold new reports and exits into the records; True when something changed."""
        changed = False
        metric = self.spec.objective.metric
        for name, process in list(self.running.items()):
            before = self.log.records[name]
            record = self._clock_started(before, process)
            changed = changed or record is not before
            points = [
                (int(e["epoch"]), float(e["metrics"][metric]))
                for e in process.new_epochs()
                if metric in e.get("metrics", {})
            ]
            progressed = transitions.progressed(record, points)
            if progressed is not record:
                self.log.put(progressed)
                changed = True
            code = process.poll()
            if code is not None:
                del self.running[name]
                self._freed(name, code)
                self.save(progressed, self._finished(progressed, process, code))
                changed = True
        return changed

    def _finished(self, record: TrialRecord, process: TrialProcess, code: int) -> TrialRecord:
        """The record of a run whose process exited with ``code``."""
        now = time.time()
        summary = process.final_summary()
        metrics = summary.get("metrics") if summary else None
        if code != 0 or not isinstance(metrics, dict):
            reason = f"exit code {code}" if code != 0 else "no final metrics reported"
            return transitions.failed(record, "Crashed", f"{reason}\n{process.stderr_tail()}", now)
        numbers = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
        if record.role is TrialRole.SUPERNET:
            reported = summary.get("derived") if summary else None
            ended = supernet_ended(record, self.plan.space, reported, metrics=numbers, now=now)
            if ended.derived:
                self.display.note(f"{record.name}: derived {len(ended.derived)} architectures")
            return ended
        if record.role is TrialRole.SCREEN:
            scores = process.screen_scores()
            if scores is None:
                return transitions.failed(record, "MissingScores", "no screen event reported", now)
            self.display.note(f"{record.name}: screened {len(next(iter(scores.values()), []))}")
            return transitions.screened(record, scores, metrics=numbers, now=now)
        objective = self.spec.objective.metric
        device = summary.get("device") if summary else None
        device = str(device) if device else None
        if objective not in numbers:
            violations = self.spec.objective.violations(numbers)
            if violations:
                self.display.note(f"{record.name}: infeasible, {'; '.join(violations)}")
            return transitions.ended_unscored(
                record, numbers, violations, objective, source=REPORT_FILE, now=now, device=device
            )
        checkpoint = summary.get("checkpoint") if summary else None
        self.display.note(f"{record.name}: {objective} {numbers[objective]:.4f}")
        return transitions.succeeded(
            record,
            numbers,
            checkpoint=str(checkpoint) if checkpoint else None,
            source=REPORT_FILE,
            now=now,
            device=device,
        )

    def _next_deadline(self) -> float | None:
        """The earliest moment a running trial times out (the engine decides it then)."""
        deadlines = [
            d
            for r in self.log.records.values()
            if (d := timeout_deadline(self.spec, r)) is not None
        ]
        return min(deadlines, default=None)

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        self._claim_folder()
        started = time.monotonic()
        decisions = Decisions()
        try:
            with self.display:
                if self.pool is not None:  # every slot's worker imports torch at once
                    for slot in self.slots:
                        self.pool.warm(slot, self._slot_env(slot))
                self._resume_interrupted()
                while True:
                    now = time.time()
                    decisions = decide(
                        self.spec,
                        list(self.log.records.values()),
                        now=now,
                        approval=read_approval(self.out),
                    )
                    transitions.apply_decisions(
                        decisions,
                        self.log.records,
                        self,
                        name_of=lambda index: trial_name(self.experiment.name, index),
                        now=now,
                    )
                    self.display.update(
                        list(self.log.records.values()), decisions, time.monotonic() - started
                    )
                    if decisions.finished or (decisions.awaiting_approval and not self.running):
                        break
                    deadline = self._next_deadline()
                    while not self._collect():
                        if deadline is not None and time.time() > deadline:
                            break
                        time.sleep(POLL_SECONDS)
        finally:
            for process in self.running.values():
                process.terminate()
            if self.pool is not None:
                self.pool.close()
        records = list(self.log.records.values())
        summary = write_outputs(
            self.out, self.experiment, records, decisions, gpus=1.0 if self.gpus else 0.0
        )
        self.display.done(summary, records, self.out)
        return summary
