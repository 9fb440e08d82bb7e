"""Every file under invalid/ is refused with a message that names the offending field."""

from pathlib import Path

import pytest

from kubenas.api import ExperimentError, load_experiment
from kubenas.cli import main

INVALID = sorted((Path(__file__).parent / "invalid").glob("*.yaml"))


def _expected(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name} needs an '# expect:' header"
    return first.removeprefix("# expect: ")


def test_there_are_many_distinct_invalid_files() -> None:
    assert len(INVALID) >= 15


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_experiment_is_refused_naming_the_field(path: Path) -> None:
    with pytest.raises(ExperimentError) as caught:
        load_experiment(path)
    expected = _expected(path)
    assert any(problem.startswith(expected) for problem in caught.value.problems), (
        f"expected a problem starting with {expected!r}, got {caught.value.problems}"
    )


@pytest.mark.parametrize("path", INVALID[:3], ids=lambda p: p.stem)
def test_cli_exits_2_with_the_message_and_no_traceback(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert _expected(path) in err
    assert "Traceback" not in err


def test_several_problems_are_all_reported(tmp_path: Path) -> None:
    path = tmp_path / "many.yaml"
    path.write_text(
        "apiVersion: kubenas.io/v1alpha1\nkind: NASExperiment\nmetadata: {name: x}\n"
        "spec:\n  searchSpace: {family: nb201-cell}\n"
        "  budget: {maxTrials: 0, parallelTrials: 0}\n"
        "  trial: {dataset: digits, timeoutSeconds: 0}\n"
    )
    with pytest.raises(ExperimentError) as caught:
        load_experiment(path)
    problems = caught.value.problems
    assert "spec.budget.maxTrials: must be >= 1" in problems
    assert "spec.budget.parallelTrials: must be >= 1" in problems
    assert "spec.trial.timeoutSeconds: must be >= 1" in problems


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ExperimentError, match="cannot read"):
        load_experiment(tmp_path / "nope.yaml")
