"""Steady-state NSGA-II (Deb et al. 2002; Durillo et al. 2009) through Optuna's sampler.

The first ``population_size`` finished trials are generation 0 (random). After that every
finished trial is a generation of its own, so each new child is bred from the elite of the
previous elite plus the newest trial (a (mu + 1) scheme): a trial costs minutes of GPU, and
waiting for a whole generation before using what it taught wastes them. Generations are
recomputed from the records in index order, so a restarted controller rebuilds the same
parents. Parents are chosen by non-dominated rank and crowding distance, feasible before
infeasible and less violation first (Deb's constrained domination); children come from
Optuna's uniform crossover (with ``crossover_prob``) and mutation.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.samplers import NSGAIISampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from kubenas.space import Assignment, SearchSpace
from kubenas.strategies._base import Observation, Strategy, trial_rng
from kubenas.strategies._optuna import RecordStudy
from kubenas.strategies.prior import Prior


class _SteadyState(NSGAIISampler):
    """Optuna's NSGA-II, told the generation of the trial it samples for (see the module)."""

    def __init__(self, generation: int, **settings: Any) -> None:
        super().__init__(**settings)
        self.generation = generation

    def get_trial_generation(self, study: Study, trial: FrozenTrial) -> int:
        return self.generation


# The system attribute Optuna files each trial's generation under; it is named after the
# sampler's class, so it must be this subclass's, or Optuna finds no population to breed from.
GENERATION_KEY = _SteadyState._get_generation_key()


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
    ) -> tuple[list[FrozenTrial], int]:
        """The study's trials with their generations, and the generation of the next one."""
        done = {o.index: o for o in finished}
        generation, complete = 0, 0
        trials = []
        for o in sorted([*finished, *running], key=lambda o: o.index):
            state = records.state_of(o) if o.index in done else TrialState.RUNNING
            trials.append(records.frozen(o, state, {GENERATION_KEY: generation}))
            if state == TrialState.COMPLETE:
                complete += 1
                if generation > 0 or complete == self.population_size:
                    generation += 1
        return trials, generation

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
        records = RecordStudy(self.space, finished)
        trials, generation = self._trials(records, finished, running)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = _SteadyState(
                generation,
                population_size=self.population_size,
                crossover_prob=self.crossover_prob,
                seed=rng.getrandbits(31),
            )
        study = records.study(sampler, trials)
        trial = study.ask(fixed_distributions=records.distributions)
        return self.proposal_or_near(self.space.complete(trial.params, None), rng, taken)
