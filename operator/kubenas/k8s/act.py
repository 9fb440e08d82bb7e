"""What a pass does to the cluster: the operator's :class:`kubenas.transitions.Effects` and the
clean-ups after a run. Every record change is decided elsewhere; this module only writes it."""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from typing import Any

from kubenas import transitions
from kubenas.api.experiment import NASExperiment
from kubenas.api.records import TrialRecord
from kubenas.api.trial import status_of
from kubenas.contract import gpus_requested, record_architecture
from kubenas.k8s import metrics_source, operator_metrics
from kubenas.k8s.client import KubeApi
from kubenas.k8s.leases import leased, runs_on_worker
from kubenas.k8s.manifests import build_job, build_trial, job_name, run_environment
from kubenas.k8s.screen_store import build_configmaps
from kubenas.k8s.settings import OperatorSettings

Json = dict[str, Any]


class ClusterEffects:
    """Applied decisions in the cluster: ``halt`` deletes the run's Job, ``save`` creates the
    NASTrial (a new record) or patches its status, ``launch`` creates the Job and returns the
    record still Pending: it runs once its container starts, which a later pass observes.

    A new trial's first status is written right after its Job is created, so the Job waits
    for two API calls, not three; a trial left without status by a crash reads as Pending at
    its spec's fidelity, and the next pass creates its Job."""

    def __init__(
        self,
        api: KubeApi,
        settings: OperatorSettings,
        experiment_obj: Json,
        experiment: NASExperiment,
        trials: dict[str, Json],
    ) -> None:
        self.api = api
        self.settings = settings
        self.experiment_obj = experiment_obj
        self.experiment = experiment
        self.namespace = str(experiment_obj["metadata"]["namespace"])
        self.trials = trials
        self.first_status: dict[str, TrialRecord] = {}

    def halt(self, record: TrialRecord) -> str:
        if runs_on_worker(self.experiment.spec, record):
            # The worker pod cannot be trusted to stop a hung trial: it goes, with its lease.
            if leased(record) and record.worker:
                self.api.delete_job(self.namespace, record.worker)
            return ""
        self.api.delete_job(self.namespace, job_name(record.name, record.fidelity))
        return ""

    def save(self, before: TrialRecord | None, after: TrialRecord) -> None:
        if before is None:
            manifest = build_trial(
                self.experiment_obj,
                self.experiment,
                after,
                record_architecture(self.experiment, after),
            )
            stored = self.api.create_trial(manifest)
            self.trials[after.name] = stored
            if not stored.get("status"):  # else made by an earlier pass, which wrote its state
                self.first_status[after.name] = after
            return
        if after != before:
            self._write_status(after)

    def _write_status(self, after: TrialRecord) -> None:
        """A screen trial's scores are written to their ConfigMaps first, so a status that
        names them never names missing ones (a crash in between leaves the Job, and the next
        pass reads its log again)."""
        stored_in = None
        if after.screen_scores is not None:
            configmaps = build_configmaps(self.trials[after.name], after.screen_scores)
            for configmap in configmaps:
                self.api.create_configmap(configmap)
            stored_in = [c["metadata"]["name"] for c in configmaps]
        job = (
            after.worker
            if runs_on_worker(self.experiment.spec, after)
            else job_name(after.name, after.fidelity)
        )
        status = status_of(after, job, stored_in)
        self.api.patch_trial_status(
            self.namespace, after.name, status.model_dump(by_alias=True, mode="json")
        )

    def launch(self, record: TrialRecord) -> TrialRecord:
        """A Job for the run, or with trial reuse nothing: a worker pod takes the trial when
        it asks (:mod:`kubenas.k8s.leases`)."""
        if runs_on_worker(self.experiment.spec, record):
            if (first := self.first_status.pop(record.name, None)) is not None:
                self._write_status(first)
            return record
        job = build_job(
            self.experiment,
            self.trials[record.name],
            record,
            record_architecture(self.experiment, record),
            self.settings,
        )
        self.api.create_job(job)
        if (first := self.first_status.pop(record.name, None)) is not None:
            self._write_status(first)
        return record

    def lease(self, record: TrialRecord, worker: str, now: float) -> TrialRecord:
        """Hand the pending record to ``worker``: the lease is stored before anyone hears of it,
        so a restarted operator knows every lease from the API alone."""
        after = transitions.leased(record, secrets.token_hex(8), worker, now)
        self.save(record, after)
        return after

    def assignment(self, record: TrialRecord) -> Json:
        """What the worker holding ``record``'s lease is told: the trial, its lease, and the
        command and environment a trial Job of the run would have."""
        env = run_environment(
            self.experiment,
            self.namespace,
            record,
            record_architecture(self.experiment, record),
            self.settings,
        )
        return {
            "trial": record.name,
            "lease": record.lease,
            "command": list(self.experiment.spec.trial.command),
            "env": env,
        }


def delete_push_groups(
    settings: OperatorSettings, namespace: str, experiment: str, trials: Iterable[str]
) -> None:
    """Remove the Pushgateway groups of runs just recorded (their pods cannot push again). The
    first failure ends the attempt, so a Pushgateway that is down costs a pass one timeout;
    what is left is removed with the experiment."""
    if not settings.pushgateway_url:
        return
    for trial in trials:
        if not metrics_source.delete_push_group(
            settings.pushgateway_url, namespace, experiment, trial
        ):
            return


def count_run_time(
    namespace: str, experiment: NASExperiment, records: Iterable[TrialRecord]
) -> None:
    """Wall time and GPU time of finished runs, for the operator's own metrics."""
    gpus = gpus_requested(experiment)
    for record in records:
        if record.started_at is None or record.finished_at is None:
            continue
        seconds = max(0.0, record.finished_at - record.started_at)
        operator_metrics.TRIAL_DURATION.observe(seconds)
        operator_metrics.GPU_SECONDS.labels(namespace, experiment.name).inc(seconds * gpus)
