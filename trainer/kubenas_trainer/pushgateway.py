"""Report sink that pushes a trial's latest metrics to a Prometheus Pushgateway.

One group per trial, keyed ``job="kubenas-trial"``, namespace, experiment, trial. Every push
replaces the whole group (HTTP PUT), so a retried trial's first push clears its stale series.
A failed push is logged and skipped: metrics are best effort, training is not.
"""

import sys
from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

JOB = "kubenas-trial"
PUSH_TIMEOUT_SECONDS = 5.0


class PushgatewaySink:
    """Keeps one private registry of the trial's gauges and pushes it after every event."""

    def __init__(self, url: str, namespace: str, experiment: str, trial: str) -> None:
        self.url = url
        self.grouping_key = {"namespace": namespace, "experiment": experiment, "trial": trial}
        self.registry = CollectorRegistry()
        self.metric = Gauge(
            "kubenas_trial_metric",
            "Latest value of each trial metric",
            ["name"],
            registry=self.registry,
        )
        self.epoch = Gauge(
            "kubenas_trial_epoch", "Epochs the trial has completed", registry=self.registry
        )
        self.final = Gauge(
            "kubenas_trial_final", "1 once the final metrics are pushed", registry=self.registry
        )

    def emit(self, event: Mapping[str, Any]) -> None:
        kind = event.get("event")
        if kind == "epoch":
            self.epoch.set(event["epoch"])
        elif kind == "final":
            self.final.set(1)
            if isinstance(event["metrics"].get("epochs"), int | float):
                self.epoch.set(event["metrics"]["epochs"])
        elif kind != "start":
            return
        for name, value in event.get("metrics", {}).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                self.metric.labels(name=name).set(value)
        self.push()

    def push(self) -> None:
        try:
            push_to_gateway(
                self.url,
                job=JOB,
                registry=self.registry,
                grouping_key=self.grouping_key,
                timeout=PUSH_TIMEOUT_SECONDS,
            )
        except Exception as error:  # any failure (network, HTTP, URL) must not stop training
            print(
                f"kubenas_trainer: pushgateway push to {self.url} failed: {error}",
                file=sys.stderr,
                flush=True,
            )
