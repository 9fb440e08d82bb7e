"""TPE through Optuna's ask-and-tell, rebuilt from the trial records on every call.

The study is rebuilt by :mod:`kubenas.strategies._optuna` (multi-objective TPE when the search
has several objectives; feasibility-aware when it has constraints). ``constant_liar`` treats
running trials as bad results so parallel suggestions spread out.

Past ``_HISTORY_LIMIT`` finished trials the study holds the best ``_HISTORY_BEST`` and the most
recent rest: TPE's "good" group is at most 25 trials, so it stays exact, and the "bad" density
barely changes, while rebuilding the study stays well under a second at 10,000 records.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import optuna
from optuna.trial import TrialState

from kubenas.space import Assignment, SearchSpace
from kubenas.strategies._base import Observation, Strategy, trial_rng
from kubenas.strategies._optuna import RecordStudy
from kubenas.strategies.prior import Prior

_HISTORY_LIMIT = 1000
_HISTORY_BEST = 100


def _bounded(finished: Sequence[Observation]) -> list[Observation]:
    if len(finished) <= _HISTORY_LIMIT:
        return list(finished)
    scored = sorted(
        (o for o in finished if o.value is not None), key=lambda o: (-(o.value or 0.0), o.index)
    )
    best = {o.index for o in scored[:_HISTORY_BEST]}
    rest = [o for o in finished if o.index not in best][-(_HISTORY_LIMIT - len(best)) :]
    return sorted([*scored[:_HISTORY_BEST], *rest], key=lambda o: o.index)


class TreeParzen(Strategy):
    def __init__(
        self, space: SearchSpace, seed: int, startup_trials: int, constant_liar: bool
    ) -> None:
        super().__init__(space, seed)
        self.startup_trials = startup_trials
        self.constant_liar = constant_liar

    def suggest(
        self,
        index: int,
        finished: Sequence[Observation],
        running: Sequence[Observation],
        taken: frozenset[str],
        prior: Prior | None = None,
    ) -> Assignment | None:
        """Screening scores only pick the first trials (the warm-up); TPE's own density model
        decides the rest."""
        warm = self.warm_start(prior, finished, running, taken)
        if warm is not None:
            return warm
        rng = trial_rng(self.seed, index)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = optuna.samplers.TPESampler(
                seed=rng.getrandbits(31),
                n_startup_trials=self.startup_trials,
                constant_liar=self.constant_liar,
            )
        records = RecordStudy(self.space, finished)
        study = records.study(
            sampler,
            [records.frozen(o, records.state_of(o)) for o in _bounded(finished)]
            + [records.frozen(o, TrialState.RUNNING) for o in running],
        )
        trial = study.ask(fixed_distributions=records.distributions)
        return self.proposal_or_near(self.space.complete(trial.params, None), rng, taken)
