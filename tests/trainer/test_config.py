"""Settings: flags override environment variables; hyper-parameters are checked up front."""

import json
from pathlib import Path

import pytest

from kubenas_trainer.config import ConfigError, HParams, TrialConfig
from kubenas_trainer.settings import resolve_settings

BASE_ENV = {"KUBENAS_FAMILY": "chain", "KUBENAS_ARCHITECTURE": '{"stem_channels": 8}',
            "KUBENAS_DATASET": "digits", "KUBENAS_EPOCHS": "3"}


def test_flags_override_environment_and_defaults_fill_the_rest() -> None:
    config = TrialConfig.from_settings(resolve_settings(
        ["--epochs", "9", "--hparams", '{"batch_size": 16}'],
        {**BASE_ENV, "KUBENAS_SEED": "4", "KUBENAS_HPARAMS": '{"batch_size": 512}'},
    ))
    assert (config.epochs, config.schedule_epochs, config.seed) == (9, 9, 4)
    assert config.hparams == HParams(batch_size=16)
    assert config.device == "auto" and config.resume_from is None


def test_architecture_may_come_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "arch.json").write_text(json.dumps({"stem_channels": 4}))
    values = resolve_settings(["--architecture", f"@{tmp_path / 'arch.json'}"], BASE_ENV)
    assert TrialConfig.from_settings(values).architecture == {"stem_channels": 4}


@pytest.mark.parametrize("override,message", [
    ({"KUBENAS_FAMILY": "vit"}, "family must be one of"),
    ({"KUBENAS_EPOCHS": ""}, "epochs is required"),
    ({"KUBENAS_EPOCHS": "three"}, "epochs must be an integer"),
    ({"KUBENAS_ARCHITECTURE": "[1, 2]"}, "architecture must be a JSON object"),
    ({"KUBENAS_HPARAMS": '{"lr": 0.1}'}, "unknown hparams"),
    ({"KUBENAS_HPARAMS": '{"optimizer": "lion"}'}, "optimizer must be sgd or adamw"),
    ({"KUBENAS_HPARAMS": '{"batch_size": "big"}'}, "batch_size must be a number"),
    ({"KUBENAS_DEVICE": "tpu"}, "device must be"),
])
def test_bad_settings_are_refused_with_a_reason(override: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrialConfig.from_settings(resolve_settings([], {**BASE_ENV, **override}))
