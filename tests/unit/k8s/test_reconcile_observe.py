"""The pure halves of a pass: observe (cluster state → records), Job garbage collection, the
experiment-wide Prometheus query, and ``kubenas get``'s queue time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from kubenas import transitions
from kubenas.api import parse_experiment
from kubenas.api.records import TrialRecord, TrialState
from kubenas.engine import StartTrial
from kubenas.k8s import metrics_source
from kubenas.k8s.metrics_source import Availability, MetricsSnapshot
from kubenas.k8s.observe import jobs_to_delete, observe
from kubenas.k8s.settings import LABEL_TRIAL
from kubenas.k8s.views import render

from .fake_prometheus import FakeMetricsServer, Pushed
from .world import NS, T0, experiment_doc

EXPERIMENT = parse_experiment(experiment_doc() | {"metadata": {"name": "exp", "namespace": NS}})
NO_METRICS = MetricsSnapshot(Availability.NOT_CONFIGURED)


def _queued(name: str = "exp-0000", at: float = T0) -> TrialRecord:
    start = StartTrial(
        index=0, params={"quality": 3, "width": 8}, key="k", architecture={}, fidelity=None
    )
    return transitions.created(name, start, at)


def _job(name: str, trial: str, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {LABEL_TRIAL: trial}},
        "spec": {},
        "status": status,
    }


def _pod(job: str, state: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": f"{job}-x", "labels": {"job-name": job}},
        "status": {"containerStatuses": [{"name": "trainer", "state": state}]},
    }


def test_the_clients_timestamps_count_as_the_apis() -> None:
    """``list_job_pods`` goes through the client's models, which write ``+00:00``."""
    record = _queued()
    pod = _pod("exp-0000-f0", {"running": {"startedAt": "2023-11-14T22:14:00+00:00"}})
    seen = observe(
        EXPERIMENT,
        {record.name: record},
        [_job("exp-0000-f0", record.name)],
        [pod],
        NO_METRICS,
        T0 + 60,
    )
    running = seen.records[record.name]
    assert running.state is TrialState.RUNNING and running.started_at == T0 + 40
    assert running.queue_seconds == 40


def test_finished_records_are_left_alone_and_pending_ones_without_a_job_relaunched() -> None:
    queued = _queued("exp-0001")
    done = transitions.succeeded(
        transitions.started(_queued(), T0),
        {"val_accuracy": 0.5},
        checkpoint=None,
        source="prometheus",
        now=T0 + 9,
    )
    seen = observe(EXPERIMENT, {done.name: done, queued.name: queued}, [], [], NO_METRICS, T0)
    assert seen.records[done.name] is done and seen.relaunch == ("exp-0001",)
    assert seen.ended == ()


def test_a_crash_without_a_pod_left_still_fails_the_trial() -> None:
    record = _queued()
    job = _job(
        "exp-0000-f0",
        record.name,
        conditions=[{"type": "Failed", "status": "True", "reason": "PodFailurePolicy"}],
    )
    seen = observe(EXPERIMENT, {record.name: record}, [job], [], NO_METRICS, T0 + 5)
    failed = seen.records[record.name]
    assert (failed.state, failed.reason) == (TrialState.FAILED, "Crashed")
    assert "PodFailurePolicy" in (failed.message or "") and seen.ended == (record.name,)


def test_only_recorded_successful_runs_lose_their_jobs() -> None:
    done = transitions.succeeded(
        transitions.started(_queued(), T0),
        {"val_accuracy": 0.5},
        checkpoint=None,
        source="prometheus",
        now=T0 + 9,
    )
    crashed = transitions.failed(transitions.started(_queued("exp-0001"), T0), "Crashed", "x", T0)
    running = transitions.started(_queued("exp-0002"), T0)
    jobs = [
        _job("exp-0000-f0", "exp-0000", succeeded=1),
        _job("exp-0001-f0", "exp-0001", conditions=[{"type": "Failed", "status": "True"}]),
        _job("exp-0002-f0", "exp-0002", succeeded=1),  # succeeded, not yet recorded
        _job("other-f0", "other", succeeded=1),
    ]
    records = {r.name: r for r in (done, crashed, running)}
    assert jobs_to_delete(records, jobs) == ["exp-0000-f0"]


@pytest.fixture
def server() -> Iterator[FakeMetricsServer]:
    running = FakeMetricsServer()
    yield running
    running.stop()


def test_one_query_reads_every_trial_of_the_experiment_and_no_other(
    server: FakeMetricsServer,
) -> None:
    server.push(NS, "exp", "exp-0000", Pushed({"val_accuracy": 0.4}, epoch=2))
    server.push(NS, "exp", "exp-0001", Pushed({"val_accuracy": 0.8, "params": 3.0}, 5, True))
    server.push(NS, "other", "other-0000", Pushed({"val_accuracy": 0.1}, epoch=1))
    seen = metrics_source.snapshot(server.url, NS, "exp")
    assert seen.availability is Availability.ANSWERED and len(server.state.queries) == 1
    assert set(seen.trials) == {"exp-0000", "exp-0001"}
    assert seen.trials["exp-0001"] == metrics_source.TrialMetrics(
        {"val_accuracy": 0.8, "params": 3.0}, 5, True
    )
    assert seen.trials["exp-0000"].final is False


def test_an_error_answer_is_a_snapshot_that_says_why(server: FakeMetricsServer) -> None:
    server.state.broken = True
    seen = metrics_source.snapshot(server.url, NS, "exp")
    assert seen.availability is Availability.UNREACHABLE and seen.trials == {}
    assert "Prometheus unreachable" in (seen.problem or "")


def test_kubenas_get_shows_how_long_trials_waited() -> None:
    experiment = experiment_doc()
    experiment["metadata"]["namespace"] = NS
    experiment["status"] = {"trials": {"done": 1, "queueSeconds": 52.0, "meanQueueSeconds": 26.0}}
    trials = [
        {
            "metadata": {"name": "exp-0000"},
            "spec": {"index": 0},
            "status": {"state": "Succeeded", "queueSeconds": 40.0, "metricsSource": "prometheus"},
        },
        {
            "metadata": {"name": "exp-0001"},
            "spec": {"index": 1},
            "status": {"state": "Pending", "queuedAt": "2023-11-14T22:13:20Z", "queueSeconds": 12},
        },
    ]
    shown = render(experiment, trials, now=T0 + 30)
    assert "trials waited 52 s to start in all, 26 s each on average" in shown
    assert "waited 40 s" in shown and "metrics from prometheus" in shown
    assert "waiting 30 s" in shown
