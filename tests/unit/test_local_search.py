"""Local search climbs from its centre and restarts at a local optimum instead of filling in the
basin around it; its centre is rebuilt from the records, parallel proposals included."""

from __future__ import annotations

import random
from collections.abc import Sequence

from kubenas.engine import planner
from kubenas.space import Assignment, SearchSpace
from kubenas.strategies import Observation
from kubenas.strategies.local_search import LocalSearch

from .conftest import make_spec


def _space() -> SearchSpace:
    return planner(make_spec("local-search")).space


def _distance(a: Assignment, b: Assignment) -> int:
    return sum(a[name] != b[name] for name in a)


def _observations(
    space: SearchSpace, trials: Sequence[tuple[Assignment, float]]
) -> list[Observation]:
    return [
        Observation(index=i, params=params, key=space.key(params), value=value)
        for i, (params, value) in enumerate(trials, start=1)
    ]


def _initial(space: SearchSpace, count: int) -> list[Assignment]:
    rng = random.Random(3)
    samples: dict[str, Assignment] = {}
    while len(samples) < count:
        a = space.sample(rng)
        samples.setdefault(space.key(a), a)
    return list(samples.values())


def test_a_local_optimum_restarts_the_climb_far_from_every_trial() -> None:
    space = _space()
    initial = _initial(space, 3)
    best = initial[0]
    tried = [(a, 0.5) for a in initial[1:]] + [(best, 0.9)]
    tried += [(n, 0.6) for n in space.neighbours(best)]  # every neighbour worse: a local optimum
    finished = _observations(space, tried)
    taken = frozenset(o.key for o in finished)
    restarts = 0
    for seed in range(10):
        proposal = LocalSearch(space, seed, initial_samples=3).suggest(
            len(finished) + 1, finished, [], taken
        )
        assert proposal is not None
        restarts += all(_distance(proposal, o.params) >= 2 for o in finished)
    # The old best-first search climbed on from the next-best trial, so every proposal was a
    # neighbour of a trial; a random restart is one by chance only (about 4 % here).
    assert restarts >= 8


def test_after_a_restart_the_climb_goes_on_around_the_new_start() -> None:
    space = _space()
    initial = _initial(space, 3)
    best = initial[0]
    tried = [(best, 0.9)] + [(a, 0.5) for a in initial[1:]]
    tried += [(n, 0.6) for n in space.neighbours(best)]
    restart = next(a for a in _initial(space, 50) if all(_distance(a, t) >= 2 for t, _ in tried))
    tried.append((restart, 0.3))  # worse than the optimum, yet the new climb's centre
    finished = _observations(space, tried)
    strategy = LocalSearch(space, seed=0, initial_samples=3)
    proposal = strategy.suggest(len(finished) + 1, finished, [], frozenset(o.key for o in finished))
    assert proposal is not None
    assert _distance(proposal, restart) == 1


def test_a_parallel_proposal_around_an_earlier_centre_is_part_of_the_climb() -> None:
    space = _space()
    initial = _initial(space, 3)
    first = initial[0]
    # Proposed together around `first`: one beats it and becomes the centre; the other, still
    # a neighbour of `first` only, beats that and must become the centre, not a restart.
    step, stale = space.neighbours(first)[0], space.neighbours(first)[-1]
    assert _distance(step, stale) == 2
    tried = [(first, 0.6)] + [(a, 0.5) for a in initial[1:]] + [(step, 0.7), (stale, 0.8)]
    finished = _observations(space, tried)
    strategy = LocalSearch(space, seed=0, initial_samples=3)
    assert strategy.centre(finished).key == space.key(stale)
    later = [*finished[:-1], Observation(len(finished), stale, space.key(stale), 0.65)]
    assert strategy.centre(later).key == space.key(step)  # worse than the centre: ignored
