"""bananas' acquisition: Thompson sampling looks beyond the basin of the best architectures,
where an upper confidence bound of the default weight stays inside it."""

from __future__ import annotations

import random

from kubenas.api.experiment import BayesianStrategy
from kubenas.engine import planner
from kubenas.space import Assignment, SearchSpace
from kubenas.strategies import Observation
from kubenas.strategies.predictor import PredictorGuidedSearch

from .conftest import make_spec


def _distance(a: Assignment, b: Assignment) -> int:
    return sum(a[name] != b[name] for name in a)


def _basin(space: SearchSpace) -> list[Observation]:
    """A centre and ten of its neighbours, all good, and four poor architectures elsewhere."""
    rng = random.Random(5)
    centre = space.sample(rng)
    trials = [(centre, 84.0)]
    trials += [(n, 80.0 + i * 0.3) for i, n in enumerate(space.neighbours(centre)[:10])]
    while len(trials) < 15:
        far = space.sample(rng)
        if _distance(far, centre) >= 4:
            trials.append((far, 60.0))
    return [
        Observation(index=i, params=p, key=space.key(p), value=v)
        for i, (p, v) in enumerate(trials, start=1)
    ]


def _proposals_leaving_the_basin(acquisition: str) -> int:
    """Of 30 proposals after the same trials, how many are not next to any basin trial."""
    space = planner(make_spec("bananas")).space
    finished = _basin(space)
    basin = finished[:11]
    taken = frozenset(o.key for o in finished)
    search = PredictorGuidedSearch(space, 3, 10, 100, acquisition, 0.5)  # type: ignore[arg-type]
    leaving = 0
    for index in range(16, 46):
        proposal = search.suggest(index, finished, [], taken)
        assert proposal is not None and space.key(proposal) not in taken
        leaving += all(_distance(proposal, o.params) >= 2 for o in basin)
    return leaving


def test_thompson_sampling_sometimes_leaves_the_basin() -> None:
    assert _proposals_leaving_the_basin("thompson") >= 3


def test_an_upper_confidence_bound_stays_in_the_basin() -> None:
    assert _proposals_leaving_the_basin("ucb") == 0


def test_exploration_weighs_the_bound_of_ucb_only() -> None:
    ucb = BayesianStrategy.model_validate(
        {"name": "bananas", "acquisition": "ucb", "exploration": 2.0}
    )
    assert ucb.ucb_weight == 2.0
    default = BayesianStrategy.model_validate({"name": "bananas"})
    assert default.acquisition == "thompson" and default.ucb_weight == 0.5
