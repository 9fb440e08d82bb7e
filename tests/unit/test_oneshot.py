"""Strategy oneshot in the engine: one supernet trial first, then its derived architectures as
candidates, restart-safe, with a failed supernet following maxFailedTrials."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from kubenas import transitions
from kubenas.api.experiment import ExperimentSpec, NASExperiment
from kubenas.api.records import DerivedArchitecture, TrialRecord, TrialRole, TrialState
from kubenas.contract import trial_environment
from kubenas.engine import FinishReason, _planner_for, decide
from kubenas.k8s.manifests import build_job, build_trial
from kubenas.k8s.settings import OperatorSettings
from kubenas.oneshot import decode_derived, supernet_summary
from kubenas.runtime.simulated import simulate
from kubenas.space import build_space

from .conftest import learning_curve, quality


def _spec(top_k: int = 4, parallel: int = 2, max_failed: int = 1) -> ExperimentSpec:
    return ExperimentSpec.model_validate(
        {
            "searchSpace": {"family": "nb201-cell", "stemChannels": [8], "cellsPerStage": [1]},
            "strategy": {"name": "oneshot", "topK": top_k, "supernetEpochs": 6},
            "seed": 3,
            "budget": {"maxTrials": 10, "parallelTrials": parallel, "maxFailedTrials": max_failed},
            "fidelity": {"max": 3},
            "trial": {"dataset": "digits", "timeoutSeconds": 100},
        }
    )


def _derived(spec: ExperimentSpec, count: int, seed: int = 0) -> list[DerivedArchitecture]:
    space = build_space(spec.search_space)
    rng = random.Random(seed)
    picked: dict[str, Any] = {}
    while len(picked) < count:
        params = space.sample(rng)
        picked.setdefault(space.key(params), params)
    return [
        DerivedArchitecture(params=p, score=round(0.9 - 0.1 * i, 3))
        for i, p in enumerate(picked.values())
    ]


def _supernet(spec: ExperimentSpec, state: TrialState, **changes: Any) -> TrialRecord:
    return TrialRecord(
        name="exp-0000",
        index=0,
        role=TrialRole.SUPERNET,
        params={},
        key="supernet",
        state=state,
        fidelity=6,
        **changes,
    )


def test_the_supernet_trial_comes_first_and_alone() -> None:
    spec = _spec()
    decisions = decide(spec, [], now=0.0)
    assert [(s.role, s.key, s.fidelity) for s in decisions.start] == [
        (TrialRole.SUPERNET, "supernet", 6)
    ]
    running = _supernet(spec, TrialState.RUNNING, started_at=0.0)
    assert decide(spec, [running], now=50.0).start == ()
    timed_out = decide(spec, [running], now=101.0)
    assert [(s.trial, s.reason, s.failed) for s in timed_out.stop] == [
        ("exp-0000", "Timeout", True)
    ]


def test_a_failed_supernet_is_started_again_within_max_failed_trials() -> None:
    spec = _spec(max_failed=1)
    failed = _supernet(spec, TrialState.FAILED, reason="Crashed", message="exit code -9")
    again = decide(spec, [failed], now=1.0)
    assert [(s.index, s.role) for s in again.start] == [(1, TrialRole.SUPERNET)]
    second = failed.with_changes(name="exp-0001", index=1)
    ended = decide(spec, [failed, second], now=2.0)
    assert ended.finished and not ended.succeeded
    assert ended.reason is FinishReason.SUPERNET_FAILED
    assert "exp-0001: exit code -9" in ended.message


def test_the_derived_architectures_are_trained_in_order_and_end_the_search() -> None:
    spec = _spec(top_k=4)
    derived = _derived(spec, 4)
    supernet = _supernet(spec, TrialState.SUCCEEDED, derived=derived)
    sim = simulate(spec, learning_curve, initial=[supernet])
    candidates = sorted(
        (r for r in sim.records.values() if r.role is TrialRole.CANDIDATE), key=lambda r: r.index
    )
    space = build_space(spec.search_space)
    assert [r.params for r in candidates] == [space.active(d.params) for d in derived]
    assert all(r.fidelity == 3 for r in candidates)
    last = sim.decisions[-1]
    assert last.reason is FinishReason.BUDGET_SPENT and last.succeeded
    assert last.message == "all 4 architectures derived from the supernet were trained"
    best = max(candidates, key=lambda r: quality(r.params))
    assert last.best is not None and last.best.name == best.name


def test_a_budget_of_exactly_top_k_ends_saying_the_derived_were_trained() -> None:
    spec = _spec(top_k=4).model_copy(
        update={"budget": _spec().budget.model_copy(update={"max_trials": 4})}
    )
    supernet = _supernet(spec, TrialState.SUCCEEDED, derived=_derived(spec, 4))
    last = simulate(spec, learning_curve, initial=[supernet]).decisions[-1]
    assert last.reason is FinishReason.BUDGET_SPENT
    assert last.message == "all 4 architectures derived from the supernet were trained"


def test_decisions_rebuilt_from_the_records_are_the_same() -> None:
    spec = _spec(top_k=5, parallel=3)
    supernet = _supernet(spec, TrialState.SUCCEEDED, derived=_derived(spec, 5))
    sim = simulate(spec, learning_curve, initial=[supernet])
    _planner_for.cache_clear()
    again = simulate(spec, learning_curve, initial=[supernet])
    trace = sorted((r.index, r.key, r.state) for r in sim.records.values())
    assert trace == sorted((r.index, r.key, r.state) for r in again.records.values())
    keys = [r.key for r in sim.records.values() if r.role is TrialRole.CANDIDATE]
    assert len(keys) == len(set(keys)) == 5
    assert sim.peak_running <= 3


def test_the_summary_says_how_well_the_supernet_ranked() -> None:
    spec = _spec(top_k=4)
    derived = _derived(spec, 4)
    supernet = _supernet(
        spec, TrialState.SUCCEEDED, derived=derived, started_at=0.0, finished_at=42.0
    )
    sim = simulate(spec, learning_curve, initial=[supernet])
    records = list(sim.records.values())
    summary = supernet_summary(spec, build_space(spec.search_space), records, gpus=2.0)
    assert summary is not None
    assert summary["method"] == "beta-darts" and summary["seconds"] == 42.0
    assert summary["gpuSeconds"] == 84.0
    assert summary["derived"] == summary["trainedDerived"] == 4
    assert summary["bestScore"] == 0.9
    assert -1.0 <= summary["spearman"] <= 1.0


def test_the_trainer_s_derived_list_is_decoded_or_refused_saying_why() -> None:
    spec = _spec()
    space = build_space(spec.search_space)
    derived = _derived(spec, 2)
    reported = [{"choices": space.to_choices(d.params), "score": d.score} for d in derived]
    assert decode_derived(space, reported) == [
        DerivedArchitecture(params=space.active(d.params), score=d.score) for d in derived
    ]
    with pytest.raises(ValueError, match="no derived architectures"):
        decode_derived(space, [])
    with pytest.raises(ValueError, match=r"derived\[0\].choices"):
        decode_derived(space, [{"choices": [9, 9], "score": 0.5}])


def test_the_supernet_trial_is_told_what_to_train_and_keeps_its_stage_s_checkpoints() -> None:
    experiment = NASExperiment.model_validate(
        {
            "apiVersion": "kubenas.io/v1alpha1",
            "kind": "NASExperiment",
            "metadata": {"name": "exp", "namespace": "team"},
            "spec": _spec().to_wire(),
        }
    )
    start = decide(experiment.spec, [], now=0.0).start[0]
    record = transitions.created("exp-0000", start, now=0.0)
    env = trial_environment(experiment, record, {})
    settings = json.loads(env["KUBENAS_SUPERNET"])
    assert settings["method"] == "beta-darts" and settings["topK"] == 4
    assert settings["searchSpace"]["stemChannels"] == [8]
    assert env["KUBENAS_EPOCHS"] == "6" and "KUBENAS_SCHEDULE_EPOCHS" not in env
    owner = {"apiVersion": "kubenas.io/v1alpha1", "kind": "NASExperiment"}
    trial = build_trial(
        {**owner, "metadata": {"name": "exp", "namespace": "team", "uid": "u-1"}},
        experiment,
        record,
        {},
    )
    trial["metadata"]["uid"] = "u-2"
    job = build_job(experiment, trial, record, {}, OperatorSettings())
    container = job["spec"]["template"]["spec"]["containers"][0]
    variables = {v["name"]: v.get("value") for v in container["env"]}
    assert variables["KUBENAS_CHECKPOINT_DIR"] == "/kubenas/checkpoints/exp/supernet"
