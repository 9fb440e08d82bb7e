"""The reinforce strategy learns from rewards: choices that paid off become more likely."""

from __future__ import annotations

import random

from kubenas.space import build_space
from kubenas.strategies import Observation
from kubenas.strategies.reinforce import Reinforce

from .conftest import make_spec


def _space_and_strategy(learning_rate: float) -> tuple[Reinforce, list[Observation]]:
    spec = make_spec("reinforce")
    space = build_space(spec.search_space)
    strategy = Reinforce(space, seed=3, learning_rate=learning_rate, baseline_momentum=0.9)
    rng = random.Random(0)
    finished = []
    for index in range(60):
        params = space.sample(rng)
        convs = sum(v == "nor_conv_3x3" for v in params.values())
        finished.append(Observation(index, params, space.key(params), float(convs)))
    return strategy, finished


def _share_of_conv3x3(strategy: Reinforce, finished: list[Observation]) -> float:
    suggestions = [strategy.suggest(100 + i, finished, [], frozenset()) for i in range(200)]
    values = [v for s in suggestions if s is not None for v in s.values()]
    return sum(v == "nor_conv_3x3" for v in values) / len(values)


def test_rewarded_operations_become_more_likely() -> None:
    strategy, finished = _space_and_strategy(learning_rate=0.1)
    untrained = _share_of_conv3x3(strategy, [])
    trained = _share_of_conv3x3(strategy, finished)
    assert 0.15 < untrained < 0.25  # five operations, uniform at first
    assert trained > untrained + 0.2


def test_the_policy_is_rebuilt_from_the_trials_alone() -> None:
    strategy, finished = _space_and_strategy(learning_rate=0.01)
    again, _ = _space_and_strategy(learning_rate=0.01)
    shuffled = list(reversed(finished))
    assert strategy.suggest(61, finished, [], frozenset()) == again.suggest(
        61, shuffled, [], frozenset()
    )
