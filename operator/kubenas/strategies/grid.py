"""Grid search: the space in canonical order, floats at evenly spaced points."""

from __future__ import annotations

from collections.abc import Sequence

from kubenas.space import Assignment, SearchSpace
from kubenas.strategies._base import Observation, Strategy
from kubenas.strategies.prior import Prior


class GridSearch(Strategy):
    def __init__(self, space: SearchSpace, seed: int, float_points: int) -> None:
        super().__init__(space, seed)
        self.float_points = float_points

    def suggest(
        self,
        index: int,
        finished: Sequence[Observation],
        running: Sequence[Observation],
        taken: frozenset[str],
        prior: Prior | None = None,
    ) -> Assignment | None:
        """The canonical order, whatever a screening says: a grid is asked for to be exhaustive."""
        for candidate in self.space.grid(self.float_points):
            if self.space.key(candidate) not in taken:
                return candidate
        return None
