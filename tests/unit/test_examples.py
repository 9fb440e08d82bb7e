"""Every example is a valid experiment whose first decisions can be made."""

from pathlib import Path

import pytest

from kubenas.api import load_experiment
from kubenas.engine import decide

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_loads_and_starts(path: Path) -> None:
    experiment = load_experiment(path)
    decisions = decide(experiment.spec, [], now=0.0)
    # A screened search starts with its one screen trial, a oneshot one with its supernet.
    one_first = experiment.spec.screening or experiment.spec.oneshot_method()
    starts = 1 if one_first else experiment.spec.budget.parallel_trials
    assert len(decisions.start) == starts
    assert experiment.spec.trial.command[:3] == ["python", "-m", "kubenas_trainer"]


def test_the_three_documented_examples_exist() -> None:
    assert {p.name for p in EXAMPLES} >= {"digits-cell.yaml", "mnist1d.yaml", "mnist-idx.yaml"}
