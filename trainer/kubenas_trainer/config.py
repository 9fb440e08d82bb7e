"""Typed, validated configuration of one trial, built from the resolved contract settings."""

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

FAMILIES = ("nb201-cell", "chain")


class ConfigError(ValueError):
    """A setting that can never work; the trainer exits with status 2 and says which."""


@dataclass(frozen=True)
class HParams:
    """Training hyper-parameters. The defaults train a small candidate on ``digits`` to ~98% test
    accuracy in a few epochs on one CPU thread, and are a sane start elsewhere."""

    batch_size: int = 32
    learning_rate: float = 0.05
    weight_decay: float = 5e-4
    momentum: float = 0.9
    optimizer: Literal["sgd", "adamw"] = "sgd"
    label_smoothing: float = 0.0
    warmup_epochs: float = 0.5

    @classmethod
    def from_json(cls, text: str) -> "HParams":
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError(f"hparams is not valid JSON: {error}") from error
        if not isinstance(raw, dict):
            raise ConfigError("hparams must be a JSON object")
        known = {field.name: field.type for field in fields(cls)}
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise ConfigError(f"unknown hparams {unknown}; known: {sorted(known)}")
        values: dict[str, Any] = {}
        for name, value in raw.items():
            default = getattr(cls, name)
            if isinstance(default, str):
                values[name] = str(value)
            elif isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"hparam {name} must be a number, got {value!r}")
            else:
                values[name] = type(default)(value)
        hparams = cls(**values)
        hparams.validate()
        return hparams

    def validate(self) -> None:
        if self.optimizer not in ("sgd", "adamw"):
            raise ConfigError(f"hparam optimizer must be sgd or adamw, got {self.optimizer!r}")
        if self.batch_size < 1 or self.learning_rate <= 0:
            raise ConfigError("hparams batch_size and learning_rate must be positive")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError("hparam label_smoothing must be in [0, 1)")
        if self.weight_decay < 0 or self.momentum < 0 or self.warmup_epochs < 0:
            raise ConfigError("hparams weight_decay, momentum and warmup_epochs must be >= 0")


@dataclass(frozen=True)
class TrialConfig:
    """Everything one trial needs, validated before any data is loaded or model built."""

    family: str
    architecture: dict[str, Any]
    dataset: str
    epochs: int
    schedule_epochs: int
    hparams: HParams
    seed: int
    device: Literal["auto", "cpu", "cuda"]
    compile: bool
    data_dir: Path
    resume_from: Path | None
    checkpoint_dir: Path | None

    @classmethod
    def from_settings(cls, values: Mapping[str, str | None]) -> "TrialConfig":
        family = _required(values, "family")
        if family not in FAMILIES:
            raise ConfigError(f"family must be one of {FAMILIES}, got {family!r}")
        epochs = _integer(values, "epochs", minimum=0)
        device = values["device"] or "auto"
        if device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device must be auto, cpu or cuda, got {device!r}")
        schedule = values["schedule_epochs"]
        return cls(
            family=family,
            architecture=_architecture(_required(values, "architecture")),
            dataset=_required(values, "dataset"),
            epochs=epochs,
            schedule_epochs=_integer(values, "schedule_epochs", minimum=1) if schedule else epochs,
            hparams=HParams.from_json(values["hparams"] or "{}"),
            seed=_integer(values, "seed", minimum=0),
            device=device,  # type: ignore[arg-type]  # checked just above
            compile=(values["compile"] or "0").lower() in ("1", "true", "yes"),
            data_dir=Path(values["data_dir"] or default_data_dir()),
            resume_from=_path(values["resume_from"]),
            checkpoint_dir=_path(values["checkpoint_dir"]),
        )


def default_data_dir() -> Path:
    """The cache folder for generated data when KUBENAS_DATA_DIR is unset."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kubenas" / "data"


def _required(values: Mapping[str, str | None], name: str) -> str:
    value = values[name]
    if not value:
        raise ConfigError(f"{name} is required (--{name.replace('_', '-')} or KUBENAS_"
                          f"{name.upper()})")
    return value


def _integer(values: Mapping[str, str | None], name: str, minimum: int) -> int:
    text = _required(values, name)
    try:
        number = int(text)
    except ValueError as error:
        raise ConfigError(f"{name} must be an integer, got {text!r}") from error
    if number < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {number}")
    return number


def _architecture(text: str) -> dict[str, Any]:
    """Decode the architecture JSON, read from a file when given as ``@path``."""
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text()
        except OSError as error:
            raise ConfigError(f"cannot read architecture file: {error}") from error
    try:
        decoded = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"architecture is not valid JSON: {error}") from error
    if not isinstance(decoded, dict):
        raise ConfigError("architecture must be a JSON object")
    return decoded


def _path(text: str | None) -> Path | None:
    return Path(text) if text else None
