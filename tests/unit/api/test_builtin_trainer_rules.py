"""The built-in trainer's rules apply to experiments that run it, and only to those."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from kubenas.api import ExperimentError, parse_experiment
from kubenas.api.builtin_trainer import (
    Dataset,
    Hyperparameters,
    parse_dataset,
    runs_builtin_trainer,
)
from kubenas.cli import main


def _document(**trial: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kubenas.io/v1alpha1",
        "kind": "NASExperiment",
        "metadata": {"name": "rules"},
        "spec": {
            "searchSpace": {"family": "nb201-cell"},
            "budget": {"maxTrials": 2},
            "trial": {"dataset": "digits", **trial},
        },
    }


def _problems(document: dict[str, Any]) -> list[str]:
    with pytest.raises(ExperimentError) as caught:
        parse_experiment(document)
    return caught.value.problems


def test_every_refusal_is_reported_at_once_naming_its_field() -> None:
    problems = _problems(
        _document(dataset="cifar10", hyperparameters={"batch_size": "big", "momentum": -1})
    )
    assert problems == [
        "spec.trial.dataset: must be digits, mnist1d, npz:PATH, idx:DIR or "
        "synthetic:CxHxW:CLASSES[:N], got 'cifar10'",
        "spec.trial.hyperparameters.batch_size: must be a number, got 'big'",
        "spec.trial.hyperparameters.momentum: must be >= 0, got -1",
    ]


def test_a_users_own_trainer_gets_any_dataset_and_hyperparameters() -> None:
    experiment = parse_experiment(
        _document(
            command=["python", "my_trainer.py"],
            dataset="cifar10:train",
            hyperparameters={"batch_size": "auto", "dropout": 0.1},
        )
    )
    assert experiment.spec.trial.hyperparameters["batch_size"] == "auto"


def test_valid_hyperparameters_of_the_builtin_trainer_pass() -> None:
    values = {"batch_size": 64, "learning_rate": 1, "optimizer": "adamw", "label_smoothing": 0.1}
    experiment = parse_experiment(_document(hyperparameters=values))
    assert Hyperparameters.from_mapping(experiment.spec.trial.hyperparameters) == Hyperparameters(
        batch_size=64, learning_rate=1.0, optimizer="adamw", label_smoothing=0.1
    )


@pytest.mark.parametrize(
    ("command", "builtin"),
    [
        (["python", "-m", "kubenas_trainer"], True),
        (["/opt/venv/bin/python3", "-m", "kubenas_trainer", "--device", "cuda"], True),
        (["python", "train.py"], False),
        (["kubenas_trainer.sh"], False),
    ],
)
def test_the_builtin_trainer_is_recognised_by_its_module(command: list[str], builtin: bool) -> None:
    assert runs_builtin_trainer(command) is builtin


def test_dataset_names_decode_into_what_the_trainer_loads() -> None:
    assert parse_dataset("npz:data/x.npz") == Dataset("npz", path="data/x.npz")
    assert parse_dataset("synthetic:2x50:4") == Dataset("synthetic", shape=(2, 50), classes=4)
    assert parse_dataset("synthetic:3x8x8:10:64").samples == 64


def test_validate_refuses_a_hyperparameter_of_the_wrong_type(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump(_document(hyperparameters={"batch_size": "big"})))
    assert main(["validate", str(path)]) == 2
    assert "spec.trial.hyperparameters.batch_size: must be a number, got 'big'" in (
        capsys.readouterr().err
    )
