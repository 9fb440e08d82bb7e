"""The NAS-Bench-201 network family (Dong & Yang, ICLR 2020), in 1-D or 2-D.

Architecture JSON: ``{"cell": "|op~0|+|op~0|op~1|+|op~0|op~1|op~2|", "stem_channels": C,
"cells_per_stage": N}``. Three stages of N cells at C, 2C and 4C channels, joined by NB201's
stride-2 ResNet basic block.
"""

from typing import Any

import torch
from torch import nn

from kubenas.api.vocabulary import NB201_EDGES, NB201_NODES, parse_nb201_cell
from kubenas_trainer.config import ConfigError
from kubenas_trainer.models.decode import positive_int
from kubenas_trainer.models.layers import Classifier, Geometry

# (to node, from node, operation) for every edge of a cell, in NAS-Bench-201's order.
Edges = list[tuple[int, int, str]]


def decode_cell(cell: object) -> Edges:
    """The cell string's edges, or a :class:`ConfigError` saying what is wrong with it."""
    try:
        operations = parse_nb201_cell(str(cell))
    except ValueError as error:
        raise ConfigError(str(error)) from error
    return [(target, source, operations[(target, source)]) for target, source in NB201_EDGES]


def _edge_op(op: str, channels: int, geometry: Geometry) -> nn.Module:
    if op == "skip_connect":
        return nn.Identity()
    if op == "avg_pool_3x3":
        return geometry.avg_pool(3)
    kernel = 1 if op == "nor_conv_1x1" else 3
    return nn.Sequential(nn.ReLU(), *geometry.conv_bn(channels, channels, kernel))


class Cell(nn.Module):
    """A NB201 cell: node j is the sum of its edges' ops; ``none`` edges are left out."""

    def __init__(self, edges: Edges, channels: int, geometry: Geometry) -> None:
        super().__init__()
        kept = [(target, source, op) for target, source, op in edges if op != "none"]
        self.wiring = [(target, source) for target, source, _ in kept]
        self.ops = nn.ModuleList(_edge_op(op, channels, geometry) for _, _, op in kept)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        states = [x]
        for node in range(1, NB201_NODES):
            terms = [
                op(states[source])
                for (target, source), op in zip(self.wiring, self.ops, strict=True)
                if target == node
            ]
            states.append(sum(terms[1:], terms[0]) if terms else torch.zeros_like(x))
        return states[-1]


class ReductionBlock(nn.Module):
    """NB201's ResNet basic block with stride 2: two ReLU-conv-BN and a pooled 1x1 shortcut."""

    def __init__(self, c_in: int, c_out: int, geometry: Geometry) -> None:
        super().__init__()
        stride = geometry.reduction_stride()
        self.body = nn.Sequential(
            nn.ReLU(),
            *geometry.conv_bn(c_in, c_out, 3, stride=stride),
            nn.ReLU(),
            *geometry.reduced().conv_bn(c_out, c_out, 3),
        )
        self.shortcut = nn.Sequential(geometry.downsample_pool(), geometry.conv(c_in, c_out, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.shortcut(x) + self.body(x)
        return out


def build_nb201(
    arch: dict[str, Any], in_channels: int, geometry: Geometry, num_classes: int
) -> nn.Module:
    edges = decode_cell(arch.get("cell", ""))
    channels = positive_int(arch, "stem_channels")
    cells = positive_int(arch, "cells_per_stage")
    layers: list[nn.Module] = [*geometry.conv_bn(in_channels, channels, 3)]
    for stage in range(3):
        if stage > 0:
            layers.append(ReductionBlock(channels, channels * 2, geometry))
            channels, geometry = channels * 2, geometry.reduced()
        layers.extend(Cell(edges, channels, geometry) for _ in range(cells))
    layers += [geometry.batch_norm(channels), nn.ReLU(), Classifier(channels, num_classes)]
    return nn.Sequential(*layers)
