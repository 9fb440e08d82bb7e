"""An Optuna study rebuilt from the trial records on every call, for Optuna's samplers.

No Optuna storage outlives a call: the study is re-created from the observations, so a restarted
operator suggests what a long-lived one would. Running trials enter as RUNNING. In a
multi-objective search every objective is a value of the trial; with constraints each finished
trial carries its violation as an Optuna constraint (> 0: infeasible), which TPE and NSGA-II
honour by ranking feasible trials first. A trial never trained because it was infeasible has
no objective values; it enters with the worst value seen in each, which only matters among
infeasible trials.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.storages import InMemoryStorage
from optuna.trial import FrozenTrial, TrialState

from kubenas.space import Categorical, Float, Param, SearchSpace
from kubenas.strategies._base import Observation

optuna.logging.set_verbosity(optuna.logging.WARNING)

_CLOCK = datetime(2000, 1, 1)  # Optuna wants timestamps; its samplers ignore them, so a
# constant keeps the rebuilt study identical however often it is rebuilt
VIOLATION_KEY = "constraints:violation"  # Optuna's per-constraint system attribute


class RecordStorage(InMemoryStorage):
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


def distribution(param: Param) -> BaseDistribution:
    if isinstance(param, Categorical):
        return CategoricalDistribution(param.choices)
    if isinstance(param, Float):
        return FloatDistribution(param.low, param.high, log=param.log)
    step = None if param.log else param.step
    return IntDistribution(param.low, param.high, log=param.log, step=step or 1)


def objective_count(finished: Sequence[Observation]) -> int:
    """How many objectives the search has: that of any trial reporting them all, else one."""
    return next((len(o.objectives) for o in finished if len(o.objectives) > 1), 1)


class RecordStudy:
    """Builds the study of one suggestion from the observations."""

    def __init__(self, space: SearchSpace, finished: Sequence[Observation]) -> None:
        self.space = space
        self.distributions = {p.name: distribution(p) for p in space.params}
        self.objectives = objective_count(finished)
        self.constrained = any(o.violation > 0 for o in finished)
        scored = [o.objectives for o in finished if len(o.objectives) == self.objectives]
        if self.objectives == 1:
            scored = [(o.value,) for o in finished if o.value is not None]
        self.worst = tuple(min((p[i] for p in scored), default=0.0) for i in range(self.objectives))

    def frozen(
        self,
        observation: Observation,
        state: TrialState,
        system_attrs: Mapping[str, Any] | None = None,
    ) -> FrozenTrial:
        params = self.space.active(observation.params)
        attrs = dict(system_attrs or {})
        value: float | None = None
        values: list[float] | None = None
        if state == TrialState.COMPLETE:
            if self.constrained:
                attrs[VIOLATION_KEY] = observation.violation
            if self.objectives == 1:
                value = self.worst[0] if observation.value is None else observation.value
            else:
                given = observation.objectives
                values = list(given) if len(given) == self.objectives else list(self.worst)
        return FrozenTrial(
            number=-1,
            trial_id=-1,
            state=state,
            value=value,
            values=values,
            datetime_start=_CLOCK,
            datetime_complete=None if state == TrialState.RUNNING else _CLOCK,
            params=params,
            distributions={name: self.distributions[name] for name in params},
            user_attrs={},
            system_attrs=attrs,
            intermediate_values={},
        )

    def state_of(self, observation: Observation) -> TrialState:
        """COMPLETE for a trial with a value or a measured violation, FAIL for a crash."""
        if observation.value is not None or observation.violation > 0:
            return TrialState.COMPLETE
        return TrialState.FAIL

    def study(self, sampler: optuna.samplers.BaseSampler, trials: list[FrozenTrial]) -> Any:
        study = optuna.create_study(
            storage=RecordStorage(), directions=["maximize"] * self.objectives, sampler=sampler
        )
        study.add_trials(trials)
        return study
