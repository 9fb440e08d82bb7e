"""The SPOS chain supernet, trained for real on digits and on 1-D sequences: scores, the
evolutionary search, resume equivalence and the spaces it refuses."""

import math
import random
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from kubenas.api.builtin_trainer import Hyperparameters  # noqa: E402
from kubenas.api.space import ChainSpace, Nb201CellSpace  # noqa: E402
from kubenas.space import SearchSpace, build_space  # noqa: E402
from kubenas_trainer.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from kubenas_trainer.config import ConfigError  # noqa: E402
from kubenas_trainer.data import Splits, load_dataset  # noqa: E402
from kubenas_trainer.device import DevicePlan  # noqa: E402
from kubenas_trainer.models import build_model  # noqa: E402
from kubenas_trainer.models.cost import count_parameters  # noqa: E402
from kubenas_trainer.supernet.chain import SposSupernet, build_spos, stage_blocks  # noqa: E402

pytestmark = pytest.mark.trainer

CPU = DevicePlan(torch.device("cpu"), mixed_precision=False, channels_last=False, threads=1)
OPERATIONS = ["conv3x3", "sepconv3x3", "identity"]


def _space(max_depth: int = 2, widths: list[list[int]] | None = None) -> SearchSpace:
    return build_space(
        ChainSpace.model_validate(
            {
                "family": "chain",
                "stemChannels": 16,
                "stages": 2,
                "depth": {"min": 1, "max": max_depth},
                "widths": widths or [[16], [32]],
                "operations": OPERATIONS,
            }
        )
    )


def _build(
    space: SearchSpace, splits: Splits, schedule_epochs: int = 3, seed: int = 0
) -> SposSupernet:
    return build_spos(space, splits, Hyperparameters(), schedule_epochs, CPU, seed)


def _tensors(state: Any) -> list[Any]:
    """Every tensor of a nested state, in a fixed order, for exact comparison."""
    if isinstance(state, dict):
        return [t for key in sorted(state, key=str) for t in _tensors(state[key])]
    if isinstance(state, list | tuple):
        return [t for item in state for t in _tensors(item)]
    return [state] if isinstance(state, torch.Tensor) else []


def _assert_same_state(a: dict[str, Any], b: dict[str, Any]) -> None:
    left, right = _tensors(a), _tensors(b)
    assert len(left) == len(right)
    assert all(torch.equal(x, y) for x, y in zip(left, right, strict=True))


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread: these tiny networks run several times slower with two threads
    contending on a two-core runner."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Splits:
    return load_dataset("digits", tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def trained(digits: Splits) -> tuple[SposSupernet, list[float]]:
    """A supernet over a 144-architecture space trained 3 epochs, with the scores that eight
    random sub-networks had before training."""
    space = _space()
    supernet = _build(space, digits)
    samples = [space.sample(random.Random(i)) for i in range(8)]
    before = supernet.score(samples)
    for _ in range(3):
        supernet.train_epoch()
    return supernet, before


def test_training_raises_subnetwork_scores_well_above_chance(
    trained: tuple[SposSupernet, list[float]],
) -> None:
    supernet, before = trained
    samples = [supernet.space.sample(random.Random(i)) for i in range(8)]
    after = supernet.score(samples)
    assert statistics.mean(before) < 0.3  # ten classes
    assert statistics.mean(after) > 0.7
    assert supernet.score([supernet.derived()])[0] > 0.7


def test_top_of_a_small_space_is_the_best_of_every_architecture(
    trained: tuple[SposSupernet, list[float]],
) -> None:
    supernet, _ = trained
    space = supernet.space
    top = supernet.top(3)
    assert len(top) == 3
    assert len({space.key(a) for a, _ in top}) == 3
    assert all(space.validate(a) == [] for a, _ in top)
    scores = [score for _, score in top]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= score <= 1.0 for score in scores)
    assert scores[0] == max(supernet.score(list(space.grid(2))))


def test_evolutionary_search_is_deterministic_for_the_seed(digits: Splits) -> None:
    space = _space(max_depth=3)  # 1521 architectures, more than the search evaluates
    assert (space.size() or 0) > 200
    runs = []
    for _ in range(2):
        supernet = _build(space, digits, schedule_epochs=1)
        supernet.train_epoch()
        runs.append(supernet.top(3))
    assert runs[0] == runs[1]
    top = runs[0]
    assert len({space.key(a) for a, _ in top}) == 3
    assert all(space.validate(a) == [] for a, _ in top)
    assert [s for _, s in top] == sorted((s for _, s in top), reverse=True)
    assert top[0][1] > 0.3


def test_resumed_training_equals_one_straight_run(digits: Splits, tmp_path: Path) -> None:
    space = _space()
    straight = _build(space, digits, schedule_epochs=2)
    straight.train_epoch()
    before_scoring = straight.state_dict()
    straight.derived()
    _assert_same_state(straight.state_dict(), before_scoring)  # scoring restores batch norm
    straight_metrics = straight.train_epoch()

    first = _build(space, digits, schedule_epochs=2)
    first.train_epoch()
    first.derived()
    checkpoint = save_checkpoint(tmp_path, {"supernet": first.state_dict()})
    resumed = _build(space, digits, schedule_epochs=2)
    resumed.load_state_dict(load_checkpoint(checkpoint)["supernet"])
    assert resumed.epoch == 1
    resumed_metrics = resumed.train_epoch()

    assert resumed_metrics == straight_metrics
    _assert_same_state(resumed.state_dict(), straight.state_dict())
    assert resumed.derived() == straight.derived()


@pytest.mark.parametrize(
    "widths,stage", [([[16, 24], [32]], "stage0_width"), ([[16], [32, 64]], "stage1_width")]
)
def test_a_stage_with_two_widths_is_refused(
    digits: Splits, widths: list[list[int]], stage: str
) -> None:
    with pytest.raises(ConfigError, match=stage):
        _build(_space(widths=widths), digits)


def test_a_space_of_another_family_is_refused(digits: Splits) -> None:
    space = build_space(Nb201CellSpace.model_validate({"family": "nb201-cell"}))
    with pytest.raises(ConfigError, match="chain"):
        _build(space, digits)


def test_one_dimensional_sequences_train_and_score(tmp_path: Path) -> None:
    splits = load_dataset("synthetic:1x40:4", tmp_path)
    space = _space()
    supernet = _build(space, splits, schedule_epochs=1)
    metrics = supernet.train_epoch()
    assert math.isfinite(metrics["train_loss"])
    assert 0.0 <= metrics["train_accuracy"] <= 1.0
    assert supernet.epoch == 1
    top = supernet.top(2)
    assert len(top) == 2
    assert all(0.0 <= score <= 1.0 for _, score in top)
    assert space.validate(supernet.derived()) == []


def test_entropy_is_that_of_uniform_sampling_every_epoch(digits: Splits) -> None:
    supernet = _build(_space(), digits, schedule_epochs=1)
    assert supernet.entropy() == pytest.approx(math.log(len(OPERATIONS)))
    supernet.train_epoch()
    assert supernet.entropy() == pytest.approx(math.log(len(OPERATIONS)))


@pytest.mark.parametrize("dataset", ["digits", "synthetic:1x40:4"])
def test_a_path_trains_exactly_the_layers_of_the_standalone_network(
    dataset: str, tmp_path: Path
) -> None:
    splits = load_dataset(dataset, tmp_path)
    space = _space()
    supernet = _build(space, splits)
    network = supernet.network
    for seed in range(4):
        assignment = space.sample(random.Random(seed))
        network.blocks = stage_blocks(space, assignment)
        network.zero_grad(set_to_none=True)
        x = torch.from_numpy(splits.train[0][:4])
        network(x).sum().backward()
        trained = sum(p.numel() for p in network.parameters() if p.grad is not None)
        standalone = build_model(
            "chain", space.to_architecture(assignment), splits.sample_shape, splits.num_classes
        )
        assert trained == count_parameters(standalone)
