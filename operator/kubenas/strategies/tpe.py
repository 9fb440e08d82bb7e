"""TPE through Optuna's ask-and-tell, rebuilt from the trial records on every call.

No Optuna storage outlives a call: the study is re-created from the records, so a restarted
operator suggests what a long-lived one would. Running trials enter as RUNNING, which
``constant_liar`` treats as bad results so parallel suggestions spread out.

Past ``_HISTORY_LIMIT`` finished trials the study holds the best ``_HISTORY_BEST`` and the most
recent rest: TPE's "good" group is at most 25 trials, so it stays exact, and the "bad" density
barely changes, while rebuilding the study stays well under a second at 10,000 records.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Sequence
from datetime import datetime

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.storages import InMemoryStorage
from optuna.trial import FrozenTrial, TrialState

from kubenas.space import Assignment, Categorical, Float, Param, SearchSpace
from kubenas.strategies._base import Observation, Strategy, trial_rng
from kubenas.strategies.prior import Prior

optuna.logging.set_verbosity(optuna.logging.WARNING)

_HISTORY_LIMIT = 1000
_CLOCK = datetime(2000, 1, 1)  # Optuna wants timestamps; TPE ignores them, so a constant keeps
# the rebuilt study identical however often it is rebuilt
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


class _RecordStorage(InMemoryStorage):
    """In-memory storage that adopts the trials it is given instead of deep-copying them.

    The trials are built here from records and never touched again, so the copy Optuna makes to
    protect callers is pure cost: it was half of each suggestion's time at 100 trials.
    """

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        if template_trial is None:
            return super().create_new_trial(study_id, None)
        with self._lock:
            self._check_study_id(study_id)
            trial_id = self._max_trial_id + 1
            self._max_trial_id = trial_id
            template_trial.number = len(self._studies[study_id].trials)
            template_trial._trial_id = trial_id
            self._trial_id_to_study_id_and_number[trial_id] = (study_id, template_trial.number)
            self._studies[study_id].trials.append(template_trial)
            self._update_cache(trial_id, study_id)
            return trial_id


def _distribution(param: Param) -> BaseDistribution:
    if isinstance(param, Categorical):
        return CategoricalDistribution(param.choices)
    if isinstance(param, Float):
        return FloatDistribution(param.low, param.high, log=param.log)
    step = None if param.log else param.step
    return IntDistribution(param.low, param.high, log=param.log, step=step or 1)


class TreeParzen(Strategy):
    def __init__(
        self, space: SearchSpace, seed: int, startup_trials: int, constant_liar: bool
    ) -> None:
        super().__init__(space, seed)
        self.startup_trials = startup_trials
        self.constant_liar = constant_liar
        self.distributions = {p.name: _distribution(p) for p in space.params}

    def _frozen(self, observation: Observation, state: TrialState) -> FrozenTrial:
        params = self.space.active(observation.params)
        return FrozenTrial(
            number=-1,
            trial_id=-1,
            state=state,
            value=observation.value if state == TrialState.COMPLETE else None,
            values=None,
            datetime_start=_CLOCK,
            datetime_complete=None if state == TrialState.RUNNING else _CLOCK,
            params=params,
            distributions={name: self.distributions[name] for name in params},
            user_attrs={},
            system_attrs={},
            intermediate_values={},
        )

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
        study = optuna.create_study(storage=_RecordStorage(), direction="maximize", sampler=sampler)
        study.add_trials(
            [
                self._frozen(o, TrialState.COMPLETE if o.value is not None else TrialState.FAIL)
                for o in _bounded(finished)
            ]
            + [self._frozen(o, TrialState.RUNNING) for o in running]
        )
        trial = study.ask(fixed_distributions=self.distributions)
        proposal = self.space.complete(trial.params, None)
        first = [True]

        def propose(r: random.Random) -> Assignment:
            if first[0]:
                first[0] = False
                return proposal
            return self.space.mutate(proposal, r)

        return self.first_untaken(propose, rng, taken)
