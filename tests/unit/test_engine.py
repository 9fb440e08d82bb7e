"""The decision function's behaviour as a runtime sees it."""

from __future__ import annotations

from kubenas.api.experiment import ExperimentSpec
from kubenas.api.records import TrialRecord, TrialState
from kubenas.engine import FinishReason, decide
from kubenas.runtime.simulated import simulate
from kubenas.schedulers import rungs
from kubenas.space import Assignment

from .conftest import learning_curve, make_spec, quality


def _record(index: int, start_params: Assignment, key: str, **changes: object) -> TrialRecord:
    return TrialRecord(name=f"t{index}", index=index, params=start_params, key=key).with_changes(
        **changes
    )


def test_first_call_fills_every_parallel_slot() -> None:
    decisions = decide(make_spec(max_trials=10, parallel=4), [], now=0.0)
    assert [s.index for s in decisions.start] == [0, 1, 2, 3]
    assert not decisions.finished
    cell = decisions.start[0].architecture["cell"]
    assert isinstance(cell, str) and cell.count("~") == 6


def test_goal_reached_ends_the_search_and_stops_running_trials() -> None:
    spec = make_spec(max_trials=10, parallel=2, goal=0.9)
    first = decide(spec, [], now=0.0)
    a, b = first.start
    records = [
        _record(
            a.index, a.params, a.key, state=TrialState.SUCCEEDED, metrics={"val_accuracy": 0.93}
        ),
        _record(b.index, b.params, b.key, state=TrialState.RUNNING),
    ]
    decisions = decide(spec, records, now=1.0)
    assert decisions.finished and decisions.succeeded
    assert decisions.reason == FinishReason.GOAL_REACHED
    assert [s.trial for s in decisions.stop] == ["t1"]
    assert decisions.best is not None and decisions.best.name == "t0"


def test_minimize_objective_picks_the_lowest() -> None:
    spec = make_spec(max_trials=3, parallel=3).model_copy(
        update={
            "objective": make_spec().objective.model_copy(
                update={"metric": "val_loss", "direction": "minimize"}
            )
        }
    )
    starts = decide(spec, [], now=0.0).start
    records = [
        _record(s.index, s.params, s.key, state=TrialState.SUCCEEDED, metrics={"val_loss": loss})
        for s, loss in zip(starts, [0.5, 0.2, 0.9], strict=True)
    ]
    decisions = decide(spec, records, now=1.0)
    assert decisions.reason == FinishReason.BUDGET_SPENT
    assert decisions.best is not None and decisions.best.metrics["val_loss"] == 0.2


def test_trial_running_past_its_timeout_is_stopped() -> None:
    spec = make_spec(max_trials=5, parallel=1)
    start = decide(spec, [], now=0.0).start[0]
    running = _record(
        start.index, start.params, start.key, state=TrialState.RUNNING, started_at=0.0
    )
    assert decide(spec, [running], now=100.0).stop == ()
    stop = decide(spec, [running], now=4000.0).stop
    assert [(s.trial, s.reason) for s in stop] == [("t0", "Timeout")]


def test_pareto_front_for_two_objectives() -> None:
    spec = make_spec(max_trials=4, parallel=4)
    spec = spec.model_copy(
        update={
            "objective": spec.objective.model_validate(
                {
                    "metric": "val_accuracy",
                    "additional": [{"metric": "params", "direction": "minimize"}],
                }
            )
        }
    )
    starts = decide(spec, [], now=0.0).start
    figures = [(0.90, 1000.0), (0.95, 5000.0), (0.85, 2000.0), (0.95, 4000.0)]
    records = [
        _record(
            s.index,
            s.params,
            s.key,
            state=TrialState.SUCCEEDED,
            metrics={"val_accuracy": acc, "params": size},
        )
        for s, (acc, size) in zip(starts, figures, strict=True)
    ]
    decisions = decide(spec, records, now=1.0)
    assert [r.name for r in decisions.pareto] == ["t3", "t0"]
    front = decisions.front
    assert front is not None and front.size == 2
    # No reference given and no constraint: the worst value of each objective among the trials.
    assert front.reference == {"val_accuracy": 0.85, "params": 5000.0}
    # (0.95 - 0.85) * (5000 - 4000) + (0.90 - 0.85) * (4000 - 1000)
    assert front.hypervolume is not None
    assert abs(front.hypervolume - (0.10 * 1000 + 0.05 * 3000)) < 1e-9


def _two_objective_spec(objective: dict[str, object]) -> ExperimentSpec:
    spec = make_spec(max_trials=6, parallel=6)
    return spec.model_copy(update={"objective": spec.objective.model_validate(objective)})


def test_constraints_keep_infeasible_trials_out_of_best_and_front_and_bound_the_reference() -> None:
    spec = _two_objective_spec(
        {
            "metric": "val_accuracy",
            "reference": 0.5,
            "additional": [{"metric": "latency_ms", "direction": "minimize"}],
            "constraints": [{"metric": "latency_ms", "max": 5.0}, {"metric": "params", "min": 10}],
        }
    )
    starts = decide(spec, [], now=0.0).start
    figures = [
        {"val_accuracy": 0.99, "latency_ms": 9.0, "params": 100},  # too slow: infeasible
        {"val_accuracy": 0.90, "latency_ms": 4.0, "params": 100},
        {"val_accuracy": 0.80, "latency_ms": 1.0, "params": 100},
        {"val_accuracy": 0.95, "latency_ms": 2.0, "params": 5},  # too small: infeasible
        {"latency_ms": 7.0, "params": 100},  # never trained (the trainer stopped it)
        {"val_accuracy": 0.70, "latency_ms": 3.0, "params": 100},  # dominated
    ]
    records = [
        _record(s.index, s.params, s.key, state=TrialState.SUCCEEDED, metrics=m)
        for s, m in zip(starts, figures, strict=True)
    ]
    decisions = decide(spec, records, now=1.0)
    assert decisions.best is not None and decisions.best.name == "t1"
    assert [r.name for r in decisions.pareto] == ["t1", "t2"]
    front = decisions.front
    assert front is not None
    # The main objective's reference is given; latency's is its constraint's bound.
    assert front.reference == {"val_accuracy": 0.5, "latency_ms": 5.0}
    assert front.hypervolume is not None
    assert abs(front.hypervolume - (0.4 * 1.0 + 0.3 * 3.0)) < 1e-9


def test_asha_rungs() -> None:
    assert rungs(1, 9, 3) == [1, 3, 9]
    assert rungs(1, 10, 3) == [1, 3, 10]
    assert rungs(2, 20, 3) == [2, 7, 20]
    assert rungs(1, 4, 3) == [1, 4]


def test_asha_promotes_from_checkpoints_and_saves_epochs() -> None:
    spec = make_spec(max_trials=27, parallel=3, fidelity={"min": 1, "max": 9, "scheduler": "asha"})
    promotions = []

    def watch(sim: object) -> None:
        promotions.extend(sim.decisions[-1].promote)  # type: ignore[attr-defined]

    sim = simulate(spec, learning_curve, on_tick=watch)
    assert promotions, "the best third of each rung moves up"
    for p in promotions:
        assert p.resume_from is not None and p.resume_from.startswith(f"checkpoints/{p.trial}/")
        assert p.fidelity in (3, 9)
    full = [r for r in sim.records.values() if r.fidelity == 9]
    assert full and all(set(r.results) == {1, 3, 9} for r in full)
    assert sim.epochs_trained <= 27 * 9 / 3, "ASHA must train far less than every trial fully"
    best = sim.final.best
    assert best is not None and best.fidelity == 9
    top_quality = max(quality(r.params) for r in sim.records.values())
    assert quality(best.params) >= top_quality - 0.1


def test_median_stopping_stops_bad_trials_early() -> None:
    spec = make_spec(
        max_trials=20, parallel=2, fidelity={"min": 1, "max": 6, "scheduler": "median"}
    )
    sim = simulate(spec, learning_curve)
    stopped = [r for r in sim.records.values() if r.state == TrialState.STOPPED]
    assert stopped and all(r.reason == "EarlyStopped" for r in stopped)
    assert all(len(r.intermediate) < 6 for r in stopped)
    assert sim.epochs_trained < 20 * 6
