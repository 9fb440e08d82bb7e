"""The screen stage in the engine: one screen trial first, then candidates guided by its scores."""

from __future__ import annotations

import pytest

from kubenas import transitions
from kubenas.api.experiment import ExperimentSpec
from kubenas.api.records import TrialRecord, TrialRole, TrialState
from kubenas.engine import FinishReason, decide, planner
from kubenas.runtime.simulated import simulate, trial_name
from kubenas.screening import screened_candidates, screening_summary, spearman
from kubenas.space import nb201_cell_string
from kubenas.strategies import STRATEGY_NAMES
from kubenas.strategies.prior import build_prior, rank_scores

from .conftest import learning_curve, quality


def _spec(strategy: str = "random", **screening: object) -> ExperimentSpec:
    return ExperimentSpec.model_validate(
        {
            "searchSpace": {"family": "nb201-cell"},
            "strategy": {"name": strategy},
            "seed": 3,
            "budget": {"maxTrials": 12, "parallelTrials": 2},
            "screening": {"ensemble": ["synflow", "params"], "candidates": 300, **screening},
            "trial": {"dataset": "digits"},
        }
    )


def _screen(spec: ExperimentSpec, state: TrialState = TrialState.SUCCEEDED) -> TrialRecord:
    """A screen whose synflow follows the architectures' quality and params is noise."""
    candidates, _ = screened_candidates(spec, planner(spec).space)
    record = TrialRecord(
        name=trial_name(0), index=0, role=TrialRole.SCREEN, params={}, key="screen", state=state
    )
    if state is not TrialState.SUCCEEDED:
        return record
    scores = {
        "synflow": [quality(c) for c in candidates],
        "params": [float(hash(nb201_cell_string(c)) % 97) for c in candidates],
    }
    return transitions.screened(record, scores, metrics={"screened": 300.0}, now=5.0)


def test_the_screen_trial_comes_first_and_alone() -> None:
    spec = _spec()
    first = decide(spec, [], now=0.0)
    assert [s.role for s in first.start] == [TrialRole.SCREEN]
    waiting = decide(spec, [_screen(spec, TrialState.RUNNING)], now=1.0)
    assert not waiting.start and not waiting.finished


def test_a_failed_screen_ends_the_search_saying_why() -> None:
    spec = _spec()
    failed = transitions.failed(
        _screen(spec, TrialState.RUNNING), "Crashed", "exit code 2\nx: error: no data", 3.0
    )
    decisions = decide(spec, [failed], now=4.0)
    assert decisions.finished and decisions.reason is FinishReason.SCREENING_FAILED
    assert not decisions.succeeded and "no data" in decisions.message


def test_a_screen_past_its_timeout_is_stopped_as_failed() -> None:
    spec = _spec()
    running = transitions.started(_screen(spec, TrialState.PENDING), at=0.0)
    decisions = decide(spec, [running], now=spec.trial.timeout_seconds + 1.0)
    assert [(s.trial, s.reason, s.failed) for s in decisions.stop] == [
        (running.name, "Timeout", True)
    ]


def test_warmup_trains_the_best_screened_first() -> None:
    spec = _spec(warmup=4)
    screen = _screen(spec)
    candidates, _ = screened_candidates(spec, planner(spec).space)
    by_quality = sorted(candidates, key=quality, reverse=True)
    sim = simulate(spec, learning_curve, initial=[screen])
    trained = sorted(
        (r for r in sim.records.values() if r.role is TrialRole.CANDIDATE), key=lambda r: r.index
    )
    assert len(trained) == spec.budget.max_trials  # the screen is not counted
    # synflow follows quality, params is noise: the ensemble's best are among the best quality
    top = {planner(spec).space.key(c) for c in by_quality[:60]}
    assert all(r.key in top for r in trained[:4])
    assert trained[0].index == 1


@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
def test_every_strategy_runs_with_a_screen_and_never_repeats(strategy: str) -> None:
    spec = _spec(strategy)
    sim = simulate(spec, learning_curve, initial=[_screen(spec)])
    keys = [r.key for r in sim.records.values() if r.role is TrialRole.CANDIDATE]
    assert len(keys) == 12 and len(set(keys)) == 12
    again = simulate(spec, learning_curve, initial=[_screen(spec)])
    assert keys == [r.key for r in again.records.values() if r.role is TrialRole.CANDIDATE]


def test_screening_helps_random_search_on_a_proxy_that_tells_the_truth() -> None:
    def best_quality(spec: ExperimentSpec, screened: bool) -> float:
        initial = [_screen(spec)] if screened else []
        best = simulate(spec, learning_curve, initial=initial).final.best
        assert best is not None
        return quality(best.params)

    with_screen, without = [], []
    for seed in range(5):
        spec = _spec(warmup=2).model_copy(update={"seed": seed})
        plain = spec.model_copy(update={"screening": None})
        with_screen.append(best_quality(spec, screened=True))
        without.append(best_quality(plain, screened=False))
    assert sum(with_screen) > sum(without)


def test_ranks_tie_at_their_mean_and_undefined_scores_rank_lowest() -> None:
    assert rank_scores([3.0, None, 1.0, 3.0]) == [5 / 6, 0.0, 1 / 3, 5 / 6]
    prior = build_prior(
        [{"a": 1}, {"a": 2}, {"a": 3}],
        ["k1", "k2", "k3"],
        {"x": [1.0, 2.0, 3.0], "y": [2.0, 3.0, None]},
        warmup=1,
    )
    assert prior.ranked[0] == {"a": 2}  # best on average over both proxies
    assert prior.score("unscreened") == 0.5


def test_summary_reports_screening_and_whether_the_proxy_helped() -> None:
    spec = _spec()
    sim = simulate(spec, learning_curve, initial=[_screen(spec)])
    summary = screening_summary(spec, planner(spec).space, list(sim.records.values()))
    assert summary is not None
    assert summary["screened"] == 300 and summary["state"] == "Succeeded"
    assert summary["trainedScreened"] >= 1
    assert set(summary["spearman"]) == {"synflow", "params", "ensemble"}


def test_spearman_of_monotone_and_reversed_orders() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2], [1, 2]) is None


def test_the_simulator_wants_the_screen_given_not_run() -> None:
    with pytest.raises(ValueError, match="no screen trial"):
        simulate(_spec(), learning_curve)
