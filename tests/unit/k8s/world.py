"""One experiment on the fake API with a fake Prometheus/Pushgateway and a test-held clock:
what the reconciler's unit tests drive."""

from __future__ import annotations

import json
from typing import Any

from kubenas.api.records import TrialRecord
from kubenas.k8s.reconcile import ExperimentReconciler, Outcome, read_record
from kubenas.k8s.settings import OperatorSettings

from .fake_api import FakeApi
from .fake_prometheus import FakeMetricsServer, Pushed

NS = "team"
NAME = "exp"
T0 = 1_700_000_000.0


def experiment_doc(**spec: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiVersion": "kubenas.io/v1alpha1",
        "kind": "NASExperiment",
        "metadata": {"name": NAME},
        "spec": {
            "searchSpace": {
                "family": "custom",
                "parameters": [
                    {"name": "quality", "type": "int", "low": 1, "high": 9},
                    {"name": "width", "type": "categorical", "choices": [8, 16, 32, 64]},
                ],
            },
            "strategy": {"name": "random"},
            "seed": 3,
            "budget": {"maxTrials": 4, "parallelTrials": 2},
            "trial": {
                "dataset": "none:",
                "command": ["python", "train.py"],
                "timeoutSeconds": 100,
                "resources": {"limits": {"nvidia.com/gpu": 1}},
            },
        },
    }
    doc["spec"].update(spec)
    return doc


def summary(value: float, **extra: float) -> str:
    """A trainer's termination message."""
    return json.dumps({"metrics": {"val_accuracy": value, **extra}, "checkpoint": "/ck/x.pt"})


class World:
    def __init__(
        self,
        server: FakeMetricsServer | None,
        *,
        prometheus: bool = True,
        pushgateway: bool = True,
        **spec: Any,
    ) -> None:
        self.now = T0
        self.server = server
        self.api = FakeApi(lambda: self.now)
        url = server.url if server else None
        self.settings = OperatorSettings(
            prometheus_url=url if prometheus else None,
            pushgateway_url=url if pushgateway else None,
        )
        self.api.apply_experiment(experiment_doc(**spec), NS)
        self.reconciler = self.fresh_reconciler()

    @staticmethod
    def trial_spec() -> dict[str, Any]:
        trial: dict[str, Any] = experiment_doc()["spec"]["trial"]
        return trial

    def fresh_reconciler(self) -> ExperimentReconciler:
        return ExperimentReconciler(self.api, self.settings, NS, NAME, clock=lambda: self.now)

    def reconcile(self) -> Outcome:
        return self.reconciler.reconcile()

    def tick(self, seconds: float) -> None:
        self.now += seconds

    # -- reading the fake cluster ------------------------------------------------------------

    def trial_names(self) -> list[str]:
        return sorted(name for _, name in self.api.trials)

    def record(self, trial: str) -> TrialRecord:
        return read_record(self.api.trials[(NS, trial)])

    def status(self, trial: str) -> dict[str, Any]:
        return self.api.trial_status(NS, trial)

    def job_names(self) -> list[str]:
        return sorted(name for _, name in self.api.jobs)

    def condition(self, kind: str) -> tuple[str, str | None]:
        found = self.api.status_of(NS, NAME).condition(kind)
        assert found is not None, kind
        return found.status, found.reason

    # -- moving the fake cluster ---------------------------------------------------------------

    def run(self, job: str, at: float | None = None) -> None:
        self.api.run(NS, job, self.now if at is None else at)

    def succeed(self, job: str, message: str = "") -> None:
        self.api.succeed(NS, job, message)

    def crash(self, job: str, code: int, message: str) -> None:
        self.api.crash(NS, job, code, message)

    def push(self, trial: str, pushed: Pushed) -> None:
        assert self.server is not None
        self.server.push(NS, NAME, trial, pushed)
