"""Operator overhead per trial, measured on the dev cluster and printed (not a timed assertion
beyond sanity: the figures go in the notes)."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable

import pytest
from kubernetes import client

from kubenas.bench.operator import run
from kubenas_devcluster import Cluster

from .operator_harness import OperatorProcess

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _sample(exposition: str, name: str) -> float:
    return float(
        next(line.split()[-1] for line in exposition.splitlines() if line.startswith(name + " "))
    )


def test_completion_to_next_job_latency_and_throughput(
    cluster: Cluster,
    k8s: client.ApiClient,
    namespace: str,
    start_operator: Callable[..., OperatorProcess],
) -> None:
    operator = start_operator(namespace)
    figures = run(k8s, namespace, experiments=10, trials=12, timeout=600)
    with urllib.request.urlopen(
        f"http://127.0.0.1:{operator.metrics_port}/metrics", timeout=5
    ) as r:
        scraped = r.read().decode()
    passes = _sample(scraped, "kubenas_reconcile_duration_seconds_count")
    seconds = _sample(scraped, "kubenas_reconcile_duration_seconds_sum")
    print(f"\noperator: {passes:.0f} reconcile passes, mean {seconds / passes * 1000:.0f} ms")
    per_experiment = figures.trials // figures.experiments
    print(
        f"\noperator bench: {figures.experiments} experiments x {per_experiment} "
        f"instant trials: completion -> next Job median {figures.median * 1000:.0f} ms, "
        f"p95 {figures.p95 * 1000:.0f} ms over {len(figures.latencies)} hand-overs; "
        f"{figures.trials_per_minute:.0f} trials/min in {figures.seconds:.1f} s"
    )
    assert len(figures.latencies) >= figures.trials - 2 * figures.experiments
    assert figures.median < 5.0
