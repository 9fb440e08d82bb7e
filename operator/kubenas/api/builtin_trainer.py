"""What the built-in trainer (``python -m kubenas_trainer``) accepts, declared once.

The trainer parses its settings with these definitions and the API models check an experiment
that runs the built-in trainer with the same ones, so ``kubenas validate`` refuses what a trial
would refuse. Pure Python on purpose: the trainer imports it without the control plane.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal, cast

from kubenas.api.vocabulary import COST_METRICS

BUILTIN_TRAINER_MODULE = "kubenas_trainer"
BUILTIN_TRAINER_COMMAND = ("python", "-m", BUILTIN_TRAINER_MODULE)
# Epochs a trial trains when the experiment has no ``fidelity`` block (the contract's default).
DEFAULT_EPOCHS = 5
# The folder beside a trial's checkpoint where KUBENAS_EXPORT writes the trained model, and
# the file each export format is written to there.
EXPORT_DIR = "export"
EXPORT_FILES = {"torchscript": "model.torchscript.pt", "onnx": "model.onnx"}
# The final metrics the built-in trainer reports, so an objective or a constraint on any other
# name is refused before a trial runs rather than found missing after every one.
BUILTIN_TRAINER_METRICS = (
    "val_accuracy",
    "val_loss",
    "test_accuracy",
    "test_loss",
    "epochs",
    "train_seconds",
    *COST_METRICS,
)


def runs_builtin_trainer(command: list[str] | tuple[str, ...]) -> bool:
    """True for a trial command that runs the built-in trainer, e.g. ``python -m kubenas_trainer``.

    The CRD's CEL rules use the same test: ``'kubenas_trainer' in self.command``.
    """
    return BUILTIN_TRAINER_MODULE in command


# -- hyper-parameters --------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """The values one hyper-parameter accepts besides its type (that of its default)."""

    at_least: float | None = None
    above: float | None = None
    below: float | None = None
    choices: tuple[str, ...] = ()

    def problem(self, value: Any, kind: type) -> str | None:
        """Why ``value`` is refused, worded to follow the parameter's name; None when fine."""
        if kind is str:
            if value not in self.choices:
                return f"must be one of {', '.join(self.choices)}, got {value!r}"
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"must be a number, got {value!r}"
        if kind is int and not isinstance(value, int):
            return f"must be a whole number, got {value!r}"
        if self.at_least is not None and value < self.at_least:
            return f"must be >= {self.at_least:g}, got {value!r}"
        if self.above is not None and value <= self.above:
            return f"must be > {self.above:g}, got {value!r}"
        if self.below is not None and value >= self.below:
            return f"must be < {self.below:g}, got {value!r}"
        return None


def _limits(**limits: Any) -> dict[str, Limits]:
    return {"limits": Limits(**limits)}


class HyperparameterError(ValueError):
    """Hyper-parameters the built-in trainer refuses; ``problems`` are (name, reason) pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"hparam {name} {reason}" for name, reason in problems))


@dataclass(frozen=True)
class Hyperparameters:
    """The built-in trainer's training hyper-parameters (``spec.trial.hyperparameters``).

    The defaults train a small candidate on ``digits`` to ~98% test accuracy in a few epochs
    on one CPU thread, and are a sane start elsewhere.
    """

    batch_size: int = field(default=32, metadata=_limits(at_least=1))
    learning_rate: float = field(default=0.05, metadata=_limits(above=0))
    weight_decay: float = field(default=5e-4, metadata=_limits(at_least=0))
    momentum: float = field(default=0.9, metadata=_limits(at_least=0))
    optimizer: Literal["sgd", "adamw"] = field(
        default="sgd", metadata=_limits(choices=("sgd", "adamw"))
    )
    label_smoothing: float = field(default=0.0, metadata=_limits(at_least=0, below=1))
    warmup_epochs: float = field(default=0.5, metadata=_limits(at_least=0))

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def problems(cls, values: Mapping[str, Any]) -> list[tuple[str, str]]:
        """Every (name, reason) the trainer would refuse, in the order ``values`` lists them."""
        declared = {f.name: f for f in fields(cls)}
        found: list[tuple[str, str]] = []
        for name, value in values.items():
            spec = declared.get(name)
            if spec is None:
                found.append(
                    (
                        name,
                        f"is not a hyper-parameter of {BUILTIN_TRAINER_MODULE} "
                        f"(known: {', '.join(declared)})",
                    )
                )
                continue
            problem = spec.metadata["limits"].problem(value, type(spec.default))
            if problem is not None:
                found.append((name, problem))
        return found

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Hyperparameters:
        """Checked and typed (a whole number given for a float becomes a float)."""
        problems = cls.problems(values)
        if problems:
            raise HyperparameterError(problems)
        floats = {f.name for f in fields(cls) if isinstance(f.default, float)}
        typed: dict[str, Any] = {n: float(v) if n in floats else v for n, v in values.items()}
        return cls(**typed)


# -- datasets ----------------------------------------------------------------------------------

DATASET_KINDS = ("digits", "mnist1d", "npz", "idx", "synthetic")
DATASET_FORMS = "digits, mnist1d, npz:PATH, idx:DIR or synthetic:CxHxW:CLASSES[:N]"
SYNTHETIC_DEFAULT_SAMPLES = 1000
_COUNT = "[1-9][0-9]*"
# RE2-compatible, so the CRD's CEL rule holds the very same pattern (a test compares them).
DATASET_PATTERN = (
    rf"^(digits|mnist1d|(npz|idx):.+|synthetic:{_COUNT}(x{_COUNT}){{1,2}}:{_COUNT}(:{_COUNT})?)$"
)

DatasetKind = Literal["digits", "mnist1d", "npz", "idx", "synthetic"]


@dataclass(frozen=True)
class Dataset:
    """A decoded dataset name: a file source's path, or a synthetic set's shape and size."""

    kind: DatasetKind
    path: str = ""
    shape: tuple[int, ...] = ()
    classes: int = 0
    samples: int = SYNTHETIC_DEFAULT_SAMPLES


def parse_dataset(text: str) -> Dataset:
    """Decode a dataset name; raises ValueError for one the built-in trainer cannot load."""
    if re.fullmatch(DATASET_PATTERN, text) is None:
        raise ValueError(f"must be {DATASET_FORMS}, got {text!r}")
    name, _, argument = text.partition(":")
    kind = cast(DatasetKind, name)  # the pattern admits only these kinds
    if kind in ("digits", "mnist1d"):
        return Dataset(kind)
    if kind in ("npz", "idx"):
        return Dataset(kind, path=argument)
    shape, classes, *samples = argument.split(":")
    return Dataset(
        "synthetic",
        shape=tuple(int(size) for size in shape.split("x")),
        classes=int(classes),
        samples=int(samples[0]) if samples else SYNTHETIC_DEFAULT_SAMPLES,
    )
