"""Level-based reconciliation of one NASExperiment: read trials and Jobs from the API, fold what
the Jobs did into the trials, ask the engine, apply its decisions, write the status.

Everything is read back from the API on every pass and every name is deterministic, so the
operator can be killed at any moment and started again without losing or duplicating a trial.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from kubenas.api.experiment import NASExperiment
from kubenas.api.loader import format_validation_error
from kubenas.api.records import TrialRecord, TrialState
from kubenas.api.trial import TrialSpec, TrialStatus, status_of, to_record
from kubenas.engine import Decisions, decide, planner
from kubenas.k8s import metrics_source, operator_metrics
from kubenas.k8s.client import Api
from kubenas.k8s.manifests import (
    TRAINER_CONTAINER,
    PodTemplateError,
    build_job,
    build_trial,
    job_name,
)
from kubenas.k8s.settings import LABEL_TRIAL, OperatorSettings
from kubenas.k8s.status import experiment_status, failed_to_run_status

log = logging.getLogger("kubenas.operator")

STDERR_LIMIT = 1024


@dataclass
class Outcome:
    """What a pass did: whether the search is over, and the events to post on the experiment."""

    finished: bool = False
    events: list[tuple[str, str, str]] = field(default_factory=list)
    running: int = 0


def _job_finished(job: dict[str, Any]) -> str | None:
    """'Succeeded', 'Failed' (with the Job's reason in the pair) or None while it runs."""
    status = job.get("status") or {}
    if (status.get("succeeded") or 0) >= 1:
        return "Succeeded"
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Failed" and condition.get("status") == "True":
            return "Failed"
    return None


def _job_failure_reason(job: dict[str, Any]) -> str:
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Failed" and condition.get("status") == "True":
            return str(condition.get("reason") or "Failed")
    return "Failed"


def _terminated(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The trainer container's terminated state of the Job's latest pod."""
    for pod in sorted(
        pods, key=lambda p: p["metadata"].get("creationTimestamp") or "", reverse=True
    ):
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            if status.get("name") == TRAINER_CONTAINER:
                terminated = (status.get("state") or {}).get("terminated")
                if terminated:
                    return dict(terminated)
    return None


class ExperimentReconciler:
    def __init__(self, api: Api, settings: OperatorSettings, namespace: str, name: str) -> None:
        self.api = api
        self.settings = settings
        self.namespace = namespace
        self.name = name
        self.metrics_problem: str | None = None
        self.announced: set[str] = set()

    # -- reading ---------------------------------------------------------------------------

    def _parse(self, body: dict[str, Any]) -> NASExperiment | str:
        document: dict[str, Any] = {k: body[k] for k in ("apiVersion", "kind", "spec") if k in body}
        document["metadata"] = {"name": body["metadata"]["name"], "namespace": self.namespace}
        try:
            return NASExperiment.model_validate(document)
        except ValidationError as exc:
            return "; ".join(format_validation_error(exc))

    # -- folding Job outcomes into trials ---------------------------------------------------

    def _final_metrics(
        self, experiment: NASExperiment, record: TrialRecord, job: dict[str, Any]
    ) -> tuple[dict[str, float] | None, str | None, str]:
        """(metrics, checkpoint, detail) of a finished run: Prometheus first, else the pod's
        termination message."""
        metrics: dict[str, float] | None = None
        if self.settings.prometheus_url:
            try:
                pushed = metrics_source.query_prometheus(
                    self.settings.prometheus_url, self.namespace, experiment.name, record.name
                )
                self.metrics_problem = None
                if pushed.final and experiment.spec.objective.metric in pushed.values:
                    metrics = pushed.values
            except metrics_source.MetricsUnavailable as exc:
                operator_metrics.PROMETHEUS_ERRORS.inc()
                self.metrics_problem = f"Prometheus unreachable, using termination messages: {exc}"
        terminated = _terminated(self.api.list_job_pods(self.namespace, job["metadata"]["name"]))
        summary = metrics_source.parse_termination_message((terminated or {}).get("message"))
        checkpoint = None
        if summary is not None:
            checkpoint = summary.get("checkpoint")
            if metrics is None and isinstance(summary.get("metrics"), dict):
                metrics = {
                    k: float(v) for k, v in summary["metrics"].items() if isinstance(v, int | float)
                }
        detail = "prometheus" if metrics is not None and summary is None else "termination message"
        return metrics, str(checkpoint) if checkpoint else None, detail

    def _progress(self, experiment: NASExperiment, record: TrialRecord) -> TrialRecord:
        """Append the latest epoch's objective of a running trial (median stopping uses it)."""
        if not self.settings.prometheus_url:
            return record
        try:
            pushed = metrics_source.query_prometheus(
                self.settings.prometheus_url, self.namespace, experiment.name, record.name
            )
        except metrics_source.MetricsUnavailable as exc:
            operator_metrics.PROMETHEUS_ERRORS.inc()
            self.metrics_problem = f"Prometheus unreachable, using termination messages: {exc}"
            return record
        self.metrics_problem = None
        value = pushed.values.get(experiment.spec.objective.metric)
        last_epoch = record.intermediate[-1][0] if record.intermediate else 0
        if pushed.epoch and value is not None and pushed.epoch > last_epoch and not pushed.final:
            return record.with_changes(intermediate=[*record.intermediate, (pushed.epoch, value)])
        return record

    def _sync_trial(
        self,
        experiment: NASExperiment,
        record: TrialRecord,
        jobs: dict[str, dict[str, Any]],
        outcome: Outcome,
    ) -> TrialRecord:
        job = jobs.get(job_name(record.name, record.fidelity))
        if job is None:
            return record
        if record.state == TrialState.PENDING:
            record = record.with_changes(
                state=TrialState.RUNNING, started_at=record.started_at or time.time()
            )
        finished = _job_finished(job)
        if finished is None:
            return self._progress(experiment, record)
        now = time.time()
        if finished == "Succeeded":
            metrics, checkpoint, source = self._final_metrics(experiment, record, job)
            if metrics is None or experiment.spec.objective.metric not in metrics:
                record = record.with_changes(
                    state=TrialState.FAILED,
                    reason="MissingObjective",
                    message=f"the trial reported no {experiment.spec.objective.metric}",
                    finished_at=now,
                )
            else:
                record = record.with_changes(
                    state=TrialState.SUCCEEDED,
                    metrics=metrics,
                    finished_at=now,
                    results={**record.results, record.fidelity or 0: metrics},
                    checkpoint=checkpoint or self._checkpoint_path(experiment, record),
                    reason=None,
                    message=f"metrics from the {source}",
                )
        else:
            reason = _job_failure_reason(job)
            terminated = (
                _terminated(self.api.list_job_pods(self.namespace, job["metadata"]["name"])) or {}
            )
            detail = str(terminated.get("message") or terminated.get("reason") or "")[
                -STDERR_LIMIT:
            ]
            record = record.with_changes(
                state=TrialState.FAILED,
                reason="Timeout" if reason == "DeadlineExceeded" else "Crashed",
                message=f"{reason}: exit code {terminated.get('exitCode')}; {detail}".strip(),
                finished_at=now,
            )
            outcome.events.append(
                ("Warning", "TrialFailed", f"{record.name}: {record.message}"[:1000])
            )
        if self.settings.pushgateway_url:
            metrics_source.delete_push_group(
                self.settings.pushgateway_url, self.namespace, experiment.name, record.name
            )
        if record.started_at is not None and record.finished_at is not None:
            seconds = max(0.0, record.finished_at - record.started_at)
            operator_metrics.TRIAL_DURATION.observe(seconds)
            operator_metrics.GPU_SECONDS.labels(self.namespace, experiment.name).inc(
                seconds * operator_metrics.gpus_requested(experiment)
            )
        return record

    def _checkpoint_path(self, experiment: NASExperiment, record: TrialRecord) -> str:
        root = experiment.spec.trial.checkpoint_dir.rstrip("/")
        return f"{root}/{experiment.name}/{record.name}/checkpoint.pt"

    # -- writing -----------------------------------------------------------------------------

    def _write_trial(self, record: TrialRecord, before: TrialRecord | None) -> None:
        if record == before:
            return
        status = status_of(record, job_name(record.name, record.fidelity))
        self.api.patch_trial_status(
            self.namespace, record.name, status.model_dump(by_alias=True, mode="json")
        )

    def _launch(
        self, experiment: NASExperiment, trial_obj: dict[str, Any], record: TrialRecord
    ) -> None:
        space = planner(experiment.spec).space
        architecture = space.to_architecture(space.active(record.params))
        self.api.create_job(build_job(experiment, trial_obj, record, architecture, self.settings))

    def _apply(
        self,
        experiment: NASExperiment,
        body: dict[str, Any],
        trials: dict[str, dict[str, Any]],
        records: dict[str, TrialRecord],
        decisions: Decisions,
        outcome: Outcome,
    ) -> None:
        for stop in decisions.stop:
            record = records[stop.trial]
            self.api.delete_job(self.namespace, job_name(record.name, record.fidelity))
            stopped = record.with_changes(
                state=TrialState.FAILED if stop.failed else TrialState.STOPPED,
                reason=stop.reason,
                message=stop.message,
                finished_at=time.time(),
            )
            self._write_trial(stopped, record)
            records[stop.trial] = stopped
        for promotion in decisions.promote:
            record = records[promotion.trial]
            promoted = record.with_changes(
                state=TrialState.PENDING,
                fidelity=promotion.fidelity,
                resumed_from=promotion.resume_from,
                intermediate=[],
                reason=None,
                message=f"promoted to fidelity {promotion.fidelity}",
                started_at=None,
                finished_at=None,
            )
            self._write_trial(promoted, record)
            self._launch(experiment, trials[promotion.trial], promoted)
            records[promotion.trial] = promoted
        for start in decisions.start:
            trial_obj = build_trial(body, experiment, start)
            name = trial_obj["metadata"]["name"]
            created = self.api.create_trial(trial_obj)
            record = to_record(name, TrialSpec.model_validate(created["spec"]), None)
            self._launch(experiment, created, record)
            records[name] = record
            trials[name] = created

    # -- one pass ----------------------------------------------------------------------------

    def reconcile(self) -> Outcome:
        outcome = Outcome()
        body = self.api.get_experiment(self.namespace, self.name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            outcome.finished = True
            return outcome
        previous = body.get("status") or {}
        generation = int(body["metadata"].get("generation") or 0)
        parsed = self._parse(body)
        if isinstance(parsed, str):
            self._fail_experiment(previous, generation, "InvalidSpec", parsed, outcome)
            return outcome
        experiment = parsed

        trials = {
            t["metadata"]["name"]: t for t in self.api.list_trials(self.namespace, experiment.name)
        }
        jobs = {
            j["metadata"]["name"]: j for j in self.api.list_jobs(self.namespace, experiment.name)
        }
        records: dict[str, TrialRecord] = {}
        for name, trial in trials.items():
            stored = TrialStatus.model_validate(trial["status"]) if trial.get("status") else None
            before = to_record(name, TrialSpec.model_validate(trial["spec"]), stored)
            record = before
            if record.state.active:
                if job_name(record.name, record.fidelity) not in jobs:
                    try:  # created before a restart cut the pass short, or its Job was lost
                        self._launch(experiment, trial, record)
                    except PodTemplateError as exc:
                        self._fail_experiment(
                            previous, generation, "PodTemplateNotAllowed", str(exc), outcome
                        )
                        return outcome
                else:
                    record = self._sync_trial(experiment, record, jobs, outcome)
            self._write_trial(record, before)
            records[name] = record

        self._delete_recorded_jobs(records, jobs)
        decisions = decide(experiment.spec, list(records.values()), now=time.time())
        try:
            self._apply(experiment, body, trials, records, decisions, outcome)
        except PodTemplateError as exc:
            self._fail_experiment(previous, generation, "PodTemplateNotAllowed", str(exc), outcome)
            return outcome

        status = experiment_status(
            experiment,
            previous,
            generation,
            list(records.values()),
            decisions,
            metrics_problem=self.metrics_problem,
        )
        if any(previous.get(key) != value for key, value in status.items()):
            self.api.patch_experiment_status(self.namespace, self.name, status)
        self._announce(experiment, previous, status, decisions, outcome)
        operator_metrics.observe_experiment(self.namespace, experiment, records.values(), decisions)
        outcome.finished = decisions.finished
        outcome.running = sum(r.state.active for r in records.values())
        return outcome

    def _delete_recorded_jobs(
        self, records: dict[str, TrialRecord], jobs: dict[str, dict[str, Any]]
    ) -> None:
        """A run whose result is recorded needs its Job no more: delete it (and its pod), so
        thousands of trials leave no pile of Jobs. Failed runs keep theirs, for ``kubectl logs``."""
        for name, job in jobs.items():
            trial = (job["metadata"].get("labels") or {}).get(LABEL_TRIAL)
            record = records.get(trial or "")
            if record is None or _job_finished(job) != "Succeeded":
                continue
            current = job_name(record.name, record.fidelity)
            if name != current or record.state in (TrialState.SUCCEEDED, TrialState.STOPPED):
                self.api.delete_job(self.namespace, name)

    def _fail_experiment(
        self, previous: dict[str, Any], generation: int, reason: str, message: str, outcome: Outcome
    ) -> None:
        status = failed_to_run_status(previous, generation, reason, message, self.metrics_problem)
        self.api.patch_experiment_status(self.namespace, self.name, status)
        outcome.events.append(("Warning", reason, message[:1000]))
        outcome.finished = True

    def _announce(
        self,
        experiment: NASExperiment,
        previous: dict[str, Any],
        status: dict[str, Any],
        decisions: Decisions,
        outcome: Outcome,
    ) -> None:
        """Events for milestones, each once per change (not once per pass)."""
        if not previous.get("startTime"):
            outcome.events.append(
                (
                    "Normal",
                    "Started",
                    f"searching {experiment.spec.search_space.family} "
                    f"with {experiment.spec.strategy.name}",
                )
            )
        old_best = (previous.get("bestTrial") or {}).get("name")
        new_best = (status.get("bestTrial") or {}).get("name")
        if new_best and new_best != old_best:
            best = status["bestTrial"]
            outcome.events.append(
                (
                    "Normal",
                    "NewBest",
                    f"{new_best}: {experiment.spec.objective.metric} {best['objective']}",
                )
            )
        was_problem = any(
            c.get("type") == "MetricsAvailable" and c.get("status") == "False"
            for c in previous.get("conditions") or []
        )
        if self.metrics_problem and not was_problem:
            outcome.events.append(("Warning", "PrometheusUnreachable", self.metrics_problem[:1000]))
        if decisions.finished and not previous.get("completionTime"):
            kind = "Normal" if decisions.succeeded else "Warning"
            outcome.events.append((kind, str(decisions.reason), decisions.message))
