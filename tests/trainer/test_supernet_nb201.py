"""The beta-DARTS supernet over nb201-cell spaces, trained for real on digits and on 1-D data."""

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from kubenas.api.builtin_trainer import Hyperparameters  # noqa: E402
from kubenas.api.space import Nb201CellSpace  # noqa: E402
from kubenas.api.vocabulary import NB201_EDGES, NB201_OPERATIONS, nb201_edge_name  # noqa: E402
from kubenas.space import Assignment, SearchSpace, build_space  # noqa: E402
from kubenas_trainer.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from kubenas_trainer.config import ConfigError  # noqa: E402
from kubenas_trainer.data import Splits, load_dataset  # noqa: E402
from kubenas_trainer.device import DevicePlan  # noqa: E402
from kubenas_trainer.models import build_model  # noqa: E402
from kubenas_trainer.models.nb201 import Cell  # noqa: E402
from kubenas_trainer.supernet.nb201 import BetaDartsSupernet, build_beta_darts  # noqa: E402

pytestmark = pytest.mark.trainer

CPU = DevicePlan(torch.device("cpu"), mixed_precision=False, channels_last=False, threads=1)
# Larger batches than the trainer's default: fewer steps, so each epoch takes about a second.
FAST = Hyperparameters(batch_size=64)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Small tensors: more threads only add overhead, many times over on busy cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Splits:
    return load_dataset("digits", tmp_path_factory.mktemp("data"))


def _space(**settings: Any) -> SearchSpace:
    spec = {"family": "nb201-cell", "stem_channels": [8], "cells_per_stage": [1], **settings}
    return build_space(Nb201CellSpace(**spec))


def _supernet(
    space: SearchSpace,
    splits: Splits,
    hparams: Hyperparameters = FAST,
    schedule_epochs: int = 3,
    seed: int = 0,
) -> BetaDartsSupernet:
    return build_beta_darts(space, splits, hparams, schedule_epochs, CPU, seed)


def _path(assignment: Assignment) -> list[str]:
    return [str(assignment[nb201_edge_name(*edge)]) for edge in NB201_EDGES]


@pytest.mark.slow
def test_training_learns_digits_and_top_reads_off_distinct_architectures(digits: Splits) -> None:
    space = _space()
    supernet = _supernet(space, digits)
    entropies = [supernet.entropy()]
    for _ in range(3):
        metrics = supernet.train_epoch()
        entropies.append(supernet.entropy())
    assert supernet.epoch == 3
    assert metrics["train_accuracy"] > 0.8
    assert metrics["val_accuracy"] > 0.8  # ten classes: chance is 0.1
    # beta-DARTS keeps alpha near uniform: never above log(ops), and below where it started.
    assert all(entropy <= math.log(len(NB201_OPERATIONS)) for entropy in entropies)
    assert entropies[-1] < entropies[0]
    assert space.validate(supernet.derived()) == []

    top = supernet.top(3)
    assert len(top) == 3
    assert len({space.key(assignment) for assignment, _ in top}) == 3
    assert all(space.validate(assignment) == [] for assignment, _ in top)
    scores = [score for _, score in top]
    assert all(0.0 <= score <= 1.0 for score in scores)
    assert scores == sorted(scores, reverse=True)
    assert supernet.score([assignment for assignment, _ in top]) == scores  # deterministic


@pytest.mark.slow
def test_resumed_training_replays_bit_for_bit_and_scoring_changes_nothing(
    digits: Splits, tmp_path: Path
) -> None:
    space = _space()
    hparams = Hyperparameters(batch_size=128)
    straight = _supernet(space, digits, hparams, schedule_epochs=2)
    straight.train_epoch()
    expected = straight.train_epoch()

    interrupted = _supernet(space, digits, hparams, schedule_epochs=2)
    interrupted.train_epoch()
    interrupted.top(2)
    checkpoint = save_checkpoint(tmp_path, interrupted.state_dict())
    scored_then_trained = interrupted.train_epoch()
    resumed = _supernet(space, digits, hparams, schedule_epochs=2)
    resumed.load_state_dict(load_checkpoint(checkpoint))
    assert resumed.epoch == 1
    resumed_metrics = resumed.train_epoch()

    assert resumed_metrics == expected == scored_then_trained
    for other in (interrupted, resumed):
        assert torch.equal(other.alpha, straight.alpha)
        mine, theirs = straight.network.state_dict(), other.network.state_dict()
        assert all(torch.equal(mine[key], theirs[key]) for key in mine)


def test_a_path_computes_exactly_the_standalone_network(digits: Splits) -> None:
    space = _space()
    supernet = _supernet(space, digits)
    path = ["nor_conv_3x3", "none", "skip_connect", "avg_pool_3x3", "nor_conv_1x1", "nor_conv_3x3"]
    assignment = space.complete(
        {nb201_edge_name(*edge): op for edge, op in zip(NB201_EDGES, path, strict=True)}, None
    )
    standalone = build_model(
        "nb201-cell", space.to_architecture(assignment), digits.sample_shape, digits.num_classes
    )
    shared = supernet.network.state_dict()
    standalone.load_state_dict(
        {key: shared[_shared_key(standalone, key, path)] for key in standalone.state_dict()}
    )
    x = torch.from_numpy(digits.train[0][:16])
    supernet.network.eval()
    standalone.eval()
    with torch.no_grad():
        assert torch.equal(supernet.network.path(x, tuple(path)), standalone(x))


def _shared_key(standalone: nn.Module, key: str, path: Sequence[str]) -> str:
    """Where the supernet holds a standalone network's tensor: a cell's k-th kept edge is the
    chosen op of the k-th edge whose op is not ``none``."""
    layer, _, rest = key.partition(".")
    if isinstance(standalone.get_submodule(layer), Cell):
        _, kept, inner = rest.split(".", 2)
        edge = [e for e, op in enumerate(path) if op != "none"][int(kept)]
        return f"layers.{layer}.edges.{edge}.ops.{path[edge]}.{inner}"
    return f"layers.{key}"


def test_most_probable_walks_the_distribution_best_first(digits: Splits) -> None:
    operations = ["none", "skip_connect", "nor_conv_3x3"]
    space = _space(operations=operations)
    supernet = _supernet(space, digits)
    with torch.no_grad():
        supernet.alpha.copy_(
            torch.randn(supernet.alpha.shape, generator=torch.Generator().manual_seed(1))
        )
    log_p = torch.log_softmax(supernet.alpha.detach().double(), dim=-1)

    def log_probability(assignment: Assignment) -> float:
        return sum(float(log_p[e, operations.index(op)]) for e, op in enumerate(_path(assignment)))

    everything = sorted(space.grid(2), key=log_probability, reverse=True)
    found = supernet.most_probable(40)
    assert [_path(assignment) for assignment, _ in found] == [_path(a) for a in everything[:40]]
    assert [lp for _, lp in found] == pytest.approx([log_probability(a) for a in everything[:40]])
    assert len(supernet.most_probable(10_000)) == len(operations) ** len(NB201_EDGES)


@pytest.mark.parametrize("name", ["stem_channels", "cells_per_stage"])
def test_a_searched_skeleton_is_refused_naming_the_parameter(digits: Splits, name: str) -> None:
    space = _space(**{name: [1, 2]})
    with pytest.raises(ConfigError, match=name):
        _supernet(space, digits)


@pytest.mark.slow
def test_one_dimensional_data_and_restricted_operations(tmp_path: Path) -> None:
    sequences = load_dataset("synthetic:1x40:4", tmp_path)
    operations = ["nor_conv_3x3", "skip_connect", "avg_pool_3x3"]
    space = _space(operations=operations)
    supernet = _supernet(space, sequences, schedule_epochs=1)
    assert supernet.alpha.shape == (len(NB201_EDGES), len(operations))
    metrics = supernet.train_epoch()
    assert all(math.isfinite(value) for value in metrics.values())
    top = supernet.top(2)
    assert len(top) == 2
    assert all(set(_path(assignment)) <= set(operations) for assignment, _ in top)
    assert all(0.0 <= score <= 1.0 for _, score in top)
