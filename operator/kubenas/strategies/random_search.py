"""Random search: every architecture equally likely. The baseline every strategy must beat."""

from __future__ import annotations

from collections.abc import Sequence

from kubenas.space import Assignment
from kubenas.strategies._base import Observation, Strategy, trial_rng
from kubenas.strategies.prior import Prior


class RandomSearch(Strategy):
    def suggest(
        self,
        index: int,
        finished: Sequence[Observation],
        running: Sequence[Observation],
        taken: frozenset[str],
        prior: Prior | None = None,
    ) -> Assignment | None:
        rng = trial_rng(self.seed, index)
        return self.warm_start(prior, finished, running, taken) or self.first_untaken(
            self.space.sample, rng, taken, prior
        )
