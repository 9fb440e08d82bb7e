"""The operator's own Prometheus metrics (``/metrics``), all prefixed ``kubenas_``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram

from kubenas.api.experiment import NASExperiment
from kubenas.api.records import TrialRecord, TrialState
from kubenas.engine import Decisions

EXPERIMENTS = Gauge(
    "kubenas_experiments",
    "Experiments known to the operator, by state",
    ["namespace", "experiment", "state"],
)
TRIALS = Gauge("kubenas_trials", "Trials by state", ["namespace", "experiment", "state"])
TRIAL_DURATION = Histogram(
    "kubenas_trial_duration_seconds",
    "Wall time of finished trial runs",
    buckets=(5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600),
)
GPU_SECONDS = Counter(
    "kubenas_trial_gpu_seconds_total",
    "GPU time used by finished trial runs",
    ["namespace", "experiment"],
)
RECONCILE_SECONDS = Histogram(
    "kubenas_reconcile_duration_seconds",
    "Time of one reconcile pass of an experiment",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RECONCILE_ERRORS = Counter("kubenas_reconcile_errors_total", "Reconcile passes that raised")
PROMETHEUS_ERRORS = Counter("kubenas_prometheus_query_errors_total", "Failed queries to Prometheus")
BEST_OBJECTIVE = Gauge(
    "kubenas_best_objective",
    "Objective of the best trial so far",
    ["namespace", "experiment", "metric"],
)

_STATES = ("Running", "Succeeded", "Failed")


def observe_experiment(
    namespace: str, experiment: NASExperiment, records: Iterable[TrialRecord], decisions: Decisions
) -> None:
    records = list(records)
    name = experiment.name
    for state in TrialState:
        TRIALS.labels(namespace, name, state.value).set(sum(r.state == state for r in records))
    current = (
        "Running" if not decisions.finished else ("Succeeded" if decisions.succeeded else "Failed")
    )
    for experiment_state in _STATES:
        EXPERIMENTS.labels(namespace, name, experiment_state).set(int(experiment_state == current))
    metric = experiment.spec.objective.metric
    if decisions.best is not None and metric in decisions.best.metrics:
        BEST_OBJECTIVE.labels(namespace, name, metric).set(decisions.best.metrics[metric])


def forget_experiment(namespace: str, name: str, metric: str) -> None:
    """Drop an experiment's series once it is deleted, so dashboards stop showing it."""
    series = [(TRIALS, (namespace, name, state.value)) for state in TrialState]
    series += [(EXPERIMENTS, (namespace, name, state)) for state in _STATES]
    series.append((BEST_OBJECTIVE, (namespace, name, metric)))
    for gauge, labels in series:
        with contextlib.suppress(KeyError):
            gauge.remove(*labels)
