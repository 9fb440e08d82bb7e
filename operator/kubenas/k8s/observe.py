"""What the cluster says happened, folded into the trial records: pure, given what a pass read.

:func:`observe` takes the records as stored, the experiment's Jobs and pods and one Prometheus
snapshot, and returns the records as they now are, through :mod:`kubenas.transitions` only. A
trial is Running only once its trainer container has started, and its clock starts then: a Job
that Kueue keeps suspended, or whose pod waits for a GPU, keeps the trial Pending and queued. A
running trial whose Job Kueue suspends again (preemption) is queued again on the same Job.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubenas import transitions
from kubenas.api.experiment import NASExperiment
from kubenas.api.records import ScreenScores, TrialRecord, TrialRole, TrialState
from kubenas.api.trial import from_rfc3339
from kubenas.engine import planner
from kubenas.k8s.job_state import JobOutcome, failed_condition, job_outcome
from kubenas.k8s.leases import WorkerView, leased, lost_lease_limit, runs_on_worker
from kubenas.k8s.manifests import QUEUE_LABEL, TRAINER_CONTAINER, job_name
from kubenas.k8s.metrics_source import (
    SOURCE_PROMETHEUS,
    SOURCE_TERMINATION_MESSAGE,
    MetricsSnapshot,
    TrialMetrics,
    parse_termination_message,
)
from kubenas.k8s.settings import LABEL_TRIAL
from kubenas.oneshot import supernet_ended

DETAIL_LIMIT = 1024
JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")

Json = dict[str, Any]


@dataclass(frozen=True)
class Observation:
    """The records after folding in the cluster's state. ``ended``: trials whose run finished
    in this pass (their Pushgateway group can go); ``relaunch``: pending trials without a Job
    (created just before a crash, or their Job was lost); ``preempted``: running trials whose
    Job a quota manager suspended in this pass (they wait, and resume from a checkpoint)."""

    records: dict[str, TrialRecord]
    ended: tuple[str, ...] = ()
    relaunch: tuple[str, ...] = ()
    preempted: tuple[str, ...] = ()


def pods_of(job: str, pods: Sequence[Json]) -> list[Json]:
    """The Job's pods, newest first."""
    mine = [
        p
        for p in pods
        if any((p["metadata"].get("labels") or {}).get(key) == job for key in JOB_NAME_LABELS)
    ]
    return sorted(mine, key=lambda p: p["metadata"].get("creationTimestamp") or "", reverse=True)


def trainer_state(pods: Sequence[Json]) -> Json:
    """The trainer container's ``state`` (``waiting``/``running``/``terminated``) in the newest
    pod that reports one; empty while no pod has it (unscheduled, or no pod yet)."""
    for pod in pods:
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            if status.get("name") == TRAINER_CONTAINER and status.get("state"):
                return dict(status["state"])
    return {}


def container_started_at(state: Mapping[str, Any]) -> float | None:
    for phase in ("running", "terminated"):
        started = (state.get(phase) or {}).get("startedAt")
        if started:
            return from_rfc3339(started)
    return None


def _final_metrics(
    experiment: NASExperiment, record: TrialRecord, pushed: TrialMetrics | None, summary: Json
) -> tuple[dict[str, float] | None, str]:
    """(metrics, source): Prometheus when it holds the run's final push, else the termination
    message. A final push of an earlier rung (a promoted trial's last run, until Prometheus
    drops it) has fewer epochs than this run's fidelity and is not taken."""
    metric = experiment.spec.objective.metric
    if pushed is not None and pushed.final and metric in pushed.values:
        reached = record.fidelity is None or (pushed.epoch or 0) >= record.fidelity
        if reached:
            return dict(pushed.values), SOURCE_PROMETHEUS
    reported = summary.get("metrics")
    if isinstance(reported, dict):
        numbers = {
            k: float(v)
            for k, v in reported.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        return numbers, SOURCE_TERMINATION_MESSAGE
    return None, SOURCE_TERMINATION_MESSAGE


def checkpoint_path(experiment: NASExperiment, record: TrialRecord) -> str:
    """Where the trainer keeps the trial's checkpoint when its summary names none."""
    root = experiment.spec.trial.checkpoint_dir.rstrip("/")
    return f"{root}/{experiment.name}/{record.name}/checkpoint.pt"


def _ended(
    experiment: NASExperiment,
    record: TrialRecord,
    job: Json,
    outcome: JobOutcome,
    state: Json,
    pushed: TrialMetrics | None,
    screened: ScreenScores | None,
    now: float,
) -> TrialRecord:
    """The record of a run whose Job finished (started first, if no pass saw it run). A screen
    trial's result is ``screened``: the scores its pod printed."""
    status = job.get("status") or {}
    terminated = state.get("terminated") or {}
    started_at = container_started_at(state) or from_rfc3339(status.get("startTime"))
    if started_at is not None:
        record = transitions.started(record, started_at)
    at = from_rfc3339(terminated.get("finishedAt") or status.get("completionTime")) or now
    failure = None
    if outcome is JobOutcome.FAILED:
        reason = str((failed_condition(job) or {}).get("reason") or "Failed")
        detail = str(terminated.get("message") or terminated.get("reason") or "")
        failure = f"{reason}: exit code {terminated.get('exitCode')}; {detail[-DETAIL_LIMIT:]}"
    message = terminated.get("message")
    return run_ended(experiment, record, failure, message, pushed, screened, at)


def run_ended(
    experiment: NASExperiment,
    record: TrialRecord,
    failure: str | None,
    message: str | None,
    pushed: TrialMetrics | None,
    screened: ScreenScores | None,
    at: float,
) -> TrialRecord:
    """The record of a finished run, from how it failed (None: it did not) and its final
    summary (a termination message), whether a Job or a worker pod ran it."""
    if failure is not None:
        return transitions.failed(record, "Crashed", failure.strip(), at)
    summary = parse_termination_message(message) or {}
    if record.role is TrialRole.SCREEN:
        if screened is None:
            return transitions.failed(
                record, "MissingScores", "the screen trial's log holds no screen event", at
            )
        figures = _final_metrics(experiment, record, None, summary)[0] or {}
        return transitions.screened(record, screened, metrics=figures, now=at)
    if record.role is TrialRole.SUPERNET:
        figures = _final_metrics(experiment, record, None, summary)[0] or {}
        space = planner(experiment.spec).space
        return supernet_ended(record, space, summary.get("derived"), metrics=figures, now=at)
    metrics, source = _final_metrics(experiment, record, pushed, summary)
    metric = experiment.spec.objective.metric
    device = str(summary["device"]) if summary.get("device") else None
    if metrics is None or metric not in metrics:
        figures = metrics or {}
        violations = experiment.spec.objective.violations(figures)
        return transitions.ended_unscored(
            record, figures, violations, metric, source=source, now=at, device=device
        )
    checkpoint = summary.get("checkpoint")
    return transitions.succeeded(
        record,
        metrics,
        checkpoint=str(checkpoint) if checkpoint else checkpoint_path(experiment, record),
        source=source,
        now=at,
        device=device,
    )


def _on_worker(
    experiment: NASExperiment,
    record: TrialRecord,
    workers: WorkerView,
    pushed: TrialMetrics | None,
    now: float,
) -> tuple[TrialRecord, bool]:
    """A trial that runs on a worker pod (trial reuse), and whether its run ended: the result
    its worker delivered for the open lease, the lease lost with a worker Job that ended, or
    its progress. A pending one waits for a worker to ask: it has no Job to relaunch."""
    if not leased(record):
        return record, False
    delivered = workers.result_of(record)
    if delivered is not None:
        failure = None
        if delivered.exit_code != 0:
            detail = delivered.message[-DETAIL_LIMIT:]
            failure = f"exit code {delivered.exit_code} in worker {delivered.worker}; {detail}"
        return run_ended(experiment, record, failure, delivered.message, pushed, None, now), True
    if record.worker not in workers.live:
        after = transitions.lease_lost(record, lost_lease_limit(experiment.spec), now)
        return after, not after.state.active
    return _progressed(experiment, record, pushed), False


def _worker_preempted(record: TrialRecord, workers: WorkerView) -> bool:
    """A leased trial whose worker Job a quota manager suspended before the trial's result
    came: the worker stops on SIGTERM without one (a success delivered first stands)."""
    if not leased(record) or record.worker not in workers.suspended:
        return False
    delivered = workers.result_of(record)
    return delivered is None or delivered.exit_code != 0


def _progressed(
    experiment: NASExperiment, record: TrialRecord, pushed: TrialMetrics | None
) -> TrialRecord:
    """The running trial's latest epoch objective, for median stopping."""
    if record.state is not TrialState.RUNNING or pushed is None or pushed.final:
        return record
    value = pushed.values.get(experiment.spec.objective.metric)
    if not pushed.epoch or value is None:
        return record
    return transitions.progressed(record, [(pushed.epoch, value)])


def observe(
    experiment: NASExperiment,
    records: Mapping[str, TrialRecord],
    jobs: Sequence[Json],
    pods: Sequence[Json],
    metrics: MetricsSnapshot,
    now: float,
    screened: Mapping[str, ScreenScores | None] | None = None,
    workers: WorkerView | None = None,
) -> Observation:
    """Fold every active trial's Job, pod and pushed metrics into its record; ``screened``:
    the scores read from the logs of screen trials whose Job succeeded; ``workers``: with
    trial reuse, the live worker Jobs and the results their pods delivered."""
    by_name = {j["metadata"]["name"]: j for j in jobs}
    out = dict(records)
    ended: list[str] = []
    relaunch: list[str] = []
    preempted: list[str] = []
    for name, record in records.items():
        if not record.state.active:
            continue
        if workers is not None and runs_on_worker(experiment.spec, record):
            if _worker_preempted(record, workers):
                out[name] = transitions.worker_preempted(record, now)
                preempted.append(name)
                continue
            out[name], finished = _on_worker(experiment, record, workers, metrics.of(name), now)
            if finished:
                ended.append(name)
            continue
        job = by_name.get(job_name(record.name, record.fidelity))
        if job is None:
            if record.state is TrialState.RUNNING:  # its run is gone: queue it again
                record = transitions.resumed(record, record.resumed_from, now)
            out[name] = record
            relaunch.append(name)
            continue
        state = trainer_state(pods_of(job["metadata"]["name"], pods))
        outcome = job_outcome(job)
        pushed = metrics.of(name)
        if outcome is not None:
            scores = (screened or {}).get(name)
            out[name] = _ended(experiment, record, job, outcome, state, pushed, scores, now)
            ended.append(name)
        elif (job.get("spec") or {}).get("suspend"):
            if record.state is TrialState.RUNNING:  # preempted: queued again, same Job
                record = transitions.resumed(record, record.resumed_from, now)
                preempted.append(name)
            out[name] = transitions.waiting(
                record, transitions.WAITING_FOR_ADMISSION, admission_wait(job)
            )
        else:
            # A pod that is going away (its Job was suspended) is not the run.
            live = [p for p in pods_of(job["metadata"]["name"], pods) if not _terminating(p)]
            started_at = container_started_at(trainer_state(live))
            if started_at is not None:
                record = transitions.started(record, started_at)
            elif record.reason == transitions.WAITING_FOR_ADMISSION:  # admitted, not started
                record = transitions.waiting(record, None, None)
            out[name] = _progressed(experiment, record, pushed)
    return Observation(out, tuple(ended), tuple(relaunch), tuple(preempted))


def admission_wait(job: Mapping[str, Any]) -> str:
    """Why a suspended trial Job waits: Kueue admits it when its queue's quota allows."""
    queue = (job["metadata"].get("labels") or {}).get(QUEUE_LABEL)
    if queue:
        return f"waiting for admission in queue {queue}"
    return "waiting: its Job is suspended"


def _terminating(pod: Mapping[str, Any]) -> bool:
    return bool(pod["metadata"].get("deletionTimestamp"))


def jobs_to_delete(records: Mapping[str, TrialRecord], jobs: Sequence[Json]) -> list[str]:
    """Succeeded Jobs whose result is recorded: a finished trial's, or an earlier rung's of a
    promoted one. Thousands of trials leave no pile of Jobs; failed runs keep theirs, for
    ``kubectl logs``."""
    doomed = []
    for job in jobs:
        name = job["metadata"]["name"]
        trial = records.get((job["metadata"].get("labels") or {}).get(LABEL_TRIAL) or "")
        if trial is None or job_outcome(job) is not JobOutcome.SUCCEEDED:
            continue
        current = job_name(trial.name, trial.fidelity)
        if name != current or trial.state in (TrialState.SUCCEEDED, TrialState.STOPPED):
            doomed.append(name)
    return doomed


def failure_events(
    before: Mapping[str, TrialRecord], after: Mapping[str, TrialRecord]
) -> list[tuple[str, str, str]]:
    """A Warning for each trial that failed in this pass (once: next pass it is Failed)."""
    return [
        ("Warning", "TrialFailed", f"{name}: {record.reason}: {record.message}"[:1000])
        for name, record in after.items()
        if record.state is TrialState.FAILED
        and (before.get(name) is None or before[name].state is not TrialState.FAILED)
    ]


def preemption_events(preempted: Sequence[str]) -> list[tuple[str, str, str]]:
    """One event per running trial whose Job was suspended in this pass: it was preempted."""
    return [
        (
            "Normal",
            "TrialPreempted",
            f"{name}: its Job was suspended while it ran (preempted by its queue); it waits "
            "to run again and resumes from its last checkpoint",
        )
        for name in preempted
    ]
