"""Trial reuse on the fake API: worker Jobs instead of trial Jobs, leases written into the
NASTrials before a worker hears of them, results recorded once, a lease lost with its pod, and a
restarted operator that knows every lease. tests/e2e/test_reuse_cluster.py runs it for real."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from typing import Any

from kubenas.api.records import TrialState
from kubenas.k8s.leases import Ask, Delivery
from kubenas.k8s.manifests import worker_secret_name

from .world import NS, World, summary

REUSE: dict[str, Any] = {
    "budget": {"maxTrials": 4, "parallelTrials": 2},
    "trial": {
        **World.trial_spec(),
        "reuse": {"maxTrialsPerPod": 2},
        "env": [{"name": "USER_SETTING", "value": "kept"}],
    },
}
LEASE_URL = "http://operator.test:8080"


def reuse_world(**spec: Any) -> World:
    world = World(None, prometheus=False, pushgateway=False, **{**REUSE, **spec})
    world.settings = replace(world.settings, lease_url=LEASE_URL)
    world.reconciler = world.fresh_reconciler()
    return world


def ask(world: World, worker: str) -> Ask:
    """A worker's /next, and the pass it wakes."""
    asked = world.reconciler.desk.ask(worker, f"{worker}-pod")
    world.reconcile()
    return asked


def assignment(world: World, worker: str) -> dict[str, Any]:
    asked = ask(world, worker)
    assert asked.answer.done(), "a waiting trial is leased in the pass the ask woke"
    answer: dict[str, Any] = asked.answer.result()["assignment"]
    return answer


def deliver(
    world: World, worker: str, given: dict[str, Any], code: int = 0, message: str = ""
) -> Delivery:
    delivery = world.reconciler.desk.deliver(
        Delivery(worker, given["trial"], given["lease"], code, message or summary(0.8))
    )
    world.reconcile()
    return delivery


def test_workers_take_the_trials_and_each_result_is_recorded_once() -> None:
    world = reuse_world()
    world.reconcile()
    assert world.trial_names() == ["exp-0000", "exp-0001"]
    assert world.job_names() == ["exp-w1", "exp-w2"], "worker Jobs, not one Job per trial"
    worker = world.api.job(NS, "exp-w1")
    container = worker["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][-4:] == ["--serve", LEASE_URL, "--max-trials", "2"]
    env = {e["name"]: e for e in container["env"]}
    assert env["KUBENAS_WORKER"]["value"] == "exp-w1"
    assert env["USER_SETTING"]["value"] == "kept"
    token_ref = env["KUBENAS_WORKER_TOKEN"]["valueFrom"]["secretKeyRef"]
    secret = world.api.secrets[(NS, token_ref["name"])]
    assert token_ref["name"] == worker_secret_name("exp")
    token = base64.b64decode(secret["data"][token_ref["key"]]).decode()
    assert token == world.reconciler.desk.token and len(token) >= 32
    assert container["securityContext"]["runAsNonRoot"] is True

    given = assignment(world, "exp-w1")
    assert given["trial"] == "exp-0000" and given["command"] == ["python", "train.py"]
    assert given["env"]["KUBENAS_TRIAL"] == "exp-0000"
    assert json.loads(given["env"]["KUBENAS_ARCHITECTURE"]) == world.record("exp-0000").params
    status = world.status("exp-0000")
    assert (status["state"], status["worker"], status["lease"]) == (
        "Running",
        "exp-w1",
        given["lease"],
    ), "the lease is stored before the worker hears of it"
    assert status["job"] == "exp-w1"

    done = deliver(world, "exp-w1", given)
    assert done.answer.result() is True
    assert world.record("exp-0000").state is TrialState.SUCCEEDED
    assert world.record("exp-0000").metrics["val_accuracy"] == 0.8
    assert world.trial_names()[-1] == "exp-0002", "the freed slot gets the next trial"
    assert world.job_names() == ["exp-w1", "exp-w2"], "no worker beyond parallelTrials"

    again = deliver(world, "exp-w1", given, message=summary(0.1))
    assert again.answer.result() is True, "a repeated /done is answered as recorded"
    assert world.record("exp-0000").metrics["val_accuracy"] == 0.8, "and changes nothing"


def test_an_ask_waits_for_a_trial_and_a_finished_search_stops_every_worker() -> None:
    world = reuse_world(budget={"maxTrials": 2, "parallelTrials": 2})
    world.reconcile()
    first, second = assignment(world, "exp-w1"), assignment(world, "exp-w2")
    deliver(world, "exp-w1", first)
    waiting = ask(world, "exp-w1")
    assert not waiting.answer.done(), "no trial to give: the ask waits for a later pass"
    world.reconcile()
    assert not waiting.answer.done()
    deliver(world, "exp-w2", second)
    assert waiting.answer.result()["stop"] is True
    assert world.api.status_of(NS, "exp").completion_time
    assert world.job_names() == [], "the finished search's workers are deleted"


def test_a_worker_lost_mid_trial_gives_the_trial_back_then_fails_it_the_second_time() -> None:
    world = reuse_world()
    world.reconcile()
    given = assignment(world, "exp-w1")
    world.crash("exp-w1", 137, "")  # SIGKILLed: its Job fails (backoffLimit 0)
    world.reconcile()
    record = world.record("exp-0000")
    assert (record.state, record.lost_leases, record.worker) == (TrialState.PENDING, 1, None)
    assert "exp-w3" in world.job_names(), "a new worker replaces the lost one"
    late = deliver(world, "exp-w1", given)
    assert late.answer.result() is False, "a lost lease's result is refused (410)"

    again = assignment(world, "exp-w3")
    assert again["trial"] == "exp-0000" and again["lease"] != given["lease"]
    world.crash("exp-w3", 137, "")
    world.reconcile()
    record = world.record("exp-0000")
    assert (record.state, record.reason) == (TrialState.FAILED, "WorkerLost")
    assert "exp-w3" in (record.message or "")


def test_a_preempted_worker_gives_its_trial_back_without_counting_a_lost_run() -> None:
    world = reuse_world(trial={**REUSE["trial"], "queueName": "gpus"})
    world.reconcile()
    assert world.api.job(NS, "exp-w1")["spec"]["suspend"] is True, "for Kueue to admit"
    given = assignment(world, "exp-w1")
    world.api.suspend(NS, "exp-w1")  # Kueue gives its quota to a higher priority
    outcome = world.reconcile()
    record = world.record("exp-0000")
    assert (record.state, record.lost_leases, record.worker) == (TrialState.PENDING, 0, None)
    assert [e[1] for e in outcome.events] == ["TrialPreempted"]
    late = deliver(world, "exp-w1", given, code=143)
    assert late.answer.result() is False, "the preempted run's result is refused"
    assert world.record("exp-0000").state is TrialState.PENDING
    again = assignment(world, "exp-w2")
    assert again["trial"] == "exp-0000" and again["lease"] != given["lease"]


def test_a_restarted_operator_knows_every_lease_and_records_the_result_once() -> None:
    world = reuse_world()
    world.reconcile()
    given = assignment(world, "exp-w1")
    token = world.reconciler.desk.token
    world.reconciler = world.fresh_reconciler()  # SIGKILL: the desk is gone, the API is not
    world.reconcile()
    assert world.reconciler.desk.token == token, "the token comes back from its Secret"
    assert world.record("exp-0000").state is TrialState.RUNNING
    done = deliver(world, "exp-w1", given)
    assert done.answer.result() is True
    assert world.record("exp-0000").state is TrialState.SUCCEEDED
    assert sorted(world.trial_names()) == ["exp-0000", "exp-0001", "exp-0002"]


def test_an_assignment_whose_answer_was_lost_is_given_again_to_the_same_worker() -> None:
    world = reuse_world()
    world.reconcile()
    first = assignment(world, "exp-w1")
    again = assignment(world, "exp-w1")  # it asks again: it never heard of the first
    assert again == first, "the same lease, not a second trial"
    assert world.record("exp-0001").state is TrialState.PENDING


def test_a_crashed_trial_is_recorded_with_its_error_and_the_worker_goes_on() -> None:
    world = reuse_world()
    world.reconcile()
    given = assignment(world, "exp-w1")
    error = json.dumps({"event": "error", "message": "RuntimeError: out of memory"})
    done = deliver(world, "exp-w1", given, code=1, message=error)
    assert done.answer.result() is True
    record = world.record("exp-0000")
    assert (record.state, record.reason) == (TrialState.FAILED, "Crashed")
    assert "exit code 1" in (record.message or "") and "out of memory" in (record.message or "")
    assert assignment(world, "exp-w1")["trial"] == "exp-0001", "longest-waiting first"


def test_a_timed_out_trial_takes_its_worker_down_with_it() -> None:
    world = reuse_world()
    world.reconcile()
    assignment(world, "exp-w1")
    world.tick(101)  # timeoutSeconds is 100, counted from the lease
    world.reconcile()
    record = world.record("exp-0000")
    assert (record.state, record.reason) == (TrialState.FAILED, "Timeout")
    assert "exp-w1" not in world.job_names(), "the pod cannot be trusted to stop a hung trial"


def test_asks_from_a_pod_that_is_no_live_worker_are_told_to_stop() -> None:
    world = reuse_world()
    world.reconcile()
    stranger = ask(world, "exp-w9")
    assert stranger.answer.result()["stop"] is True
    assert world.record("exp-0000").state is TrialState.PENDING


def test_an_operator_without_a_lease_url_refuses_reuse_naming_the_field() -> None:
    world = World(None, prometheus=False, pushgateway=False, **REUSE)
    world.reconcile()
    state, reason = world.condition("Failed")
    assert (state, reason) == ("True", "ReuseNotServed")
    message = world.api.status_of(NS, "exp").condition("Failed")
    assert message is not None and "spec.trial.reuse" in (message.message or "")
    assert world.job_names() == []


def test_a_pod_template_the_operator_refuses_fails_the_experiment_before_any_worker() -> None:
    trial = {**REUSE["trial"], "podTemplate": {"spec": {"hostNetwork": True}}}
    world = reuse_world(trial=trial)
    world.reconcile()
    assert world.condition("Failed") == ("True", "PodTemplateNotAllowed")
    assert world.job_names() == []


def test_succeeded_workers_go_but_the_highest_number_and_failed_ones_stay() -> None:
    world = reuse_world()
    world.reconcile()
    given = assignment(world, "exp-w1")
    deliver(world, "exp-w1", given)
    world.succeed("exp-w1")  # it left after its trials
    world.crash("exp-w2", 137, "")  # lost, for kubectl logs
    world.reconcile()
    world.reconcile()
    assert "exp-w1" not in world.job_names(), "a succeeded worker is cleaned up"
    assert "exp-w2" in world.job_names(), "a failed worker stays"
    highest = max(int(n.rsplit("w", 1)[1]) for n in world.job_names() if "-w" in n)
    world.succeed(f"exp-w{highest}")
    world.reconcile()
    assert f"exp-w{highest}" in world.job_names(), "the highest number carries the numbering"
