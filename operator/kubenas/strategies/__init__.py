"""Search strategies behind one interface; :func:`make_strategy` builds one from the spec."""

from kubenas.api.experiment import (
    BayesianStrategy,
    EvolutionStrategy,
    GridStrategy,
    LocalSearchStrategy,
    Nsga2Strategy,
    OneshotStrategy,
    ReinforceStrategy,
    StrategySpec,
    TpeStrategy,
)
from kubenas.space import SearchSpace
from kubenas.strategies._base import Observation, Strategy, trial_rng
from kubenas.strategies.evolution import RegularizedEvolution
from kubenas.strategies.grid import GridSearch
from kubenas.strategies.local_search import LocalSearch
from kubenas.strategies.oneshot import DerivedCandidates, derived_prior
from kubenas.strategies.predictor import PredictorGuidedSearch
from kubenas.strategies.prior import Prior
from kubenas.strategies.random_search import RandomSearch
from kubenas.strategies.reinforce import Reinforce

STRATEGY_NAMES = (
    "random",
    "grid",
    "evolution",
    "tpe",
    "local-search",
    "bananas",
    "reinforce",
    "nsga2",
)
# Strategy ``oneshot`` is not among them: its candidates come from a supernet trial, not from
# proposals (tests/unit/test_oneshot.py holds it to the same contract).


def make_strategy(spec: StrategySpec, space: SearchSpace, seed: int) -> Strategy:
    if isinstance(spec, GridStrategy):
        return GridSearch(space, seed, spec.float_points)
    if isinstance(spec, EvolutionStrategy):
        return RegularizedEvolution(space, seed, spec.population_size, spec.sample_size)
    if isinstance(spec, TpeStrategy):
        from kubenas.strategies.tpe import TreeParzen  # optuna is slow to import

        return TreeParzen(space, seed, spec.startup_trials, spec.constant_liar)
    if isinstance(spec, LocalSearchStrategy):
        return LocalSearch(space, seed, spec.initial_samples)
    if isinstance(spec, BayesianStrategy):
        return PredictorGuidedSearch(
            space, seed, spec.initial_samples, spec.candidates, spec.acquisition, spec.ucb_weight
        )
    if isinstance(spec, Nsga2Strategy):
        from kubenas.strategies.nsga2 import Nsga2  # optuna is slow to import

        return Nsga2(space, seed, spec.population_size, spec.crossover_prob)
    if isinstance(spec, OneshotStrategy):
        return DerivedCandidates(space, seed)
    if isinstance(spec, ReinforceStrategy):
        return Reinforce(space, seed, spec.learning_rate, spec.baseline_momentum)
    return RandomSearch(space, seed)


__all__ = [
    "STRATEGY_NAMES",
    "Observation",
    "Prior",
    "Strategy",
    "derived_prior",
    "make_strategy",
    "trial_rng",
]
