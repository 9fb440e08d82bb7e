"""Local search (White et al., UAI 2021: "local search is state of the art for NAS benchmarks").

Best-first hill climbing, rebuilt from the records on every call: after a few random samples,
propose an untried neighbour of the best architecture whose neighbourhood is not used up; when
a neighbour beats it, that neighbour becomes the centre. A used-up centre passes the turn to the
next best, which acts as a restart that keeps what was learnt.
"""

from __future__ import annotations

from collections.abc import Sequence

from kubenas.space import Assignment, SearchSpace
from kubenas.strategies._base import Observation, Strategy, fitness, trial_rng
from kubenas.strategies.prior import Prior


class LocalSearch(Strategy):
    def __init__(self, space: SearchSpace, seed: int, initial_samples: int) -> None:
        super().__init__(space, seed)
        self.initial_samples = initial_samples

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
        scored = [o for o in finished if o.value is not None]
        if len(finished) + len(running) < self.initial_samples or not scored:
            return self.first_untaken(self.space.sample, rng, taken, prior)
        for centre in sorted(scored, key=lambda o: (-(o.value or 0.0), o.index)):
            fresh = [
                n for n in self.space.neighbours(centre.params) if self.space.key(n) not in taken
            ]
            if fresh and prior is not None:  # the best-screened neighbour first
                return max(fresh, key=lambda n: prior.score(self.space.key(n)))
            if fresh:
                return fresh[rng.randrange(len(fresh))]
        return self.first_untaken(self.space.sample, rng, taken, prior)
