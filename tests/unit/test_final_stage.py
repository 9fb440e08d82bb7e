"""The final stage in the engine: after the search, retrain the finalists on every seed next to
the baselines, wait for a person when asked to, and say what came of it."""

from __future__ import annotations

from typing import Any

import pytest

from kubenas import transitions
from kubenas.api.experiment import ExperimentSpec
from kubenas.api.records import TrialRecord, TrialRole, TrialState
from kubenas.contract import record_architecture, record_seed, trial_environment
from kubenas.engine import Decisions, FinishReason, decide, planner
from kubenas.final import Approval, parse_approval
from kubenas.final_results import final_results, held_out_metric
from kubenas.runtime.simulated import simulate

from .conftest import learning_curve, make_spec, quality

RESNET_CELL = "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|"


def _spec(final: dict[str, Any] | None = None, **extra: Any) -> ExperimentSpec:
    doc = make_spec(max_trials=8, parallel=2, seed=5).to_wire()
    doc["final"] = {"topK": 2, "seeds": 2, "fidelity": 3, **(final or {})}
    resnet = {"cell": RESNET_CELL, "stem_channels": 16, "cells_per_stage": 1}
    doc["baselines"] = [{"name": "resnet", "architecture": resnet}]
    doc.update(extra)
    return ExperimentSpec.model_validate(doc)


def _search_best(records: list[TrialRecord], k: int) -> list[str]:
    candidates = [r for r in records if r.role is TrialRole.CANDIDATE and r.metrics]
    ranked = sorted(candidates, key=lambda r: r.metrics["val_accuracy"], reverse=True)
    return [r.name for r in ranked[:k]]


def test_the_top_candidates_are_retrained_on_every_seed_next_to_each_baseline() -> None:
    spec = _spec()
    sim = simulate(spec, learning_curve)
    records = list(sim.records.values())
    finals = [r for r in records if r.role is TrialRole.FINAL]
    baselines = [r for r in records if r.role is TrialRole.BASELINE]
    assert sim.final.finished and sim.final.succeeded
    assert len(finals) == 4 and {r.source for r in finals} == set(_search_best(records, 2))
    assert {(r.source, r.replica) for r in finals} == set(
        (s, seed) for s in _search_best(records, 2) for seed in (0, 1)
    )
    assert [(r.baseline, r.replica) for r in baselines] == [("resnet", 0), ("resnet", 1)]
    assert all(r.fidelity == 3 and r.state is TrialState.SUCCEEDED for r in finals + baselines)
    # The search's own budget is untouched: its eight candidates, then the final stage's six.
    assert sum(r.role is TrialRole.CANDIDATE for r in records) == 8
    assert "final stage: 6 of 6 trials trained" in sim.final.message
    # Every final trial starts after the last candidate ended.
    last_candidate = max(r.finished_at or 0 for r in records if r.role is TrialRole.CANDIDATE)
    assert min(r.started_at or 0 for r in finals + baselines) >= last_candidate


def test_each_network_gets_its_first_seed_before_any_gets_its_second() -> None:
    spec = _spec()
    sim = simulate(spec, learning_curve)
    ordered = sorted(
        (r for r in sim.records.values() if r.role is not TrialRole.CANDIDATE),
        key=lambda r: r.index,
    )
    assert [r.replica for r in ordered] == [0, 0, 0, 1, 1, 1]


def test_final_trials_train_on_the_final_seeds_and_the_baseline_on_its_own_architecture() -> None:
    from kubenas.api.experiment import NASExperiment

    spec = _spec()
    experiment = NASExperiment.model_validate(
        {
            "apiVersion": "kubenas.io/v1alpha1",
            "kind": "NASExperiment",
            "metadata": {"name": "x"},
            "spec": spec.to_wire(),
        }
    )
    sim = simulate(spec, learning_curve)
    by_replica: dict[int, set[int]] = {}
    for r in sim.records.values():
        if r.replica is not None:
            by_replica.setdefault(r.replica, set()).add(record_seed(spec.seed, r))
    assert all(len(seeds) == 1 for seeds in by_replica.values())  # one seed per replica
    assert by_replica[0] != by_replica[1]
    baseline = next(r for r in sim.records.values() if r.role is TrialRole.BASELINE)
    assert record_architecture(experiment, baseline)["cell"] == RESNET_CELL
    final = next(r for r in sim.records.values() if r.role is TrialRole.FINAL)
    env = trial_environment(experiment, final, record_architecture(experiment, final))
    assert env["KUBENAS_TRAIN_ON"] == "train+val" and env["KUBENAS_EXPORT"] == "1"
    candidate = next(r for r in sim.records.values() if r.role is TrialRole.CANDIDATE)
    env = trial_environment(experiment, candidate, record_architecture(experiment, candidate))
    assert "KUBENAS_TRAIN_ON" not in env and "KUBENAS_EXPORT" not in env


def test_manual_approval_waits_then_retrains_what_the_person_named() -> None:
    spec = _spec({"approval": "manual"})
    waiting = simulate(spec, learning_curve)
    assert waiting.final.awaiting_approval and not waiting.final.finished
    assert not any(r.role is TrialRole.FINAL for r in waiting.records.values())
    proposed = [r.name for r in waiting.final.finalists]
    assert proposed == _search_best(list(waiting.records.values()), 2)
    assert "awaits approval" in waiting.final.message

    worst = min(
        (r for r in waiting.records.values() if r.metrics),
        key=lambda r: r.metrics["val_accuracy"],
    )
    approved = simulate(
        spec,
        learning_curve,
        initial=list(waiting.records.values()),
        approval=Approval(trials=(worst.name,)),
    )
    finals = [r for r in approved.records.values() if r.role is TrialRole.FINAL]
    assert {r.source for r in finals} == {worst.name}
    assert approved.final.finished and approved.final.succeeded


def test_a_released_stage_goes_on_without_the_approval_it_was_released_with() -> None:
    """Once final trials exist, a restart that lost the approval (a deleted annotation) neither
    stalls nor repeats them."""
    spec = _spec({"approval": "manual"})
    waiting = simulate(spec, learning_curve)
    records = list(waiting.records.values())
    started = decide(spec, records, now=1000.0, approval=Approval())
    assert len(started.start) == 2
    again = decide(spec, _run_to_the_end(started, records), now=1002.0, approval=None)
    assert not again.awaiting_approval and len(again.start) == 2
    assert {s.key for s in again.start}.isdisjoint({s.key for s in started.start})


def _run_to_the_end(started: Decisions, records: list[TrialRecord]) -> list[TrialRecord]:
    """Apply ``started`` and let every trial it started succeed."""
    applied = transitions.apply_decisions(
        started, {r.name: r for r in records}, _Keep(), name_of=lambda i: f"sim-{i:04d}", now=1000
    )
    return [
        transitions.succeeded(r, {"val_accuracy": 0.5}, checkpoint=None, source="t", now=1001)
        if r.state.active
        else r
        for r in applied.records.values()
    ]


class _Keep:
    def halt(self, record: TrialRecord) -> str:
        return ""

    def save(self, before: TrialRecord | None, after: TrialRecord) -> None:
        pass

    def launch(self, record: TrialRecord) -> TrialRecord:
        return transitions.started(record, 1000.0)


def test_a_final_stage_whose_every_trial_failed_fails_the_experiment() -> None:
    spec = _spec()

    def crashes_when_final(params: dict[str, Any], epoch: int) -> float | None:
        return None if epoch == 3 else learning_curve(params, epoch)

    sim = simulate(spec, crashes_when_final)
    assert sim.final.finished and not sim.final.succeeded
    assert sim.final.reason is FinishReason.FINAL_FAILED


def test_without_a_final_stage_nothing_changes() -> None:
    spec = make_spec(max_trials=6, parallel=2)
    sim = simulate(spec, learning_curve)
    assert all(r.role is TrialRole.CANDIDATE for r in sim.records.values())
    assert final_results(spec, list(sim.records.values())) is None


def test_a_multi_objective_search_retrains_members_spread_along_its_front() -> None:
    doc = _spec({"topK": 3}).to_wire()
    doc["objective"] = {
        "metric": "val_accuracy",
        "additional": [{"metric": "params", "direction": "minimize"}],
    }
    spec = ExperimentSpec.model_validate(doc)
    sim = simulate(spec, learning_curve, costs=lambda p: {"params": 1000 * quality(p) ** 2})
    front = [r.name for r in sim.decisions[-1].pareto]
    finals = {r.source for r in sim.records.values() if r.role is TrialRole.FINAL}
    assert finals <= set(front) and len(finals) == min(3, len(front))
    if len(front) >= 3:
        assert {front[0], front[-1]} <= finals  # both ends of the front


def _final_record(index: int, role: TrialRole, metrics: dict[str, float], **kw: Any) -> TrialRecord:
    return TrialRecord(
        name=f"t{index}",
        index=index,
        role=role,
        params={},
        key=f"k{index}",
        state=TrialState.SUCCEEDED,
        metrics=metrics,
        **kw,
    )


def test_results_give_mean_and_std_over_seeds_and_compare_with_each_baseline() -> None:
    spec = _spec()
    records = [
        _final_record(10, TrialRole.FINAL, {"test_accuracy": 0.9, "params": 100}, source="a"),
        _final_record(11, TrialRole.FINAL, {"test_accuracy": 0.8, "params": 100}, source="a"),
        _final_record(12, TrialRole.FINAL, {"test_accuracy": 0.7, "params": 50}, source="b"),
        _final_record(13, TrialRole.BASELINE, {"test_accuracy": 0.8, "params": 300}, baseline="r"),
        _final_record(14, TrialRole.BASELINE, {"test_accuracy": 0.84, "params": 300}, baseline="r"),
    ]
    results = final_results(spec, records)
    assert results is not None and results["metric"] == "test_accuracy"
    a = next(n for n in results["networks"] if n["name"] == "a")
    assert a["seeds"] == 2 and a["metrics"]["test_accuracy"]["mean"] == pytest.approx(0.85)
    assert a["metrics"]["test_accuracy"]["std"] == pytest.approx(0.0707107, rel=1e-5)
    assert results["best"] == "a"
    (comparison,) = results["comparison"]
    assert comparison["baseline"] == "r" and comparison["difference"] == pytest.approx(0.03)
    assert comparison["nas_better"] and comparison["costs"]["params"] == {
        "nas": 100,
        "baseline": 300,
    }


def test_the_held_out_metric_of_an_objective() -> None:
    assert held_out_metric("val_accuracy") == "test_accuracy"
    assert held_out_metric("val_loss") == "test_loss"
    assert held_out_metric("reward") == "reward"


def test_an_approval_annotation_is_read_as_people_write_it() -> None:
    assert parse_approval(None) is None and parse_approval(" ") is None
    assert parse_approval("proposed") == Approval() == parse_approval("true")
    assert parse_approval("exp-0003, exp-0007") == Approval(trials=("exp-0003", "exp-0007"))


def test_finalists_rank_by_fidelity_first() -> None:
    """A candidate trained longer outranks a luckier one stopped early (ASHA's low rungs)."""
    spec = _spec({"topK": 1})
    plan = planner(spec)
    starts = decide(spec, [], now=0.0).start
    short, long = starts
    records = [
        TrialRecord(
            name="t0",
            index=0,
            params=short.params,
            key=short.key,
            state=TrialState.SUCCEEDED,
            fidelity=1,
            metrics={"val_accuracy": 0.99},
        ),
        TrialRecord(
            name="t1",
            index=1,
            params=long.params,
            key=long.key,
            state=TrialState.SUCCEEDED,
            fidelity=9,
            metrics={"val_accuracy": 0.6},
        ),
    ]
    from kubenas.final import finalists

    assert [r.name for r in finalists(spec, records, plan.objective)] == ["t1"]


def test_a_removed_approval_never_swaps_the_networks_being_retrained() -> None:
    spec = _spec({"approval": "manual"})
    waiting = simulate(spec, learning_curve)
    records = list(waiting.records.values())
    proposed = {r.name for r in waiting.final.finalists}
    other = next(r.name for r in records if r.metrics and r.name not in proposed)
    started = decide(spec, records, now=1000.0, approval=Approval(trials=(other,)))
    again = decide(spec, _run_to_the_end(started, records), now=1002.0, approval=None)
    assert {s.source for s in again.start if s.role is TrialRole.FINAL} <= {other}
    assert [r.name for r in again.finalists] == [other]
