"""The oneshot benchmark's arithmetic: a search's cost curve, what it reached at a given cost,
and what it cost to reach a given objective (the stage trials paid for first)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kubenas.api.experiment import ExperimentSpec
from kubenas.api.records import TrialRecord, TrialRole, TrialState
from kubenas.bench.oneshot import multi_trial_variant, search_run
from kubenas.cli import main


def _trial(
    index: int, seconds: float, end: float, value: float | None, **kw: object
) -> TrialRecord:
    state = TrialState.SUCCEEDED if value is not None else TrialState.FAILED
    metrics = {} if value is None else {"val_accuracy": value, "test_accuracy": value - 0.01}
    return TrialRecord(
        name=f"t{index}",
        index=index,
        params={},
        key=f"k{index}",
        state=state,
        metrics=metrics,
        started_at=end - seconds,
        finished_at=end,
        **kw,
    )


def test_cost_curve_counts_the_supernet_first_and_follows_the_best_so_far() -> None:
    records = [
        _trial(0, 30.0, 30.0, None, role=TrialRole.SUPERNET),
        _trial(2, 10.0, 50.0, 0.95),
        _trial(1, 10.0, 40.0, 0.90),
        _trial(3, 5.0, 55.0, None),
        _trial(4, 10.0, 70.0, 0.93),
    ]
    run = search_run("oneshot", records, "val_accuracy", 1.0)
    assert run.trainer_seconds == 65.0
    assert run.best_objective == 0.95 and run.best_test == 0.94
    assert run.at_cost(40.0) == (0.90, 0.89)
    assert run.at_cost(39.0) == (None, None)
    assert run.cost_to_reach(0.95, 1.0) == 50.0
    assert run.cost_to_reach(0.99, 1.0) is None


def test_the_multi_trial_variant_changes_only_strategy_and_budget() -> None:
    doc: dict[str, Any] = {
        "apiVersion": "kubenas.io/v1alpha1",
        "kind": "NASExperiment",
        "metadata": {"name": "oneshot-digits"},
        "spec": {
            "searchSpace": {"family": "nb201-cell", "stemChannels": [8], "cellsPerStage": [1]},
            "strategy": {"name": "oneshot", "topK": 3},
            "budget": {"maxTrials": 3, "parallelTrials": 2},
            "fidelity": {"max": 5},
            "trial": {"dataset": "digits"},
        },
    }
    variant = multi_trial_variant(doc, "local-search", 20)
    assert variant["metadata"]["name"] == "oneshot-digits-local-search"
    assert variant["spec"]["strategy"] == {"name": "local-search"}
    assert variant["spec"]["budget"] == {"maxTrials": 20, "parallelTrials": 2}
    assert variant["spec"]["fidelity"] == doc["spec"]["fidelity"]
    ExperimentSpec.model_validate(variant["spec"])
    assert doc["spec"]["strategy"]["name"] == "oneshot", "the original is left as it was"


def test_an_experiment_of_another_strategy_is_refused_before_any_training(
    capsys: pytest.CaptureFixture[str],
) -> None:
    example = Path(__file__).parents[2] / "examples" / "digits-cell.yaml"
    assert main(["bench", "oneshot", str(example), "--architectures", "0"]) == 2
    assert "spec.strategy.name" in capsys.readouterr().err
