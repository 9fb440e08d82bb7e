"""The screen stage in the cluster, on the fake API: the screen Job runs first, its scores come
from its pod's log, live in ConfigMaps of ranks, survive a restart, and steer the candidates.
tests/e2e/test_chart.py runs a screened experiment under the chart's operator."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kubenas.api import parse_experiment
from kubenas.api.records import TrialRole, TrialState
from kubenas.api.status import ExperimentStatus
from kubenas.k8s import reconcile
from kubenas.k8s.screen_store import build_configmaps, doubled_ranks, read_configmap
from kubenas.k8s.views import render
from kubenas.screening import screened_candidates
from kubenas.space import Assignment, build_space
from kubenas.strategies.prior import build_prior

from .world import NS, World, experiment_doc

CANDIDATES = 40
WARMUP = 3
SCREENING: dict[str, Any] = {
    "searchSpace": {"family": "nb201-cell", "stemChannels": [8], "cellsPerStage": [1]},
    "screening": {"ensemble": ["synflow", "params"], "candidates": CANDIDATES, "warmup": WARMUP},
    "trial": {
        "dataset": "digits",
        "command": ["python", "-m", "kubenas_trainer"],
        "timeoutSeconds": 100,
        "resources": {"limits": {"nvidia.com/gpu": 1}},
    },
}


@pytest.fixture(autouse=True)
def no_cached_scores() -> None:
    """Each test starts like a fresh operator process."""
    reconcile._screens.clear()


def candidate_keys() -> list[str]:
    spec = parse_experiment(experiment_doc(**SCREENING)).spec
    return screened_candidates(spec, build_space(spec.search_space))[1]


def screen_log(scores: dict[str, list[float | None]]) -> str:
    """What a screen trial prints: progress on stderr, JSON events on stdout."""
    events = [
        {"event": "start", "trial": "exp-0000"},
        {"event": "screen", "trial": "exp-0000", "proxies": list(scores), "scores": scores},
    ]
    return "screened 40/40 (80.0/s)\n" + "\n".join(json.dumps(e) for e in events) + "\n"


def scores() -> dict[str, list[float | None]]:
    """synflow best at the last candidate, undefined at the first; params all tied but one."""
    synflow: list[float | None] = [None, *(float(i) for i in range(1, CANDIDATES))]
    params: list[float | None] = [*([5.0] * (CANDIDATES - 1)), 7.0]
    return {"synflow": synflow, "params": params}


def screened_world() -> World:
    world = World(None, prometheus=False, pushgateway=False, **SCREENING)
    world.reconcile()
    assert world.trial_names() == ["exp-0000"] and world.job_names() == ["exp-0000-f0"]
    assert world.record("exp-0000").role is TrialRole.SCREEN
    world.run("exp-0000-f0")
    world.tick(5)
    message = json.dumps({"metrics": {"screened": 40.0, "screen_seconds": 4.0}})
    world.api.succeed(NS, "exp-0000-f0", message, log=screen_log(scores()))
    return world


def test_the_screen_job_runs_first_and_its_log_becomes_configmaps_of_ranks() -> None:
    world = screened_world()
    world.reconcile()
    status = world.status("exp-0000")
    assert status["state"] == "Succeeded"
    assert status["screen"] == {
        "candidates": CANDIDATES,
        "proxies": ["synflow", "params"],
        "configMaps": ["exp-0000-screen-synflow", "exp-0000-screen-params"],
    }
    stored = world.api.configmaps[(NS, "exp-0000-screen-synflow")]
    assert stored["metadata"]["ownerReferences"][0]["name"] == "exp-0000"
    assert read_configmap(stored) == [None, *(2.0 * i for i in range(CANDIDATES - 1))]
    # Candidates start only now, the best-screened first (synflow and params agree on the last).
    candidates = [n for n in world.trial_names() if n != "exp-0000"]
    assert candidates == ["exp-0001", "exp-0002"]
    assert world.record("exp-0001").key == candidate_keys()[-1]
    screening = world.api.status_of(NS, "exp").screening
    assert screening is not None and screening.screened == CANDIDATES
    assert screening.seconds == 5.0 and screening.state == "Succeeded"
    counts = world.api.status_of(NS, "exp").trials
    assert counts is not None and counts.total == 2  # the screen trial is not a candidate
    experiment = world.api.experiments[(NS, "exp")]
    trials = [t for (_, _), t in sorted(world.api.trials.items())]
    shown = render(experiment, trials, now=world.now)
    assert "screening  40 architectures by synflow, params in 5 s" in shown, shown


def test_a_restarted_operator_reads_the_scores_back_and_decides_the_same() -> None:
    world = screened_world()
    world.reconcile()
    reconcile._screens.clear()
    gets = world.api.count("get_configmap")
    for job in ("exp-0001-f0", "exp-0002-f0"):
        world.run(job)
        world.api.succeed(NS, job, json.dumps({"metrics": {"val_accuracy": 0.5}}))
    world.fresh_reconciler().reconcile()
    assert world.api.count("get_configmap") == gets + 2
    assert world.api.count("read_pod_log") == 1  # the log is read once, when the Job ends
    third = world.record("exp-0003")
    ranked = sorted(range(CANDIDATES), key=lambda i: -i)
    assert third.key == candidate_keys()[ranked[2]]  # the warm-up's third best-screened


def test_deleted_scores_are_said_in_the_status_and_the_search_goes_on() -> None:
    world = screened_world()
    world.reconcile()
    reconcile._screens.clear()
    del world.api.configmaps[(NS, "exp-0000-screen-params")]
    for job in ("exp-0001-f0", "exp-0002-f0"):
        world.run(job)
        world.api.succeed(NS, job, json.dumps({"metrics": {"val_accuracy": 0.5}}))
    world.fresh_reconciler().reconcile()
    screening = world.api.status_of(NS, "exp").screening
    assert screening is not None and screening.message is not None
    assert "scores are gone" in screening.message
    assert "exp-0003" in world.trial_names()


def test_a_screen_that_printed_no_scores_ends_the_search() -> None:
    world = World(None, prometheus=False, pushgateway=False, **SCREENING)
    world.reconcile()
    world.run("exp-0000-f0")
    world.api.succeed(NS, "exp-0000-f0", json.dumps({"metrics": {}}), log="Traceback ...\n")
    world.reconcile()
    assert world.status("exp-0000")["reason"] == "MissingScores"
    assert world.condition("Failed") == ("True", "ScreeningFailed")
    assert world.trial_names() == ["exp-0000"]


def test_ranks_keep_every_order_the_prior_reads() -> None:
    values = [3.5, None, 1.0, 3.5, -2.0, None, 9.0]
    assert doubled_ranks(values) == [5, 0xFFFF, 2, 5, 0, 0xFFFF, 8]
    keys = [f"k{i}" for i in range(len(values))]
    candidates: list[Assignment] = [{"i": i} for i in range(len(values))]
    stored = {"p": [None if r == 0xFFFF else float(r) for r in doubled_ranks(values)]}
    assert build_prior(candidates, keys, stored, 2) == build_prior(
        candidates, keys, {"p": values}, 2
    )


def test_the_largest_screening_stays_under_100_kb_per_object() -> None:
    """20,000 architectures and all seven proxies: one ConfigMap each, and the status."""
    n = 20_000
    trial = {
        "apiVersion": "kubenas.io/v1alpha1",
        "kind": "NASTrial",
        "metadata": {"name": f"{'x' * 40}-0000", "namespace": NS, "uid": "u"},
        "spec": {"experiment": "x" * 40},
    }
    proxies = ["synflow", "naswot", "jacob_cov", "snip", "grad_norm", "params", "flops"]
    configmaps = build_configmaps(trial, {p: [float(i % 977) for i in range(n)] for p in proxies})
    assert max(len(json.dumps(c)) for c in configmaps) < 100_000
    status = ExperimentStatus.model_validate(
        {
            "screening": {
                "trial": "x",
                "state": TrialState.SUCCEEDED.value,
                "proxies": proxies,
                "candidates": n,
                "screened": n,
                "spearman": {p: 0.5 for p in [*proxies, "ensemble"]},
            }
        }
    )
    assert len(json.dumps(status.to_wire())) < 2_000
