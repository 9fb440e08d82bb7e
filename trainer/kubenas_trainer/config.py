"""Typed, validated configuration of one trial, built from the resolved contract settings."""

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from kubenas.api.builtin_trainer import (
    DEFAULT_EPOCHS,
    HyperparameterError,
    Hyperparameters,
    parse_dataset,
)
from kubenas.api.experiment import Constraint
from kubenas.api.vocabulary import TIMED_COST_METRICS, TRAINER_FAMILIES


class ConfigError(ValueError):
    """A setting that can never work; the trainer exits with status 2 and says which."""


def parse_hyperparameters(text: str) -> Hyperparameters:
    """Decode ``KUBENAS_HPARAMS``, checked by the same rules ``kubenas validate`` applies."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"hparams is not valid JSON: {error}") from error
    if not isinstance(raw, dict):
        raise ConfigError("hparams must be a JSON object")
    try:
        return Hyperparameters.from_mapping(raw)
    except HyperparameterError as error:
        raise ConfigError(str(error)) from error


@dataclass(frozen=True)
class TrialConfig:
    """Everything one trial needs, validated before any data is loaded or model built."""

    family: str
    architecture: dict[str, Any]
    dataset: str
    epochs: int
    schedule_epochs: int
    hparams: Hyperparameters
    seed: int
    device: Literal["auto", "cpu", "cuda"]
    compile: bool
    data_dir: Path
    resume_from: Path | None
    checkpoint_dir: Path | None
    costs: tuple[str, ...] = ()
    constraints: tuple[Constraint, ...] = ()
    train_on: Literal["train", "train+val"] = "train"
    export: bool = False

    @classmethod
    def from_settings(cls, values: Mapping[str, str | None]) -> "TrialConfig":
        family = _required(values, "family")
        if family not in TRAINER_FAMILIES:
            raise ConfigError(f"family must be one of {TRAINER_FAMILIES}, got {family!r}")
        epochs = _integer(values, "epochs", minimum=0) if values["epochs"] else DEFAULT_EPOCHS
        dataset = _required(values, "dataset")
        try:
            parse_dataset(dataset)
        except ValueError as error:
            raise ConfigError(f"dataset {error}") from error
        device = values["device"] or "auto"
        if device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device must be auto, cpu or cuda, got {device!r}")
        schedule = values["schedule_epochs"]
        train_on = values.get("train_on") or "train"
        if train_on not in ("train", "train+val"):
            raise ConfigError(f"train_on must be train or train+val, got {train_on!r}")
        export = _flag(values.get("export"))
        if export and not values["checkpoint_dir"]:
            raise ConfigError("export needs checkpoint_dir: the export is written beside it")
        return cls(
            family=family,
            architecture=_architecture(_required(values, "architecture")),
            dataset=dataset,
            epochs=epochs,
            schedule_epochs=_integer(values, "schedule_epochs", minimum=1) if schedule else epochs,
            hparams=parse_hyperparameters(values["hparams"] or "{}"),
            seed=_integer(values, "seed", minimum=0),
            device=device,  # type: ignore[arg-type]  # checked just above
            compile=_flag(values["compile"]),
            data_dir=Path(values["data_dir"] or default_data_dir()),
            resume_from=_path(values["resume_from"]),
            checkpoint_dir=_path(values["checkpoint_dir"]),
            costs=parse_costs(values.get("costs") or ""),
            constraints=parse_constraints(values.get("constraints") or "[]"),
            train_on=train_on,  # type: ignore[arg-type]  # checked just above
            export=export,
        )


def parse_costs(text: str) -> tuple[str, ...]:
    """``KUBENAS_COSTS``: the timed cost metrics to measure before training."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in TIMED_COST_METRICS]
    if unknown:
        raise ConfigError(f"costs: unknown {unknown}; want some of {', '.join(TIMED_COST_METRICS)}")
    return names


def parse_constraints(text: str) -> tuple[Constraint, ...]:
    """``KUBENAS_CONSTRAINTS``: the objective's constraints, checked by the API's own model."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"constraints is not valid JSON: {error}") from error
    if not isinstance(raw, list):
        raise ConfigError("constraints must be a JSON list of {metric, min, max}")
    try:
        return tuple(Constraint.model_validate(item) for item in raw)
    except ValueError as error:
        raise ConfigError(f"constraints: {error}") from error


def default_data_dir() -> Path:
    """The cache folder for generated data when KUBENAS_DATA_DIR is unset."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kubenas" / "data"


def _required(values: Mapping[str, str | None], name: str) -> str:
    value = values[name]
    if not value:
        raise ConfigError(
            f"{name} is required (--{name.replace('_', '-')} or KUBENAS_{name.upper()})"
        )
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


def _flag(text: str | None) -> bool:
    return (text or "0").lower() in ("1", "true", "yes")


def _path(text: str | None) -> Path | None:
    return Path(text) if text else None
