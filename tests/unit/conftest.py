"""Shared helpers for the search-core tests: small specs and synthetic learning curves."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import pytest

from kubenas.api.experiment import ExperimentSpec
from kubenas.space import Assignment

SpecFactory = Callable[..., ExperimentSpec]


def make_spec(
    strategy: str = "random",
    *,
    family: str = "nb201-cell",
    max_trials: int = 30,
    parallel: int = 1,
    seed: int = 0,
    fidelity: dict[str, Any] | None = None,
    space: dict[str, Any] | None = None,
    **budget: Any,
) -> ExperimentSpec:
    doc: dict[str, Any] = {
        "searchSpace": {"family": family, **(space or {})},
        "strategy": {"name": strategy},
        "seed": seed,
        "budget": {"maxTrials": max_trials, "parallelTrials": parallel, **budget},
        "trial": {"dataset": "digits"},
    }
    if fidelity is not None:
        doc["fidelity"] = fidelity
    return ExperimentSpec.model_validate(doc)


def quality(params: Assignment) -> float:
    """A deterministic pseudo-accuracy of an architecture in [0.5, 0.95]."""
    digest = hashlib.sha256(repr(sorted(params.items())).encode()).digest()
    return 0.5 + 0.45 * digest[0] / 255


def learning_curve(params: Assignment, epoch: int) -> float:
    """Accuracy rises with epochs towards the architecture's quality; ranks are kept."""
    return quality(params) * (1 - 0.5**epoch)


@pytest.fixture
def spec_factory() -> SpecFactory:
    return make_spec
