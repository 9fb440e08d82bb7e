"""NSGA-II (Deb et al. 2002) through Optuna's ``NSGAIISampler``, rebuilt from the records.

Generations are what Optuna would have recorded for trials asked one after another: trial k
belongs to generation (feasible-or-infeasible completed trials before it) // population size,
so a restarted controller rebuilds the same parents. Parents are chosen by non-dominated rank
and crowding distance, feasible before infeasible and less violation first (Deb's constrained
domination), and children come from Optuna's uniform crossover and mutation.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Sequence

import optuna
from optuna.samplers import NSGAIISampler
from optuna.trial import FrozenTrial, TrialState

from kubenas.space import Assignment, SearchSpace
from kubenas.strategies._base import Observation, Strategy, trial_rng
from kubenas.strategies._optuna import RecordStudy
from kubenas.strategies.prior import Prior

GENERATION_KEY = f"{NSGAIISampler.__name__}:generation"


class Nsga2(Strategy):
    def __init__(
        self, space: SearchSpace, seed: int, population_size: int, crossover_prob: float
    ) -> None:
        super().__init__(space, seed)
        self.population_size = population_size
        self.crossover_prob = crossover_prob

    def _trials(
        self,
        records: RecordStudy,
        finished: Sequence[Observation],
        running: Sequence[Observation],
    ) -> list[FrozenTrial]:
        done = {o.index: o for o in finished}
        generation, complete = 0, 0
        trials = []
        for o in sorted([*finished, *running], key=lambda o: o.index):
            state = records.state_of(o) if o.index in done else TrialState.RUNNING
            trials.append(records.frozen(o, state, {GENERATION_KEY: generation}))
            if state == TrialState.COMPLETE:
                complete += 1
                if complete == self.population_size:
                    generation, complete = generation + 1, 0
        return trials

    def suggest(
        self,
        index: int,
        finished: Sequence[Observation],
        running: Sequence[Observation],
        taken: frozenset[str],
        prior: Prior | None = None,
    ) -> Assignment | None:
        """Screening scores pick the first trials (the warm-up); NSGA-II decides the rest."""
        warm = self.warm_start(prior, finished, running, taken)
        if warm is not None:
            return warm
        rng = trial_rng(self.seed, index)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = NSGAIISampler(
                population_size=self.population_size,
                crossover_prob=self.crossover_prob,
                seed=rng.getrandbits(31),
            )
        records = RecordStudy(self.space, finished)
        study = records.study(sampler, self._trials(records, finished, running))
        trial = study.ask(fixed_distributions=records.distributions)
        proposal = self.space.complete(trial.params, None)
        first = [True]

        def propose(r: random.Random) -> Assignment:
            if first[0]:
                first[0] = False
                return proposal
            return self.space.mutate(proposal, r)

        return self.first_untaken(propose, rng, taken)
