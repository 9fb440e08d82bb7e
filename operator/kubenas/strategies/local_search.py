"""Local search (White et al., UAI 2021: "local search is state of the art for NAS benchmarks").

Hill climbing with restarts, rebuilt from the records on every call. After a few random samples
the climb starts at the best of them; each proposal is an untried neighbour of the climb's
centre, and a neighbour that beats the centre becomes the centre. When every neighbour of the
centre has been tried, the centre is a local optimum and the climb restarts from a new random
architecture (the best-screened of a few, with screening). Climbing on from the next-best trial
instead, as this search did before, spent the budget filling in the basin of a local optimum.
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
        self.param_by_name = space.by_name()

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
        trials = sorted([*finished, *running], key=lambda o: o.index)
        if len(trials) < self.initial_samples or not any(o.value is not None for o in finished):
            return self.first_untaken(self.space.sample, rng, taken, prior)
        centre = self.centre(trials)
        fresh = [n for n in self.space.neighbours(centre.params) if self.space.key(n) not in taken]
        if fresh and prior is not None:  # the best-screened neighbour first
            return max(fresh, key=lambda n: prior.score(self.space.key(n)))
        if fresh:
            return fresh[rng.randrange(len(fresh))]
        return self.first_untaken(self.space.sample, rng, taken, prior)  # a local optimum

    def centre(self, trials: Sequence[Observation]) -> Observation:
        """The current climb's centre, found by replaying the trials in order. The initial
        samples start the climb; a trial next to one of the climb's trials joins it (parallel
        trials may have been proposed around an earlier centre), and the climb's best is the
        centre. A trial next to none of them is a restart: the first trial of a new climb, its
        centre even while unfinished."""

        def better(a: Observation, b: Observation) -> bool:
            return a.value is not None and (b.value is None or a.value > b.value)

        centre = trials[0]
        climb: list[Observation] = []
        for position, o in enumerate(trials):
            joins = position < self.initial_samples or self.adjacent(centre, o)
            if not joins and not any(self.adjacent(m, o) for m in reversed(climb)):
                centre, climb = o, []
            elif better(o, centre):
                centre = o
            climb.append(o)
        return centre

    def adjacent(self, a: Observation, b: Observation) -> bool:
        """Whether ``b`` is one parameter step from ``a``, as ``SearchSpace.neighbours`` steps.
        Compared directly: making the neighbours' canonical keys cost 0.2 ms a trial."""
        if a.params.keys() != b.params.keys():  # a step that changed which parameters count
            return b.params in self.space.neighbours(a.params)
        differ = [name for name, value in a.params.items() if b.params[name] != value]
        if len(differ) != 1:
            return False
        name = differ[0]
        return b.params[name] in self.param_by_name[name].neighbours(a.params[name])
