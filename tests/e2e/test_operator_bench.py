"""Operator overhead per trial, measured on the dev cluster and printed (not a timed assertion
beyond sanity). CI-sized: 10 experiments; ``kubenas bench operator`` measures 1, 10 and 100
with API requests from an audit log, and the operator before a change side by side."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable

import pytest
from kubernetes import client

from kubenas.bench.operator import _cpu_seconds, _hand_overs, _peak_rss_mb, _sample, run
from kubenas_devcluster import Cluster

from .operator_harness import OperatorProcess, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_hand_overs_pair_each_completion_with_the_next_job() -> None:
    # Two slots: Jobs at 0 and 0; completions at 1 and 2 start Jobs at 1.1 and 2.3.
    assert _hand_overs([1.0, 2.0, 5.0], [0.0, 0.0, 1.1, 2.3]) == pytest.approx([0.1, 0.3])


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return str(r.read().decode())


def test_completion_to_next_job_latency_and_cost_per_trial(
    cluster: Cluster,
    k8s: client.ApiClient,
    namespace: str,
    start_operator: Callable[..., OperatorProcess],
) -> None:
    operator = start_operator(namespace)
    assert operator.process is not None
    pid = operator.process.pid
    wait_until(lambda: _reachable(operator.metrics_port), 60, "the operator to serve /metrics")
    cpu_before = _cpu_seconds(pid)
    figures = run(k8s, namespace, experiments=10, trials=12, timeout=600)
    cpu = _cpu_seconds(pid) - cpu_before
    scraped = _scrape(operator.metrics_port)
    passes = _sample(scraped, "kubenas_reconcile_duration_seconds_count")
    seconds = _sample(scraped, "kubenas_reconcile_duration_seconds_sum")
    per_experiment = figures.trials // figures.experiments
    print(
        f"\noperator bench: {figures.experiments} experiments x {per_experiment} "
        f"instant trials: completion -> next Job median {figures.median * 1000:.0f} ms, "
        f"p95 {figures.p95 * 1000:.0f} ms over {len(figures.latencies)} hand-overs; "
        f"{figures.trials_per_minute:.0f} trials/min in {figures.seconds:.1f} s; "
        f"{passes / figures.trials:.2f} reconcile passes per trial "
        f"(mean {seconds / max(passes, 1) * 1000:.0f} ms); "
        f"{cpu / figures.trials:.3f} CPU-s per trial; peak RSS {_peak_rss_mb(pid):.0f} MB"
    )
    assert len(figures.latencies) >= figures.trials - 2 * figures.experiments
    assert figures.median < 5.0
    # Sanity, not a target: one pass per watch event of every kind would be well over 10.
    assert passes / figures.trials < 10


def _reachable(port: int) -> bool:
    try:
        _scrape(port)
    except OSError:
        return False
    return True
