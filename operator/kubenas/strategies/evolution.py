"""Regularized evolution (Real et al., AAAI 2019): tournament selection in an ageing population.

The population is the ``population_size`` most recently created trials that finished; the oldest
leaves as a new one arrives, so a lucky early architecture cannot dominate forever.
"""

from __future__ import annotations

from collections.abc import Sequence

from kubenas.space import Assignment, SearchSpace
from kubenas.strategies._base import Observation, Strategy, fitness, trial_rng
from kubenas.strategies.prior import Prior


class RegularizedEvolution(Strategy):
    def __init__(
        self, space: SearchSpace, seed: int, population_size: int, sample_size: int
    ) -> None:
        super().__init__(space, seed)
        self.population_size = population_size
        self.sample_size = sample_size

    def suggest(
        self,
        index: int,
        finished: Sequence[Observation],
        running: Sequence[Observation],
        taken: frozenset[str],
        prior: Prior | None = None,
    ) -> Assignment | None:
        warm = self.warm_start(prior, finished, running, taken)
        if warm is not None:
            return warm
        finished = fitness(finished, trial_rng(self.seed, index, "weights"))
        rng = trial_rng(self.seed, index)
        alive = [o for o in finished if o.value is not None]
        if len(alive) < self.population_size:
            return self.first_untaken(self.space.sample, rng, taken, prior)
        population = sorted(alive, key=lambda o: o.index)[-self.population_size :]
        contenders = rng.sample(population, self.sample_size)
        parent = max(contenders, key=lambda o: (o.value, -o.index))
        return self.first_untaken(lambda r: self.space.mutate(parent.params, r), rng, taken, prior)
