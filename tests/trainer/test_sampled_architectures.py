"""Whatever the API accepts, the trainer builds: architectures sampled by the control plane's own
search spaces, from every family and setting, each run forward and backward on a tiny batch."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest

from kubenas.api import parse_experiment
from kubenas.api.vocabulary import CHAIN_EXPANSIONS, CHAIN_KERNEL_SIZES, NB201_OPERATIONS
from kubenas.space import Assignment, SearchSpace, build_space

torch = pytest.importorskip("torch")

from kubenas_trainer.models import build_model  # noqa: E402

pytestmark = pytest.mark.trainer

ALL_CHAIN_OPERATIONS = [
    "identity",
    *(f"{kind}{k}x{k}" for kind in ("conv", "sepconv") for k in CHAIN_KERNEL_SIZES),
    *(f"mbconv{k}x{k}_e{e}" for k in CHAIN_KERNEL_SIZES for e in CHAIN_EXPANSIONS),
]
# Each space with how many architectures to sample from it: enough to meet every operation,
# few enough to stay within seconds on a busy CPU.
SPACES: dict[str, tuple[int, dict[str, Any]]] = {
    "nb201-every-op": (
        10,
        {"family": "nb201-cell", "stemChannels": [1, 3], "cellsPerStage": [1, 3]},
    ),
    "nb201-defaults": (2, {"family": "nb201-cell", "stemChannels": [2]}),
    "chain-deepest-widest-space": (
        12,
        {
            "family": "chain",
            "stemChannels": 1,
            "stages": 6,
            "depth": {"min": 0, "max": 16},
            "widths": [[1, 2]] * 6,
            "operations": ALL_CHAIN_OPERATIONS,
        },
    ),
    "chain-single-block": (
        6,
        {
            "family": "chain",
            "stemChannels": 3,
            "stages": 1,
            "depth": {"min": 1, "max": 1},
            "widths": [[5]],
            "operations": ALL_CHAIN_OPERATIONS,
        },
    ),
    "chain-defaults": (4, {"family": "chain", "stemChannels": 2, "widths": [[2], [3], [4]]}),
}
INPUTS = [(1, 5), (2, 3, 3), (1, 1, 1)]  # a 1-D sequence, a 2-D image, a single pixel


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny tensors: more threads only add overhead (20x slower on two busy cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _space(settings: dict[str, Any]) -> SearchSpace:
    document = {
        "apiVersion": "kubenas.io/v1alpha1",
        "kind": "NASExperiment",
        "metadata": {"name": "sampled"},
        "spec": {
            "searchSpace": settings,
            "budget": {"maxTrials": 1},
            "trial": {"dataset": "digits"},
        },
    }
    return build_space(parse_experiment(document).spec.search_space)


def _assignments(space: SearchSpace, count: int, rng: random.Random) -> list[Assignment]:
    """Random samples, plus for a chain every stage at its shallowest and at its deepest."""
    samples = [space.sample(rng) for _ in range(count)]
    depths = [p for p in space.params if p.name.endswith("_depth")]
    for extreme in ("low", "high"):
        if depths:
            forced = {p.name: getattr(p, extreme) for p in depths}
            samples.append(space.complete(forced, rng))
    return samples


def _chain_ops(architecture: dict[str, Any]) -> set[str]:
    return {op for stage in architecture["stages"] for op in stage["blocks"]}


@pytest.mark.parametrize("name", SPACES)
def test_sampled_architectures_build_and_train_in_1d_and_2d(name: str) -> None:
    count, settings = SPACES[name]
    space = _space(settings)
    rng = random.Random(7)
    torch.manual_seed(0)
    seen_ops: set[str] = set()
    depths: set[int] = set()
    for index, assignment in enumerate(_assignments(space, count, rng)):
        architecture = space.to_architecture(space.active(assignment))
        if space.family == "chain":
            seen_ops |= _chain_ops(architecture)
            depths |= {len(stage["blocks"]) for stage in architecture["stages"]}
        else:
            seen_ops |= {
                edge.split("~")[0]
                for edge in architecture["cell"].split("|")
                if edge and edge != "+"
            }
        shape = INPUTS[index % len(INPUTS)]
        model = build_model(space.family, architecture, shape, num_classes=3)
        logits = model(torch.randn(2, *shape))
        assert logits.shape == (2, 3), architecture
        logits.sum().backward()
    if name == "nb201-every-op":
        assert seen_ops == set(NB201_OPERATIONS)
    if name == "chain-deepest-widest-space":
        assert seen_ops == set(ALL_CHAIN_OPERATIONS)
        assert {0, 16} <= depths
