"""One contract, every strategy and scheduler: determinism, no duplicates, failures and running
trials handled, and decisions rebuilt from scratch equal those of a long-lived process."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kubenas.api.records import TrialRecord, TrialState
from kubenas.engine import FinishReason, _planner_for, decide
from kubenas.runtime.simulated import simulate
from kubenas.space import Assignment
from kubenas.strategies import STRATEGY_NAMES

from .conftest import learning_curve, make_spec, quality

SCHEDULERS = {
    "none": None,
    "asha": {"min": 1, "max": 9, "scheduler": "asha", "reductionFactor": 3},
    "hyperband": {"min": 1, "max": 9, "scheduler": "hyperband", "reductionFactor": 3},
    "median": {"min": 1, "max": 6, "scheduler": "median", "graceTrials": 3},
}


def _trace(sim_records: dict[str, TrialRecord]) -> list[tuple[int, str, str, int | None]]:
    return sorted((r.index, r.key, r.state.value, r.fidelity) for r in sim_records.values())


@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
def test_same_seed_same_search(strategy: str) -> None:
    spec = make_spec(strategy, max_trials=25, parallel=3, seed=7)
    first = simulate(spec, learning_curve)
    _planner_for.cache_clear()
    second = simulate(spec, learning_curve)
    assert _trace(first.records) == _trace(second.records)


@pytest.mark.parametrize("strategy", [s for s in STRATEGY_NAMES if s != "grid"])
def test_seed_changes_the_search(strategy: str) -> None:
    a = simulate(make_spec(strategy, max_trials=15, seed=1), learning_curve)
    b = simulate(make_spec(strategy, max_trials=15, seed=2), learning_curve)
    assert [r.key for r in a.records.values()] != [r.key for r in b.records.values()]


@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
@pytest.mark.parametrize("parallel", [1, 4])
def test_never_suggests_an_architecture_twice(strategy: str, parallel: int) -> None:
    sim = simulate(make_spec(strategy, max_trials=40, parallel=parallel), learning_curve)
    keys = [r.key for r in sim.records.values()]
    assert len(keys) == 40
    assert len(set(keys)) == 40
    assert sim.peak_running <= parallel


@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
def test_parallel_suggestions_avoid_running_ones(strategy: str) -> None:
    spec = make_spec(strategy, max_trials=20, parallel=5)
    records: list[TrialRecord] = []
    for round_ in range(3):
        decisions = decide(spec, records, now=float(round_))
        for start in decisions.start:
            records.append(
                TrialRecord(
                    name=f"t{start.index}",
                    index=start.index,
                    params=start.params,
                    key=start.key,
                    state=TrialState.RUNNING,
                )
            )
        # only the first of each round finishes: the others stay running
        records[-len(decisions.start)] = records[-len(decisions.start)].with_changes(
            state=TrialState.SUCCEEDED, metrics={"val_accuracy": 0.5}
        )
    keys = [r.key for r in records]
    assert len(records) == 5 + 1 + 1  # each round refills exactly the slot that freed
    assert len(keys) == len(set(keys))
    assert sum(r.state == TrialState.RUNNING for r in records) == 4


def _crash_some(params: Assignment, epoch: int) -> float | None:
    return None if quality(params) < 0.6 else learning_curve(params, epoch)


@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
def test_failed_trials_are_recorded_and_never_best(strategy: str) -> None:
    spec = make_spec(strategy, max_trials=30, parallel=2, maxFailedTrials=30)
    sim = simulate(spec, _crash_some)
    failed = [r for r in sim.records.values() if r.state == TrialState.FAILED]
    assert failed, "the curve crashes about a fifth of the architectures"
    assert sim.final.reason == FinishReason.BUDGET_SPENT
    assert sim.final.best is not None and sim.final.best.state == TrialState.SUCCEEDED


@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
def test_too_many_failures_ends_the_search(strategy: str) -> None:
    spec = make_spec(strategy, max_trials=30, parallel=2, maxFailedTrials=1)
    sim = simulate(spec, lambda params, epoch: None)
    assert sim.final.reason == FinishReason.TOO_MANY_FAILURES
    assert not sim.final.succeeded
    assert sum(r.state == TrialState.FAILED for r in sim.records.values()) == 2


@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
def test_small_space_is_exhausted_then_finished(strategy: str) -> None:
    spec = make_spec(
        strategy,
        family="custom",
        max_trials=50,
        parallel=2,
        space={
            "parameters": [
                {"name": "op", "type": "categorical", "choices": ["a", "b", "c"]},
                {"name": "depth", "type": "int", "low": 1, "high": 2},
            ]
        },
    )
    sim = simulate(spec, learning_curve)
    assert sim.final.reason == FinishReason.SPACE_EXHAUSTED
    assert len({r.key for r in sim.records.values()}) == len(sim.records) == 6


def _round_trip(records: list[TrialRecord]) -> list[TrialRecord]:
    """Records as a restarted process reads them back: through JSON, in arbitrary order."""
    return [TrialRecord.model_validate(json.loads(r.model_dump_json())) for r in reversed(records)]


@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
@pytest.mark.parametrize("scheduler", list(SCHEDULERS))
def test_restart_equivalence(strategy: str, scheduler: str) -> None:
    """At every tick, a fresh process given the stored records decides exactly what the
    long-lived one decided."""
    spec = make_spec(strategy, max_trials=18, parallel=3, fidelity=SCHEDULERS[scheduler])
    checked = [0]

    def check(sim: object) -> None:
        records = list(sim.records.values())  # type: ignore[attr-defined]
        live = decide(spec, records, now=123.0)
        _planner_for.cache_clear()
        rebuilt = decide(spec, _round_trip(records), now=123.0)
        assert live == rebuilt
        checked[0] += 1

    simulate(spec, learning_curve, on_tick=check)
    assert checked[0] >= 18


@pytest.mark.parametrize("scheduler", list(SCHEDULERS))
def test_scheduler_contract(scheduler: str) -> None:
    spec = make_spec("random", max_trials=27, parallel=3, fidelity=SCHEDULERS[scheduler])
    sim = simulate(spec, learning_curve)
    assert sim.final.reason == FinishReason.BUDGET_SPENT
    assert len(sim.records) == 27
    assert sim.peak_running <= 3
    best = sim.final.best
    assert best is not None
    max_fidelity = (SCHEDULERS[scheduler] or {}).get("max")
    assert best.fidelity == max_fidelity
    if scheduler in ("asha", "hyperband", "median"):
        assert sim.epochs_trained < 27 * (max_fidelity or 1)


def _convs(params: Assignment) -> float:
    """A cost that follows the architecture: how many of its edges are convolutions."""
    return float(sum(str(v).startswith("nor_conv") for v in params.values()))


def _hardware_spec(strategy: str, *, max_trials: int, parallel: int = 1, seed: int = 0) -> Any:
    spec = make_spec(strategy, max_trials=max_trials, parallel=parallel, seed=seed)
    objective = {
        "metric": "val_accuracy",
        "additional": [{"metric": "flops", "direction": "minimize"}],
        "constraints": [{"metric": "flops", "max": 1}],
    }
    return spec.model_copy(update={"objective": spec.objective.model_validate(objective)})


def _cost(params: Assignment) -> dict[str, float]:
    return {"flops": _convs(params)}


@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
def test_an_infeasible_architecture_is_never_trained_nor_best_nor_on_the_front(
    strategy: str,
) -> None:
    sim = simulate(_hardware_spec(strategy, max_trials=30, parallel=2), learning_curve, costs=_cost)
    infeasible = [r for r in sim.records.values() if _convs(r.params) > 1]
    assert infeasible, "the constraint must bite for this test to mean anything"
    for r in infeasible:
        assert (r.state, r.reason) == (TrialState.STOPPED, "Infeasible")
        assert "val_accuracy" not in r.metrics
        assert r.message == f"flops {_convs(r.params):g} > max 1"
    final = sim.final
    assert final.best is not None and _convs(final.best.params) <= 1
    assert final.front is not None and final.front.size >= 1
    assert all(_convs(r.params) <= 1 for r in final.pareto)
    assert final.front.reference == {
        "val_accuracy": min(
            r.metrics["val_accuracy"] for r in sim.records.values() if "val_accuracy" in r.metrics
        ),
        "flops": 1.0,
    }


@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
def test_restart_equivalence_of_a_constrained_multi_objective_search(strategy: str) -> None:
    spec = _hardware_spec(strategy, max_trials=16, parallel=3)
    checked = [0]

    def check(sim: object) -> None:
        records = list(sim.records.values())  # type: ignore[attr-defined]
        live = decide(spec, records, now=5.0)
        _planner_for.cache_clear()
        assert decide(spec, _round_trip(records), now=5.0) == live
        checked[0] += 1

    simulate(spec, learning_curve, on_tick=check, costs=_cost)
    assert checked[0] >= 16


LEARNING = [s for s in STRATEGY_NAMES if s not in ("random", "grid")]


@pytest.mark.parametrize("strategy", LEARNING)
def test_strategies_learn_to_avoid_infeasible_architectures(strategy: str) -> None:
    """Over the second half of a search, fewer infeasible proposals than random search makes
    (about 77 % of this space breaks the constraint)."""

    def late_infeasible(name: str) -> int:
        total = 0
        for seed in range(3):
            sim = simulate(
                _hardware_spec(name, max_trials=60, seed=seed), learning_curve, costs=_cost
            )
            late = [r for r in sim.records.values() if r.index >= 30]
            total += sum(r.reason == "Infeasible" for r in late)
        return total

    assert late_infeasible(strategy) < late_infeasible("random")
