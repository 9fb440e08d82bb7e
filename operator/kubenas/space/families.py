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
from kubenas.api.vocabulary import (
    CHAIN_FAMILY,
    CUSTOM_FAMILY,
    NB201_EDGES,
    NB201_FAMILY,
    format_nb201_cell,
    nb201_edge_name,
    parse_nb201_cell,
)
from kubenas.space.params import Categorical, Condition, Float, Integer, Param
from kubenas.space.space import Architecture, Assignment, SearchSpace


def nb201_cell_string(assignment: Assignment) -> str:
    """The cell of an nb201-cell assignment in NAS-Bench-201's own string format."""
    return format_nb201_cell(
        {(j, i): str(assignment[nb201_edge_name(j, i)]) for j, i in NB201_EDGES}
    )


def parse_nb201_cell_string(cell: str) -> Assignment:
    """Inverse of :func:`nb201_cell_string`; raises ValueError on a malformed string."""
    return {nb201_edge_name(j, i): op for (j, i), op in parse_nb201_cell(cell).items()}


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

    return SearchSpace(NB201_FAMILY, tuple(params), to_architecture)


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

    return SearchSpace(CHAIN_FAMILY, tuple(params), to_architecture)


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
    return SearchSpace(CUSTOM_FAMILY, tuple(params), lambda a: dict(a))


def build_space(spec: SearchSpaceSpec) -> SearchSpace:
    """The search space a ``spec.searchSpace`` block declares."""
    if isinstance(spec, Nb201CellSpace):
        return _nb201_space(spec)
    if isinstance(spec, ChainSpace):
        return _chain_space(spec)
    return _custom_space(spec)
