"""Model families: shapes, parameter counts and FLOPs in 1-D and 2-D, every op, bad JSON."""

import pytest

torch = pytest.importorskip("torch")

from kubenas.api.vocabulary import NB201_OPERATIONS  # noqa: E402
from kubenas_trainer.config import ConfigError  # noqa: E402
from kubenas_trainer.models import build_model  # noqa: E402
from kubenas_trainer.models.cost import (  # noqa: E402
    count_forward_flops,
    count_parameters,
    count_training_flops,
)

pytestmark = pytest.mark.trainer

NB201_SMALL = {
    "cell": "|nor_conv_3x3~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|skip_connect~0|"
    "nor_conv_3x3~1|none~2|",
    "stem_channels": 8,
    "cells_per_stage": 1,
}
CHAIN_TINY = {
    "stem_channels": 8,
    "stages": [{"width": 8, "blocks": ["conv3x3"]}, {"width": 16, "blocks": ["mbconv3x3_e2"]}],
}

SHAPES = [(3, 12, 12), (2, 5, 7), (1, 1, 1), (1, 40), (4, 3), (1, 1)]


def _cell(op: str) -> str:
    return f"|{op}~0|+|{op}~0|{op}~1|+|{op}~0|{op}~1|{op}~2|"


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("family,arch", [("nb201-cell", NB201_SMALL), ("chain", CHAIN_TINY)])
def test_every_family_classifies_every_input_shape(
    family: str, arch: dict[str, object], shape: tuple[int, ...]
) -> None:
    model = build_model(family, arch, shape, num_classes=7)
    assert model(torch.randn(3, *shape)).shape == (3, 7)
    assert count_forward_flops(model, torch.randn(1, *shape)) > 0


@pytest.mark.parametrize("op", NB201_OPERATIONS)
def test_every_nb201_op_trains_in_1d_and_2d(op: str) -> None:
    arch = {**NB201_SMALL, "cell": _cell(op)}
    for shape in [(3, 8, 8), (2, 24)]:
        model = build_model("nb201-cell", arch, shape, num_classes=4)
        model(torch.randn(4, *shape)).sum().backward()


@pytest.mark.parametrize(
    "block",
    [
        "identity",
        "conv3x3",
        "conv5x5",
        "sepconv3x3",
        "sepconv5x5",
        "mbconv3x3_e3",
        "mbconv5x5_e6",
        "mbconv7x7_e1",
        "conv7x7",
        "sepconv7x7",
    ],
)
def test_every_chain_block_trains_in_1d_and_2d(block: str) -> None:
    arch = {
        "stem_channels": 4,
        "stages": [{"width": 8, "blocks": [block, block]}, {"width": 8, "blocks": [block]}],
    }
    for shape in [(3, 9, 9), (2, 24)]:
        model = build_model("chain", arch, shape, num_classes=4)
        model(torch.randn(4, *shape)).sum().backward()


def test_nb201_none_cell_is_smaller_and_cheaper_than_conv_cell() -> None:
    empty = build_model("nb201-cell", {**NB201_SMALL, "cell": _cell("none")}, (3, 32, 32), 10)
    convs = build_model(
        "nb201-cell", {**NB201_SMALL, "cell": _cell("nor_conv_3x3")}, (3, 32, 32), 10
    )
    sample = torch.randn(1, 3, 32, 32)
    assert count_parameters(empty) < count_parameters(convs)
    assert count_forward_flops(empty, sample) < count_forward_flops(convs, sample)


def test_nb201_size_grows_with_cells_and_channels() -> None:
    sizes = [
        count_parameters(
            build_model(
                "nb201-cell",
                {**NB201_SMALL, "cells_per_stage": cells, "stem_channels": channels},
                (3, 32, 32),
                10,
            )
        )
        for cells, channels in [(1, 16), (5, 16), (5, 32)]
    ]
    assert sizes == sorted(sizes) and len(set(sizes)) == 3


def test_conv_layers_match_the_input_dimensionality() -> None:
    one_d = build_model("chain", CHAIN_TINY, (1, 40), 10)
    two_d = build_model("chain", CHAIN_TINY, (1, 8, 8), 10)
    assert any(isinstance(m, torch.nn.Conv1d) for m in one_d.modules())
    assert not any(isinstance(m, torch.nn.Conv2d) for m in one_d.modules())
    assert any(isinstance(m, torch.nn.Conv2d) for m in two_d.modules())


@pytest.mark.parametrize("shape", [(3, 12, 12), (2, 40)])
@pytest.mark.parametrize("family,arch", [("nb201-cell", NB201_SMALL), ("chain", CHAIN_TINY)])
def test_forward_flops_equal_torchs_flop_counter(
    family: str, arch: dict[str, object], shape: tuple[int, ...]
) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    model = build_model(family, arch, shape, num_classes=10).eval()
    sample = torch.randn(1, *shape)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(sample)
    assert count_forward_flops(model, sample) == counter.get_total_flops()


def test_training_flops_count_backward_as_twice_forward_even_for_depthwise_convs() -> None:
    model = build_model("chain", CHAIN_TINY, (3, 16, 16), 10)  # has a depthwise convolution
    sample = torch.randn(2, 3, 16, 16)
    forward = count_forward_flops(model, sample)
    assert 2 * forward < count_training_flops(model, sample) <= 3 * forward
    assert model.training and all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize(
    "family,arch,message",
    [
        (
            "nb201-cell",
            {**NB201_SMALL, "cell": "|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|"},
            "bad cell edge",
        ),
        (
            "nb201-cell",
            {**NB201_SMALL, "cell": "|none~0|+|none~0|none~0|+|none~0|none~1|none~2|"},
            "node 2",
        ),
        ("nb201-cell", {**NB201_SMALL, "stem_channels": 0}, "stem_channels"),
        (
            "chain",
            {"stem_channels": 8, "stages": [{"width": 8, "blocks": ["conv3x5"]}]},
            "unknown chain block",
        ),
        (
            "chain",
            {"stem_channels": 8, "stages": [{"width": 8, "blocks": ["mbconv3x3"]}]},
            "unknown chain block",
        ),
        ("chain", {"stem_channels": 8, "stages": []}, "stages"),
        ("resnet", NB201_SMALL, "unknown family"),
    ],
)
def test_invalid_architectures_are_refused_with_a_reason(
    family: str, arch: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        build_model(family, arch, (1, 8, 8), 10)
