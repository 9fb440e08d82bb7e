"""Whether a hand-written architecture belongs to a family, checked before any trainer sees it.

A baseline is named by its architecture JSON, as the trainer takes it, and need not lie inside
the search space (a ResNet cell can be the yardstick for a space without ``none``). It must
still be a network of the family, or its trial would fail only after the search had run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubenas.api.space import SearchSpaceSpec
from kubenas.api.vocabulary import (
    CHAIN_FAMILY,
    NB201_FAMILY,
    parse_chain_operation,
    parse_nb201_cell,
)
from kubenas.space.families import build_space

MAX_CHANNELS = 4096
NB201_KEYS = ("cell", "stem_channels", "cells_per_stage")
CHAIN_KEYS = ("stem_channels", "stages")


def architecture_problems(
    search_space: SearchSpaceSpec, architecture: Mapping[str, Any]
) -> list[tuple[str, str]]:
    """``(field, problem)`` for each way ``architecture`` is not a network of the space's
    family; the field is relative to the architecture object. Empty when it is one."""
    family = search_space.family
    if family == NB201_FAMILY:
        return _nb201_problems(architecture)
    if family == CHAIN_FAMILY:
        return _chain_problems(architecture)
    return [("", problem) for problem in build_space(search_space).validate(architecture)]


def _unknown_keys(architecture: Mapping[str, Any], known: tuple[str, ...]) -> list[tuple[str, str]]:
    return [
        (key, f"not a field of this family's architecture (it has {', '.join(known)})")
        for key in architecture
        if key not in known
    ]


def _channels_problem(value: object, limit: int = MAX_CHANNELS) -> str | None:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= limit:
        return f"must be an integer from 1 to {limit}, got {value!r}"
    return None


def _nb201_problems(architecture: Mapping[str, Any]) -> list[tuple[str, str]]:
    problems = _unknown_keys(architecture, NB201_KEYS)
    cell = architecture.get("cell")
    if not isinstance(cell, str):
        problems.append(
            ("cell", f"must be a cell string like |op~0|+|op~0|op~1|+..., got {cell!r}")
        )
    else:
        try:
            parse_nb201_cell(cell)
        except ValueError as error:
            problems.append(("cell", str(error)))
    for key in ("stem_channels", "cells_per_stage"):
        if (problem := _channels_problem(architecture.get(key))) is not None:
            problems.append((key, problem))
    return problems


def _chain_problems(architecture: Mapping[str, Any]) -> list[tuple[str, str]]:
    problems = _unknown_keys(architecture, CHAIN_KEYS)
    if (problem := _channels_problem(architecture.get("stem_channels"))) is not None:
        problems.append(("stem_channels", problem))
    stages = architecture.get("stages")
    if not isinstance(stages, list) or not stages:
        return [*problems, ("stages", "must be a non-empty list of {width, blocks}")]
    for s, stage in enumerate(stages):
        where = f"stages[{s}]"
        if not isinstance(stage, dict) or not isinstance(stage.get("blocks"), list):
            problems.append((where, "must be an object with width and a list of blocks"))
            continue
        if (problem := _channels_problem(stage.get("width"))) is not None:
            problems.append((f"{where}.width", problem))
        for b, block in enumerate(stage["blocks"]):
            try:
                parse_chain_operation(str(block))
            except ValueError as error:
                problems.append((f"{where}.blocks[{b}]", str(error)))
    return problems
