"""NSGA-II breeds its children from the elite of what it has seen, not at random."""

from __future__ import annotations

import random

from kubenas.space import build_space
from kubenas.strategies import Observation
from kubenas.strategies.nsga2 import Nsga2

from .conftest import make_spec


def _share_of_conv3x3(finished: list[Observation], population: int) -> float:
    space = build_space(make_spec("nsga2").search_space)
    strategy = Nsga2(space, seed=5, population_size=population, crossover_prob=0.5)
    taken = frozenset(o.key for o in finished)
    suggestions = [strategy.suggest(1000 + i, finished, [], taken) for i in range(40)]
    values = [
        v for s in suggestions if s is not None for k, v in s.items() if k.startswith("edge_")
    ]
    return sum(v == "nor_conv_3x3" for v in values) / len(values)


def test_children_inherit_what_the_front_shares() -> None:
    """Every trial seen is mostly 3x3 convolutions and none dominates another (more
    convolutions, more accuracy, more cost): children of that front are mostly convolutions
    too, where a random draw would give one in five."""
    space = build_space(make_spec("nsga2").search_space)
    rng = random.Random(0)
    finished: list[Observation] = []
    while len(finished) < 20:
        params = {
            name: ("nor_conv_3x3" if rng.random() < 0.8 else "skip_connect")
            if name.startswith("edge_")
            else value
            for name, value in space.sample(rng).items()
        }
        key = space.key(params)
        if key in {o.key for o in finished}:
            continue
        convs = float(sum(v == "nor_conv_3x3" for v in params.values()))
        finished.append(Observation(len(finished), params, key, convs, objectives=(convs, -convs)))
    assert _share_of_conv3x3([], population=10) < 0.35  # the first population is random
    assert _share_of_conv3x3(finished, population=10) > 0.4
