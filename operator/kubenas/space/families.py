"""Model families: how ``spec.searchSpace`` becomes parameters and an assignment an architecture.

The architecture dicts built here are the trainer contract (docs/trainer-contract.md).
"""

from __future__ import annotations

from kubenas.api.space import (
    CategoricalParameter,
    ChainSpace,
    CustomSpace,
    IntParameter,
    Nb201CellSpace,
    SearchSpaceSpec,
)
from kubenas.space.params import Categorical, Condition, Float, Integer, Param
from kubenas.space.space import Architecture, Assignment, SearchSpace

# NAS-Bench-201 cell edges, in the order its architecture string lists them: node j <- node i.
NB201_EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))


def nb201_edge_name(to_node: int, from_node: int) -> str:
    return f"edge_{to_node}_{from_node}"


def nb201_cell_string(assignment: Assignment) -> str:
    """NAS-Bench-201's own format, e.g. ``|nor_conv_3x3~0|+|skip_connect~0|none~1|+|...|``."""
    nodes = []
    for to_node in (1, 2, 3):
        ops = [f"{assignment[nb201_edge_name(to_node, i)]}~{i}" for i in range(to_node)]
        nodes.append("|" + "|".join(ops) + "|")
    return "+".join(nodes)


def parse_nb201_cell_string(cell: str) -> Assignment:
    """Inverse of :func:`nb201_cell_string`; raises ValueError on a malformed string."""
    assignment: Assignment = {}
    nodes = cell.split("+")
    if len(nodes) != 3:
        raise ValueError(f"expected 3 nodes separated by '+', got {cell!r}")
    for to_node, node in enumerate(nodes, start=1):
        ops = [o for o in node.strip("|").split("|") if o]
        if len(ops) != to_node:
            raise ValueError(f"node {to_node} needs {to_node} edges in {cell!r}")
        for op_and_source in ops:
            op, _, source = op_and_source.partition("~")
            assignment[nb201_edge_name(to_node, int(source))] = op
    return assignment


def _nb201_space(spec: Nb201CellSpace) -> SearchSpace:
    params: list[Param] = [
        Categorical(nb201_edge_name(j, i), tuple(spec.operations)) for j, i in NB201_EDGES
    ]
    params.append(Categorical("stem_channels", tuple(spec.stem_channels)))
    params.append(Categorical("cells_per_stage", tuple(spec.cells_per_stage)))

    def to_architecture(a: Assignment) -> Architecture:
        return {
            "cell": nb201_cell_string(a),
            "stem_channels": a["stem_channels"],
            "cells_per_stage": a["cells_per_stage"],
        }

    return SearchSpace("nb201-cell", tuple(params), to_architecture)


def _chain_space(spec: ChainSpace) -> SearchSpace:
    params: list[Param] = []
    for s in range(spec.stages):
        params.append(Integer(f"stage{s}_depth", spec.depth.min, spec.depth.max))
        params.append(Categorical(f"stage{s}_width", tuple(spec.widths[s])))
        for b in range(spec.depth.max):
            active_depths = tuple(range(b + 1, spec.depth.max + 1))
            params.append(
                Categorical(
                    f"stage{s}_block{b}_op",
                    tuple(spec.operations),
                    Condition(f"stage{s}_depth", active_depths),
                )
            )
    stages = spec.stages
    stem = spec.stem_channels

    def to_architecture(a: Assignment) -> Architecture:
        return {
            "stem_channels": stem,
            "stages": [
                {
                    "width": a[f"stage{s}_width"],
                    "blocks": [
                        a[f"stage{s}_block{b}_op"] for b in range(int(a[f"stage{s}_depth"]))
                    ],
                }
                for s in range(stages)
            ],
        }

    return SearchSpace("chain", tuple(params), to_architecture)


def _custom_space(spec: CustomSpace) -> SearchSpace:
    params: list[Param] = []
    for p in spec.parameters:
        cond = Condition(p.condition.parameter, tuple(p.condition.values)) if p.condition else None
        if isinstance(p, CategoricalParameter):
            params.append(Categorical(p.name, tuple(p.choices), cond))
        elif isinstance(p, IntParameter):
            params.append(Integer(p.name, p.low, p.high, p.step, p.log, cond))
        else:
            params.append(Float(p.name, p.low, p.high, p.log, cond))
    return SearchSpace("custom", tuple(params), lambda a: dict(a))


def build_space(spec: SearchSpaceSpec) -> SearchSpace:
    """The search space a ``spec.searchSpace`` block declares."""
    if isinstance(spec, Nb201CellSpace):
        return _nb201_space(spec)
    if isinstance(spec, ChainSpace):
        return _chain_space(spec)
    return _custom_space(spec)
