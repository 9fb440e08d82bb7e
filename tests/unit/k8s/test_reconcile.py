"""The reconciler's passes on an in-memory fake API (tests/unit/k8s/fake_api.py) and a fake
Prometheus/Pushgateway served over real HTTP: every path of observe → decide → act, fast and
without a cluster. tests/e2e/test_operator.py runs the same paths against the dev cluster."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator

import pytest

from kubenas.api import parse_experiment
from kubenas.api.records import TrialState
from kubenas.k8s import metrics_source
from kubenas.k8s.reconcile import (
    PROGRESS_POLL_SECONDS,
    TIMEOUT_SLACK_SECONDS,
    ExperimentReconciler,
    next_pass_in,
)
from kubenas.k8s.settings import OperatorSettings

from .fake_api import FakeApiError
from .fake_prometheus import FakeMetricsServer, Pushed
from .world import NAME, NS, T0, World, experiment_doc, summary


@pytest.fixture
def server() -> Iterator[FakeMetricsServer]:
    running = FakeMetricsServer()
    yield running
    running.stop()


# -- creating trials and Jobs ----------------------------------------------------------------


def test_first_pass_queues_trials_and_creates_their_jobs(server: FakeMetricsServer) -> None:
    world = World(server)
    outcome = world.reconcile()
    assert world.trial_names() == ["exp-0000", "exp-0001"]
    assert world.job_names() == ["exp-0000-f0", "exp-0001-f0"]
    status = world.status("exp-0000")
    assert status["state"] == "Pending" and status["queuedAt"] == "2023-11-14T22:13:20Z"
    assert "startTime" not in status
    assert "activeDeadlineSeconds" not in world.api.job(NS, "exp-0000-f0")["spec"]
    assert outcome.running == 2 and not outcome.finished
    assert world.api.status_of(NS, NAME).trials is not None


def test_crash_between_trial_and_job_relaunches_without_duplicates(
    server: FakeMetricsServer,
) -> None:
    world = World(server)
    world.api.failing["create_job"] = FakeApiError("API server went away")
    with pytest.raises(FakeApiError):
        world.reconcile()
    assert world.trial_names() == ["exp-0000"] and world.job_names() == []
    del world.api.failing["create_job"]
    world.fresh_reconciler().reconcile()
    assert world.trial_names() == ["exp-0000", "exp-0001"]
    assert world.job_names() == ["exp-0000-f0", "exp-0001-f0"]
    assert world.api.count("create_trial") == 2


def test_a_fresh_reconciler_on_the_same_state_decides_the_same(
    server: FakeMetricsServer,
) -> None:
    world = World(server)
    world.reconcile()
    world.tick(5)
    world.run("exp-0000-f0")
    world.tick(5)
    world.succeed("exp-0000-f0", summary(0.7))
    twin = copy.deepcopy(world.api)  # the same stored state, for a restarted operator
    world.reconcile()
    restarted = ExperimentReconciler(twin, world.settings, NS, NAME, clock=lambda: world.now)
    restarted.reconcile()
    assert twin.trials == world.api.trials
    assert twin.jobs == world.api.jobs
    assert twin.experiments == world.api.experiments


def test_a_restarted_operator_keeps_reporting_the_last_outage(
    server: FakeMetricsServer,
) -> None:
    """A pass that need not ask Prometheus (nothing runs) keeps the stored finding; it does not
    claim that metrics come from Prometheus."""
    world = World(server, budget={"maxTrials": 2, "parallelTrials": 2})
    world.reconcile()
    server.state.broken = True
    for job in world.job_names():
        world.run(job)
        world.succeed(job, summary(0.5))
    assert world.reconcile().finished
    server.state.broken = False
    server.state.queries.clear()
    world.fresh_reconciler().reconcile()
    assert server.state.queries == []
    assert world.condition("MetricsAvailable") == ("False", "PrometheusUnreachable")


# -- folding Job state into trials ----------------------------------------------------------


def test_a_job_whose_pod_waits_for_a_gpu_keeps_the_trial_pending(
    server: FakeMetricsServer,
) -> None:
    world = World(server)
    world.reconcile()
    world.api.unschedulable(NS, "exp-0000-f0")
    world.tick(500)  # far past timeoutSeconds (100)
    world.reconcile()
    record = world.record("exp-0000")
    assert record.state is TrialState.PENDING and record.started_at is None
    assert "exp-0000-f0" in world.job_names()


def test_a_queued_trial_waits_for_admission_in_its_queue(server: FakeMetricsServer) -> None:
    world = World(server, trial={**World.trial_spec(), "queueName": "gpus"})
    world.reconcile()
    assert world.api.job(NS, "exp-0000-f0")["spec"]["suspend"] is True  # for Kueue to admit
    world.api.suspend(NS, "exp-0000-f0")
    world.tick(500)
    world.reconcile()
    status = world.status("exp-0000")
    assert (status["state"], status["reason"]) == ("Pending", "WaitingForAdmission")
    assert status["message"] == "waiting for admission in queue gpus"
    world.run("exp-0000-f0", at=T0 + 600)  # admitted after 600 s: none of it is run time
    world.tick(150)
    world.reconcile()
    record = world.record("exp-0000")
    assert (record.state, record.reason, record.message) == (TrialState.RUNNING, None, None)
    assert (record.started_at, record.queue_seconds) == (T0 + 600, 600)


def test_a_preempted_trial_waits_again_on_the_same_job_and_says_so(
    server: FakeMetricsServer,
) -> None:
    world = World(server, trial={**World.trial_spec(), "queueName": "gpus"})
    world.reconcile()
    world.run("exp-0000-f0", at=T0 + 5)
    world.tick(20)
    world.reconcile()
    world.api.suspend(NS, "exp-0000-f0")  # Kueue gives its quota to a higher priority
    world.tick(10)
    outcome = world.reconcile()
    record = world.record("exp-0000")
    assert (record.state, record.reason) == (TrialState.PENDING, "WaitingForAdmission")
    assert [e[1] for e in outcome.events] == ["TrialPreempted"]
    mine = [j for j in world.job_names() if j.startswith("exp-0000")]
    assert mine == ["exp-0000-f0"]  # the same Job waits: no new one, no failure
    world.tick(300)  # three timeouts in the queue
    world.reconcile()
    assert world.record("exp-0000").state is TrialState.PENDING, "no clock runs while queued"
    world.run("exp-0000-f0", at=T0 + 330)
    world.reconcile()
    record = world.record("exp-0000")
    assert (record.state, record.started_at) == (TrialState.RUNNING, T0 + 330)
    assert record.queue_seconds == pytest.approx(5 + 300)  # both waits, none of the run
    assert world.reconcile().events == []


def test_the_trial_runs_from_its_container_start_and_its_wait_is_queue_time(
    server: FakeMetricsServer,
) -> None:
    world = World(server)
    world.reconcile()
    world.tick(40)
    world.run("exp-0000-f0", at=T0 + 30)
    world.reconcile()
    record = world.record("exp-0000")
    assert record.state is TrialState.RUNNING
    assert record.started_at == T0 + 30 and record.queue_seconds == 30
    assert record.queued_at is None


def test_timeout_counts_from_the_container_start_not_the_queue(
    server: FakeMetricsServer,
) -> None:
    world = World(server)
    world.reconcile()
    world.tick(10)
    world.api.unschedulable(NS, "exp-0000-f0")
    world.reconcile()  # the pass sees the Job while its pod waits: the clock must not start
    world.tick(290)  # waited three timeouts for a GPU
    world.run("exp-0000-f0")
    world.tick(99)
    world.reconcile()
    assert world.record("exp-0000").state is TrialState.RUNNING
    world.tick(2)
    outcome = world.reconcile()
    record = world.record("exp-0000")
    assert (record.state, record.reason) == (TrialState.FAILED, "Timeout")
    assert "exp-0000-f0" not in world.job_names(), "the timed-out run's Job is deleted"
    assert ("Warning", "TrialFailed") in [(k, r) for k, r, _ in outcome.events]


def test_a_running_trial_whose_job_was_lost_is_queued_and_launched_again(
    server: FakeMetricsServer,
) -> None:
    world = World(server)
    world.reconcile()
    world.run("exp-0000-f0")
    world.reconcile()
    del world.api.jobs[(NS, "exp-0000-f0")]
    world.tick(10)
    world.reconcile()
    assert world.record("exp-0000").state is TrialState.PENDING
    assert world.status("exp-0000")["queuedAt"]
    assert "exp-0000-f0" in world.job_names()


def test_a_crashed_job_fails_the_trial_once_and_keeps_its_job(
    server: FakeMetricsServer,
) -> None:
    world = World(server)
    world.reconcile()
    world.run("exp-0000-f0")
    world.crash("exp-0000-f0", 7, "out of memory")
    first = world.reconcile()
    record = world.record("exp-0000")
    assert (record.state, record.reason) == (TrialState.FAILED, "Crashed")
    assert "exit code 7" in (record.message or "") and "out of memory" in (record.message or "")
    second = world.reconcile()
    failures = [e for e in first.events + second.events if e[1] == "TrialFailed"]
    assert len(failures) == 1
    assert "exp-0000-f0" in world.job_names(), "failed runs keep their Job for kubectl logs"


def test_a_run_without_its_objective_fails(server: FakeMetricsServer) -> None:
    world = World(server)
    world.reconcile()
    world.run("exp-0000-f0")
    world.succeed("exp-0000-f0", '{"metrics": {"loss": 0.1}}')
    world.reconcile()
    assert world.record("exp-0000").reason == "MissingObjective"


def test_a_job_that_ran_between_two_passes_is_started_then_recorded(
    server: FakeMetricsServer,
) -> None:
    world = World(server)
    world.reconcile()
    world.tick(20)
    world.run("exp-0000-f0")
    world.tick(10)
    world.succeed("exp-0000-f0", summary(0.8))
    world.reconcile()
    record = world.record("exp-0000")
    assert record.state is TrialState.SUCCEEDED
    assert (record.started_at, record.finished_at) == (T0 + 20, T0 + 30)
    assert record.queue_seconds == 20


# -- metrics: Prometheus first, termination message as fallback --------------------------------


def test_final_metrics_come_from_prometheus_when_it_has_the_final_push(
    server: FakeMetricsServer,
) -> None:
    world = World(server)
    world.reconcile()
    world.run("exp-0000-f0")
    world.push("exp-0000", Pushed({"val_accuracy": 0.91, "params": 10.0}, epoch=0, final=True))
    world.succeed("exp-0000-f0", summary(0.5))
    world.reconcile()
    status = world.status("exp-0000")
    assert status["metrics"] == {"val_accuracy": 0.91, "params": 10.0}
    assert status["metricsSource"] == "prometheus"
    assert world.condition("MetricsAvailable") == ("True", "PrometheusReachable")


def test_without_a_final_push_metrics_come_from_the_termination_message(
    server: FakeMetricsServer,
) -> None:
    world = World(server)
    world.reconcile()
    world.run("exp-0000-f0")
    world.succeed("exp-0000-f0", summary(0.5))
    world.reconcile()
    status = world.status("exp-0000")
    assert status["metrics"]["val_accuracy"] == 0.5
    assert status["metricsSource"] == "termination-message"
    assert status["checkpoint"] == "/ck/x.pt"


def test_prometheus_down_falls_back_and_says_so_once(server: FakeMetricsServer) -> None:
    world = World(server)
    world.reconcile()
    world.run("exp-0000-f0")
    world.push("exp-0000", Pushed({"val_accuracy": 0.91}, epoch=0, final=True))
    server.state.broken = True
    world.succeed("exp-0000-f0", summary(0.5))
    first = world.reconcile()
    assert world.status("exp-0000")["metricsSource"] == "termination-message"
    assert world.condition("MetricsAvailable") == ("False", "PrometheusUnreachable")
    second = world.reconcile()
    warned = [e for e in first.events + second.events if e[1] == "PrometheusUnreachable"]
    assert len(warned) == 1


def test_metrics_available_follows_the_last_query(server: FakeMetricsServer) -> None:
    world = World(server)
    world.reconcile()  # nothing ran yet: Prometheus was not asked
    assert world.condition("MetricsAvailable") == ("Unknown", "NotQueried")
    world.run("exp-0000-f0")
    server.state.broken = True
    world.reconcile()
    assert world.condition("MetricsAvailable") == ("False", "PrometheusUnreachable")
    server.state.broken = False
    world.reconcile()
    assert world.condition("MetricsAvailable") == ("True", "PrometheusReachable")


def test_without_prometheus_metrics_are_not_configured(server: FakeMetricsServer) -> None:
    world = World(server, prometheus=False)
    world.reconcile()
    world.run("exp-0000-f0")
    world.succeed("exp-0000-f0", summary(0.5))
    world.reconcile()
    assert world.condition("MetricsAvailable") == ("False", "NotConfigured")
    assert world.status("exp-0000")["metricsSource"] == "termination-message"
    assert server.state.queries == []


def test_one_prometheus_query_per_pass_for_all_trials(server: FakeMetricsServer) -> None:
    world = World(server, budget={"maxTrials": 8, "parallelTrials": 4})
    world.reconcile()
    for job in world.job_names():
        world.run(job)
    for trial in world.trial_names():
        world.push(trial, Pushed({"val_accuracy": 0.3}, epoch=1))
    server.state.queries.clear()
    world.reconcile()
    assert len(server.state.queries) == 1
    assert 'experiment="exp"' in server.state.queries[0]
    assert all(world.record(t).intermediate == [(1, 0.3)] for t in world.trial_names())


def test_a_slow_prometheus_costs_a_pass_one_short_timeout(
    server: FakeMetricsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics_source, "QUERY_TIMEOUT_SECONDS", 0.2)
    world = World(server, budget={"maxTrials": 8, "parallelTrials": 4})
    world.reconcile()
    for job in world.job_names():
        world.run(job)
    server.state.delay = 1.0
    server.state.queries.clear()
    began = time.monotonic()
    world.reconcile()
    assert time.monotonic() - began < 0.9
    assert len(server.state.queries) == 1
    assert world.condition("MetricsAvailable") == ("False", "PrometheusUnreachable")


def test_progress_is_appended_once_per_epoch(server: FakeMetricsServer) -> None:
    world = World(server)
    world.reconcile()
    world.run("exp-0000-f0")
    world.push("exp-0000", Pushed({"val_accuracy": 0.4}, epoch=1))
    world.reconcile()
    world.reconcile()
    world.push("exp-0000", Pushed({"val_accuracy": 0.6}, epoch=2))
    world.reconcile()
    assert world.record("exp-0000").intermediate == [(1, 0.4), (2, 0.6)]


# -- clean-up ------------------------------------------------------------------------------------


def test_a_recorded_runs_pushgateway_group_and_job_are_removed(
    server: FakeMetricsServer,
) -> None:
    world = World(server)
    world.reconcile()
    world.run("exp-0000-f0")
    world.push("exp-0000", Pushed({"val_accuracy": 0.9}, epoch=0, final=True))
    world.succeed("exp-0000-f0", summary(0.9))
    world.reconcile()
    assert server.state.deleted == [
        "/metrics/job/kubenas-trial/namespace/team/experiment/exp/trial/exp-0000"
    ]
    assert "exp-0000-f0" not in world.job_names()


def test_a_pushgateway_that_is_down_costs_one_attempt_per_pass(
    server: FakeMetricsServer,
) -> None:
    world = World(server, budget={"maxTrials": 4, "parallelTrials": 3})
    world.reconcile()
    for job in world.job_names():
        world.run(job)
        world.succeed(job, summary(0.5))
    server.state.broken = True
    world.reconcile()
    assert len(server.state.deleted) == 1
    assert all(world.record(t).state is TrialState.SUCCEEDED for t in world.trial_names()[:3])


def test_promotion_relaunches_from_the_checkpoint_and_collects_the_old_job(
    server: FakeMetricsServer,
) -> None:
    world = World(
        server,
        budget={"maxTrials": 3, "parallelTrials": 3},
        fidelity={"min": 1, "max": 3, "scheduler": "asha", "reductionFactor": 3},
    )
    world.reconcile()
    for i, job in enumerate(world.job_names()):
        assert job.endswith("-f1")
        world.run(job)
        world.succeed(job, summary(0.1 * (i + 1)))
    world.reconcile()
    promoted = [t for t in world.trial_names() if world.record(t).fidelity == 3]
    assert len(promoted) == 1
    name = promoted[0]
    record = world.record(name)
    assert record.state is TrialState.PENDING and record.resumed_from == "/ck/x.pt"
    assert f"{name}-f3" in world.job_names() and f"{name}-f1" not in world.job_names()
    # Prometheus still holds the first rung's final push (epoch 1): not this run's result.
    world.push(name, Pushed({"val_accuracy": 0.99}, epoch=1, final=True))
    world.run(f"{name}-f3")
    world.succeed(f"{name}-f3", summary(0.95))
    world.reconcile()
    done = world.record(name)
    assert done.metrics["val_accuracy"] == 0.95 and done.metrics_source == "termination-message"
    assert set(done.results) == {1, 3}


# -- the experiment: invalid specs, refusals, status and events -----------------------------


def test_an_invalid_spec_fails_the_experiment_once(server: FakeMetricsServer) -> None:
    world = World(server, budget={"maxTrials": 2, "parallelTrials": 5})
    first = world.reconcile()
    second = world.reconcile()
    assert first.finished and world.condition("Failed") == ("True", "InvalidSpec")
    assert [e[1] for e in first.events] == ["InvalidSpec"] and second.events == []
    assert world.api.count("patch_experiment_status") == 1
    assert world.trial_names() == []


def test_a_refused_pod_template_fails_the_experiment_without_jobs(
    server: FakeMetricsServer,
) -> None:
    world = World(server, trial={**World.trial_spec(), "podTemplate": {"spec": {"hostPID": True}}})
    outcome = world.reconcile()
    assert outcome.finished
    assert world.condition("Failed") == ("True", "PodTemplateNotAllowed")
    assert world.job_names() == []


def test_status_counts_trials_and_their_queue_time(server: FakeMetricsServer) -> None:
    world = World(server)
    world.reconcile()
    world.run("exp-0000-f0", at=T0 + 30)
    world.run("exp-0001-f0", at=T0 + 50)
    world.tick(60)
    world.reconcile()
    counts = world.api.status_of(NS, NAME).trials
    assert counts is not None
    assert (counts.running, counts.queue_seconds, counts.mean_queue_seconds) == (2, 80, 40)


def test_milestone_events_are_posted_once(server: FakeMetricsServer) -> None:
    world = World(server, budget={"maxTrials": 2, "parallelTrials": 2})
    events = world.reconcile().events
    events += world.reconcile().events
    for value, job in ((0.5, "exp-0000-f0"), (0.7, "exp-0001-f0")):
        world.run(job)
        world.succeed(job, summary(value))
    last = world.reconcile()
    events += last.events + world.reconcile().events
    reasons = [reason for _, reason, _ in events]
    assert reasons.count("Started") == 1 and reasons.count("NewBest") == 1
    assert reasons.count("BudgetSpent") == 1 and last.finished
    assert world.condition("Succeeded") == ("True", "BudgetSpent")


def test_a_pass_with_nothing_new_writes_nothing(server: FakeMetricsServer) -> None:
    world = World(server)
    world.reconcile()
    world.run("exp-0000-f0")
    world.reconcile()
    world.api.calls.clear()
    world.reconcile()
    writes = [m for m, _ in world.api.calls if m.startswith(("patch", "create", "delete"))]
    assert writes == []


def test_a_deleted_experiment_ends_the_loop(server: FakeMetricsServer) -> None:
    world = World(server)
    world.api.experiments.clear()
    assert world.reconcile().finished
    assert world.trial_names() == []


def test_without_an_event_the_next_pass_comes_at_the_timeout_or_the_median_poll() -> None:
    world = World(None, prometheus=False, pushgateway=False)
    world.reconcile()
    assert world.reconcile().next_pass_in is None  # nothing runs: only events wake it
    job = world.job_names()[0]
    world.run(job)
    world.tick(30)
    outcome = world.reconcile()
    assert outcome.next_pass_in == pytest.approx(100 - 30 + TIMEOUT_SLACK_SECONDS)

    experiment = parse_experiment(
        experiment_doc(fidelity={"max": 6, "scheduler": "median"}), "median"
    )
    running = [world.record(job.rsplit("-f", 1)[0])]
    with_prometheus = OperatorSettings(prometheus_url="http://prometheus:9090")
    assert next_pass_in(experiment, with_prometheus, running, world.now) == PROGRESS_POLL_SECONDS
    assert next_pass_in(experiment, world.settings, running, world.now) == pytest.approx(
        70 + TIMEOUT_SLACK_SECONDS
    )
