"""Random search: every architecture equally likely. The baseline every strategy must beat."""

from __future__ import annotations

from collections.abc import Sequence

from kubenas.space import Assignment
from kubenas.strategies._base import Observation, Strategy, trial_rng


class RandomSearch(Strategy):
    def suggest(
        self,
        index: int,
        finished: Sequence[Observation],
        running: Sequence[Observation],
        taken: frozenset[str],
    ) -> Assignment | None:
        return self.first_untaken(self.space.sample, trial_rng(self.seed, index), taken)
