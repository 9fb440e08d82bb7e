"""Level-based reconciliation of one NASExperiment: read trials, Jobs, pods and one Prometheus
snapshot; observe what happened (:mod:`kubenas.k8s.observe`, pure); ask the engine; apply its
decisions through :func:`kubenas.transitions.apply_decisions` with the cluster's effects
(:mod:`kubenas.k8s.act`); write the status.

Everything is read back from the API on every pass and every name is deterministic, so the
operator can be killed at any moment and started again without losing or duplicating a trial.
"""

from __future__ import annotations

import base64
import contextlib
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import ValidationError

from kubenas import transitions
from kubenas.api.experiment import NASExperiment
from kubenas.api.loader import format_validation_error
from kubenas.api.pod_policy import PodTemplateError
from kubenas.api.records import ScreenScores, TrialRecord, TrialRole, TrialState
from kubenas.api.status import Condition, ExperimentStatus
from kubenas.api.trial import TrialSpec, TrialStatus, to_record
from kubenas.contract import trial_name
from kubenas.engine import Decisions, decide, timeout_deadline
from kubenas.final import parse_approval
from kubenas.k8s import metrics_source, operator_metrics
from kubenas.k8s.act import ClusterEffects, count_run_time, delete_push_groups
from kubenas.k8s.client import KubeApi
from kubenas.k8s.job_state import JobOutcome, job_outcome
from kubenas.k8s.leases import (
    Delivery,
    LeaseDesk,
    WorkerView,
    finished_workers_to_delete,
    leased,
    live_workers,
    new_workers,
    reuses_pods,
    suspended_workers,
    waiting_for_worker,
)
from kubenas.k8s.manifests import (
    TRAINER_CONTAINER,
    WORKER_TOKEN_KEY,
    build_worker_job,
    build_worker_secret,
    job_name,
)
from kubenas.k8s.metrics_source import Availability, MetricsSnapshot
from kubenas.k8s.observe import (
    failure_events,
    jobs_to_delete,
    observe,
    pods_of,
    preemption_events,
)
from kubenas.k8s.screen_store import read_configmap
from kubenas.k8s.settings import ANNOTATION_APPROVE, OperatorSettings
from kubenas.k8s.status import experiment_status, failed_to_run_status
from kubenas.screening import reported_scores

# How often running trials' progress is read, where it decides anything (median stopping).
PROGRESS_POLL_SECONDS = 3.0
# A pass for a timeout comes this long after the deadline, so that it has surely passed.
TIMEOUT_SLACK_SECONDS = 0.5

Json = dict[str, Any]
Event = tuple[str, str, str]
T = TypeVar("T")

# Scores of recent screen trials, by trial uid: their ConfigMaps never change once written, and
# reading them back costs one GET per proxy.
_CACHED_SCREENS = 16
_screens: OrderedDict[tuple[str, ...], ScreenScores] = OrderedDict()
_screens_lock = threading.Lock()


@dataclass
class Outcome:
    """What a pass did: whether the search is over, and the events to post on the experiment."""

    finished: bool = False
    events: list[Event] = field(default_factory=list)
    running: int = 0
    next_pass_in: float | None = None


def read_record(trial: Json, api: KubeApi | None = None) -> TrialRecord:
    """The engine's record of a stored NASTrial; with ``api``, a screen trial's scores are read
    from the ConfigMaps its status names."""
    stored = TrialStatus.model_validate(trial["status"]) if trial.get("status") else None
    scores = None
    if api is not None and stored is not None and stored.screen is not None:
        scores = stored_scores(api, trial, stored.screen.proxies, stored.screen.config_maps)
    spec = TrialSpec.model_validate(trial["spec"])
    return to_record(trial["metadata"]["name"], spec, stored, scores)


def stored_scores(
    api: KubeApi, trial: Json, proxies: list[str], configmaps: list[str]
) -> ScreenScores | None:
    """A screen trial's ranks per proxy, or None when a ConfigMap is missing (then the search
    goes on without a prior, as a screen that scored nothing would)."""
    meta = trial["metadata"]
    key = (str(meta["namespace"]), str(meta.get("uid") or meta["name"]), *configmaps)
    with _screens_lock:
        if (cached := _screens.get(key)) is not None:
            _screens.move_to_end(key)
            return cached
    scores: ScreenScores = {}
    for proxy, name in zip(proxies, configmaps, strict=True):
        found = api.get_configmap(str(meta["namespace"]), name)
        ranks = read_configmap(found) if found is not None else None
        if ranks is None:
            return None
        scores[proxy] = ranks
    with _screens_lock:
        _screens[key] = scores
        while len(_screens) > _CACHED_SCREENS:
            _screens.popitem(last=False)
    return scores


class ExperimentReconciler:
    """Runs passes over one experiment. It keeps no state between passes: a fresh reconciler on
    the same cluster decides the same (``clock`` is there for tests)."""

    def __init__(
        self,
        api: KubeApi,
        settings: OperatorSettings,
        namespace: str,
        name: str,
        *,
        clock: Callable[[], float] = time.time,
        desk: LeaseDesk | None = None,
    ) -> None:
        self.api = api
        self.settings = settings
        self.namespace = namespace
        self.name = name
        self.clock = clock
        # What worker pods asked (trial reuse); in memory only: a restarted operator's workers
        # ask again, and every lease is in the NASTrials.
        self.desk = desk or LeaseDesk()

    def _parse(self, body: Json) -> NASExperiment | str:
        document: Json = {k: body[k] for k in ("apiVersion", "kind", "spec") if k in body}
        document["metadata"] = {"name": body["metadata"]["name"], "namespace": self.namespace}
        try:
            return NASExperiment.model_validate(document)
        except ValidationError as exc:
            return "; ".join(format_validation_error(exc))

    def _unqueried(self) -> MetricsSnapshot:
        configured = bool(self.settings.prometheus_url)
        return MetricsSnapshot(
            Availability.NOT_QUERIED if configured else Availability.NOT_CONFIGURED
        )

    def _pods(self, jobs: list[Json], records: dict[str, TrialRecord]) -> list[Json]:
        """The experiment's pods; a finished Job's from ``list_job_pods``, which a cache
        answers only once it holds the finished pod (its termination message)."""
        pods = {
            p["metadata"]["name"]: p
            for p in self.api.list_experiment_pods(self.namespace, self.name)
        }
        current = {job_name(r.name, r.fidelity) for r in records.values() if r.state.active}
        for job in jobs:
            name = job["metadata"]["name"]
            if name in current and job_outcome(job) is not None:
                for pod in self.api.list_job_pods(self.namespace, name):
                    pods[pod["metadata"]["name"]] = pod
        return list(pods.values())

    def _screened(
        self, records: dict[str, TrialRecord], jobs: list[Json], pods: list[Json]
    ) -> dict[str, ScreenScores | None]:
        """The scores of each screen trial whose Job just succeeded, from its pod's log (one
        read per screen trial: the next pass finds it recorded)."""
        by_name = {j["metadata"]["name"]: j for j in jobs}
        out: dict[str, ScreenScores | None] = {}
        for name, record in records.items():
            if record.role is not TrialRole.SCREEN or not record.state.active:
                continue
            job = by_name.get(job_name(record.name, record.fidelity))
            if job is None or job_outcome(job) is not JobOutcome.SUCCEEDED:
                continue
            mine = pods_of(job["metadata"]["name"], pods)
            if not mine:
                out[name] = None
                continue
            pod = next(
                (p for p in mine if p.get("status", {}).get("phase") == "Succeeded"), mine[0]
            )
            log = self.api.read_pod_log(self.namespace, pod["metadata"]["name"], TRAINER_CONTAINER)
            out[name] = reported_scores(log.splitlines())
        return out

    def reconcile(self) -> Outcome:
        outcome = Outcome()
        now = self.clock()
        body = self.api.get_experiment(self.namespace, self.name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            outcome.finished = True
            return outcome
        previous = ExperimentStatus.model_validate(body.get("status") or {})
        generation = int(body["metadata"].get("generation") or 0)
        parsed = self._parse(body)
        if isinstance(parsed, str):
            return self._fail(previous, generation, "InvalidSpec", parsed, now)
        experiment = parsed
        reuse = reuses_pods(experiment.spec)
        if reuse and not self.settings.lease_url:
            return self._fail(
                previous,
                generation,
                "ReuseNotServed",
                "spec.trial.reuse: this operator serves no trial leases; start it with "
                "--lease-url (the Helm chart sets it)",
                now,
            )

        trials = {t["metadata"]["name"]: t for t in self.api.list_trials(self.namespace, self.name)}
        stored = {name: read_record(trial, self.api) for name, trial in trials.items()}
        jobs = self.api.list_jobs(self.namespace, self.name)
        job_names = {j["metadata"]["name"] for j in jobs}
        watched = any(
            r.state.active and job_name(r.name, r.fidelity) in job_names for r in stored.values()
        ) or any(leased(r) for r in stored.values())
        workers = None
        deliveries: list[Delivery] = []
        if reuse:
            self._worker_token(body)
            deliveries = self.desk.take_deliveries()
            workers = WorkerView(
                live_workers(jobs),
                {(d.trial, d.lease): d for d in deliveries},
                suspended_workers(jobs),
            )
        metrics = self._unqueried()
        pods: list[Json] = []
        if watched:
            pods = self._pods(jobs, stored)
            if self.settings.prometheus_url:
                metrics = metrics_source.snapshot(
                    self.settings.prometheus_url, self.namespace, self.name
                )
                if metrics.availability is Availability.UNREACHABLE:
                    operator_metrics.PROMETHEUS_ERRORS.inc()
        screened = self._screened(stored, jobs, pods)
        observed = observe(experiment, stored, jobs, pods, metrics, now, screened, workers)

        effects = ClusterEffects(self.api, self.settings, body, experiment, trials)
        try:
            for name in observed.relaunch:
                effects.launch(observed.records[name])
            annotations = body["metadata"].get("annotations") or {}
            decisions = decide(
                experiment.spec,
                list(observed.records.values()),
                now=now,
                approval=parse_approval(annotations.get(ANNOTATION_APPROVE)),
            )
            applied = transitions.apply_decisions(
                decisions,
                observed.records,
                effects,
                name_of=lambda index: trial_name(experiment.name, index),
                now=now,
            )
        except PodTemplateError as exc:
            return self._fail(previous, generation, "PodTemplateNotAllowed", str(exc), now)
        records = applied.records
        # What was observed is saved after the next runs are launched, to keep a finished run's
        # successor off the critical path: a crash before this save loses nothing, since the
        # finished Jobs stay until the records are saved and observe folds them in again.
        changed = set(applied.changed)
        for name, record in observed.records.items():
            if name not in changed:
                effects.save(stored[name], record)

        if reuse:
            try:
                records = self._serve_workers(
                    body, experiment, records, jobs, deliveries, decisions, effects, now
                )
            except PodTemplateError as exc:  # the worker Jobs' pod, as a trial Job's above
                return self._fail(previous, generation, "PodTemplateNotAllowed", str(exc), now)
        for name in jobs_to_delete(records, jobs):
            self.api.delete_job(self.namespace, name)
        delete_push_groups(self.settings, self.namespace, experiment.name, observed.ended)
        count_run_time(self.namespace, experiment, (records[n] for n in observed.ended))

        status = experiment_status(
            experiment,
            previous,
            generation,
            list(records.values()),
            decisions,
            metrics=metrics,
            now=now,
        )
        if status != previous:
            self.api.patch_experiment_status(self.namespace, self.name, status.to_patch())
        outcome.events = failure_events(stored, records)
        outcome.events += preemption_events(observed.preempted)
        outcome.events += announcements(experiment, previous, status, decisions)
        operator_metrics.observe_experiment(self.namespace, experiment, records.values(), decisions)
        outcome.finished = decisions.finished
        outcome.running = sum(r.state.active for r in records.values())
        outcome.next_pass_in = next_pass_in(experiment, self.settings, records.values(), now)
        return outcome

    def _worker_token(self, body: Json) -> None:
        """The experiment's worker token, from its Secret (made by the first pass that needs
        it; an operator started again reads the same one)."""
        if self.desk.token is not None:
            return
        stored = self.api.ensure_secret(build_worker_secret(body, secrets.token_urlsafe(32)))
        self.desk.token = base64.b64decode(stored["data"][WORKER_TOKEN_KEY]).decode()

    def _serve_workers(
        self,
        body: Json,
        experiment: NASExperiment,
        records: dict[str, TrialRecord],
        jobs: list[Json],
        deliveries: list[Delivery],
        decisions: Decisions,
        effects: ClusterEffects,
        now: float,
    ) -> dict[str, TrialRecord]:
        """Trial reuse, after the pass saved its records: answer the delivered results
        (recorded, or the lease was lost), lease waiting trials to the workers that ask, and
        keep one live worker Job per trial in flight, up to ``parallelTrials``."""
        records = dict(records)
        for delivery in deliveries:
            record = records.get(delivery.trial)
            recorded = record is not None and record.lease == delivery.lease and not leased(record)
            _answer(delivery.answer, recorded)
        live = live_workers(jobs)
        queue = waiting_for_worker(experiment.spec, records.values())
        served = []
        for ask in self.desk.waiting():
            held = next((r for r in records.values() if leased(r) and r.worker == ask.worker), None)
            if decisions.finished:
                reply: Json = {"stop": True, "reason": f"the search is over: {decisions.reason}"}
            elif ask.worker not in live:
                reply = {"stop": True, "reason": f"{ask.worker} is not a live worker Job here"}
            elif held is not None:  # leased in a pass whose answer never reached it: again
                reply = {"assignment": effects.assignment(held)}
            elif queue:
                record = effects.lease(queue.pop(0), ask.worker, now)
                records[record.name] = record
                reply = {"assignment": effects.assignment(record)}
            else:
                continue  # no trial to give yet: the ask waits for a later pass
            _answer(ask.answer, reply)
            served.append(ask)
        self.desk.answered(served)

        if decisions.finished:
            for name in live:
                self.api.delete_job(self.namespace, name)
            return records
        lease_url = self.settings.lease_url
        assert lease_url is not None, "checked when the pass began"
        for name in new_workers(experiment.spec, experiment.name, records.values(), jobs):
            self.api.create_job(build_worker_job(body, experiment, name, lease_url, self.settings))
        for name in finished_workers_to_delete(jobs, experiment.name):
            self.api.delete_job(self.namespace, name)
        return records

    def _fail(
        self, previous: ExperimentStatus, generation: int, reason: str, message: str, now: float
    ) -> Outcome:
        """The experiment cannot run: Failed at once, announced once (not once per pass)."""
        status = failed_to_run_status(
            previous, generation, reason, message, metrics=self._unqueried(), now=now
        )
        outcome = Outcome(finished=True)
        if status != previous:
            self.api.patch_experiment_status(self.namespace, self.name, status.to_patch())
        was = previous.condition("Failed")
        if was is None or (was.status, was.reason, was.message) != ("True", reason, message):
            outcome.events.append(("Warning", reason, message[:1000]))
        return outcome


def _answer(answer: Future[T], value: T) -> None:
    """Answer a worker's request unless its HTTP side gave up waiting meanwhile."""
    with contextlib.suppress(InvalidStateError):
        answer.set_result(value)


def next_pass_in(
    experiment: NASExperiment,
    settings: OperatorSettings,
    records: Iterable[TrialRecord],
    now: float,
) -> float | None:
    """Seconds until a pass is due though no watch event comes: a running trial's timeout, and
    while trials run, the next progress poll where progress decides anything (median stopping
    reads each epoch from Prometheus). Everything else arrives as a watch event."""
    spec = experiment.spec
    running = [r for r in records if r.state is TrialState.RUNNING]
    waits = [
        max(0.0, deadline - now) + TIMEOUT_SLACK_SECONDS
        for r in running
        if (deadline := timeout_deadline(spec, r)) is not None
    ]
    median = spec.fidelity is not None and spec.fidelity.scheduler == "median"
    if running and median and settings.prometheus_url:
        waits.append(PROGRESS_POLL_SECONDS)
    return min(waits, default=None)


def announcements(
    experiment: NASExperiment,
    previous: ExperimentStatus,
    status: ExperimentStatus,
    decisions: Decisions,
) -> list[Event]:
    """Events for milestones, each once per change of the stored status (not once per pass)."""
    events: list[Event] = []
    if not previous.start_time:
        events.append(
            (
                "Normal",
                "Started",
                f"searching {experiment.spec.search_space.family} "
                f"with {experiment.spec.strategy.name}",
            )
        )
    old_best = previous.best_trial.name if previous.best_trial else None
    if status.best_trial is not None and status.best_trial.name != old_best:
        events.append(
            (
                "Normal",
                "NewBest",
                f"{status.best_trial.name}: {experiment.spec.objective.metric} "
                f"{status.best_trial.objective}",
            )
        )
    was, now = previous.condition("MetricsAvailable"), status.condition("MetricsAvailable")
    if now is not None and _unreachable(now) and not _unreachable(was):
        events.append(("Warning", "PrometheusUnreachable", (now.message or "")[:1000]))
    if decisions.finished and not previous.completion_time:
        kind = "Normal" if decisions.succeeded else "Warning"
        events.append((kind, str(decisions.reason), decisions.message))
    return events


def _unreachable(condition: Condition | None) -> bool:
    return condition is not None and (condition.status, condition.reason) == (
        "False",
        "PrometheusUnreachable",
    )
