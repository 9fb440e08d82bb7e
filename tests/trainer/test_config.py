"""Settings: flags override environment variables; hyper-parameters are checked up front."""

import json
from pathlib import Path

import pytest

from kubenas.api.builtin_trainer import DEFAULT_EPOCHS, Hyperparameters
from kubenas_trainer.config import ConfigError, TrialConfig
from kubenas_trainer.settings import resolve_settings

BASE_ENV = {
    "KUBENAS_FAMILY": "chain",
    "KUBENAS_ARCHITECTURE": '{"stem_channels": 8}',
    "KUBENAS_DATASET": "digits",
    "KUBENAS_EPOCHS": "3",
}


def test_flags_override_environment_and_defaults_fill_the_rest() -> None:
    config = TrialConfig.from_settings(
        resolve_settings(
            ["--epochs", "9", "--hparams", '{"batch_size": 16}'],
            {**BASE_ENV, "KUBENAS_SEED": "4", "KUBENAS_HPARAMS": '{"batch_size": 512}'},
        )
    )
    assert (config.epochs, config.schedule_epochs, config.seed) == (9, 9, 4)
    assert config.hparams == Hyperparameters(batch_size=16)
    assert config.device == "auto" and config.resume_from is None


def test_architecture_may_come_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "arch.json").write_text(json.dumps({"stem_channels": 4}))
    values = resolve_settings(["--architecture", f"@{tmp_path / 'arch.json'}"], BASE_ENV)
    assert TrialConfig.from_settings(values).architecture == {"stem_channels": 4}


@pytest.mark.parametrize(
    "override,message",
    [
        ({"KUBENAS_FAMILY": "vit"}, "family must be one of"),
        ({"KUBENAS_EPOCHS": "three"}, "epochs must be an integer"),
        ({"KUBENAS_ARCHITECTURE": "[1, 2]"}, "architecture must be a JSON object"),
        ({"KUBENAS_HPARAMS": '{"lr": 0.1}'}, "hparam lr is not a hyper-parameter"),
        ({"KUBENAS_HPARAMS": '{"optimizer": "lion"}'}, "optimizer must be one of sgd, adamw"),
        (
            {"KUBENAS_HPARAMS": '{"batch_size": "big"}'},
            "hparam batch_size must be a number, got 'big'",
        ),
        ({"KUBENAS_HPARAMS": '{"batch_size": 8.5}'}, "batch_size must be a whole number"),
        ({"KUBENAS_HPARAMS": '{"label_smoothing": 1}'}, "label_smoothing must be < 1"),
        ({"KUBENAS_DATASET": "cifar10"}, "dataset must be digits, mnist1d"),
        ({"KUBENAS_DATASET": "digits:extra"}, "dataset must be digits, mnist1d"),
        ({"KUBENAS_DEVICE": "tpu"}, "device must be"),
        ({"KUBENAS_COSTS": "latency"}, r"costs: unknown \['latency'\]"),
        ({"KUBENAS_CONSTRAINTS": '{"metric": "params"}'}, "constraints must be a JSON list"),
        ({"KUBENAS_CONSTRAINTS": '[{"metric": "params"}]'}, "set min, max or both"),
        ({"KUBENAS_CONSTRAINTS": '[{"metric": "params", "min": 2, "max": 1}]'}, "must be <= max"),
    ],
)
def test_bad_settings_are_refused_with_a_reason(override: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrialConfig.from_settings(resolve_settings([], {**BASE_ENV, **override}))


def test_epochs_default_to_the_contract_default_when_unset() -> None:
    config = TrialConfig.from_settings(resolve_settings([], {**BASE_ENV, "KUBENAS_EPOCHS": ""}))
    assert config.epochs == config.schedule_epochs == DEFAULT_EPOCHS


def test_a_whole_number_given_for_a_float_hyperparameter_becomes_a_float() -> None:
    values = {**BASE_ENV, "KUBENAS_HPARAMS": '{"learning_rate": 1, "batch_size": 8}'}
    hparams = TrialConfig.from_settings(resolve_settings([], values)).hparams
    assert hparams == Hyperparameters(learning_rate=1.0, batch_size=8)
    assert isinstance(hparams.learning_rate, float) and isinstance(hparams.batch_size, int)


def test_costs_and_constraints_are_read_as_the_api_declares_them() -> None:
    env = {
        **BASE_ENV,
        "KUBENAS_COSTS": "latency_ms,peak_memory_mb",
        "KUBENAS_CONSTRAINTS": json.dumps(
            [{"metric": "latency_ms", "max": 5}, {"metric": "params", "min": 10}]
        ),
    }
    config = TrialConfig.from_settings(resolve_settings([], env))
    assert config.costs == ("latency_ms", "peak_memory_mb")
    assert [(c.metric, c.min, c.max) for c in config.constraints] == [
        ("latency_ms", None, 5.0),
        ("params", 10.0, None),
    ]
