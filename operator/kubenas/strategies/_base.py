"""The strategy interface: a pure function of past trials, the seed and the trial index."""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from kubenas.pareto import augmented_chebyshev, random_weights, ranked
from kubenas.space import Assignment, SearchSpace
from kubenas.strategies.prior import Prior

# Proposals a strategy may retry before falling back to the space's canonical order.
_RANDOM_RETRIES = 64
# With screening scores, a strategy's proposal is the best-screened of this many new ones.
PRIOR_POOL = 8


@dataclass(frozen=True, slots=True)
class Observation:
    """One trial as a strategy sees it. ``value`` is the main objective, oriented so that
    larger is better; it is None for a trial that failed, has not finished or was never trained
    (infeasible). ``objectives`` holds every objective, oriented, in a multi-objective search
    (empty when the trial did not report them all); ``violation`` is how far the trial lies
    outside the constraints (0: feasible)."""

    index: int
    params: Assignment
    key: str
    value: float | None
    objectives: tuple[float, ...] = ()
    violation: float = 0.0


def fitness(finished: Sequence[Observation], rng: random.Random) -> list[Observation]:
    """The observations with ``value`` made one number to rank by, for strategies that learn
    from a scalar. In a multi-objective search: a ParEGO scalarisation of the objectives, each
    normalised by rank among the feasible trials, with weights drawn from ``rng`` (one draw per
    suggestion, so successive suggestions aim at different parts of the front). With
    constraints: Deb's rule (every feasible trial ranks above every infeasible one, and among
    those less violation is better). Without either it returns ``finished`` unchanged."""
    multi = any(len(o.objectives) > 1 for o in finished)
    if not multi and not any(o.violation > 0 for o in finished):
        return list(finished)
    feasible = [o for o in finished if o.violation == 0 and o.value is not None]
    scalar: dict[int, float] = {}
    if multi:
        scored = [o for o in feasible if o.objectives]
        if scored:
            norms = ranked([o.objectives for o in scored])
            weights = random_weights(rng, len(norms[0]))
            for o, norm in zip(scored, norms, strict=True):
                scalar[o.index] = augmented_chebyshev(norm, weights)
    else:
        scalar = {o.index: o.value for o in feasible if o.value is not None}
    low = min(scalar.values(), default=0.0)
    spread = (max(scalar.values(), default=0.0) - low) or 1.0
    floor = low - spread  # every infeasible trial ranks below this
    out = []
    for o in finished:
        if o.violation > 0:
            value: float | None = floor - spread * o.violation
        else:
            value = scalar.get(o.index)
        out.append(replace(o, value=value))
    return out


def trial_rng(seed: int, index: int, salt: str = "") -> random.Random:
    """The random stream of one suggestion: fixed by (experiment seed, trial index) alone, so a
    restarted controller draws exactly what a long-lived one would have drawn."""
    return random.Random(f"kubenas/{seed}/{index}/{salt}")


class Strategy(ABC):
    """Proposes the architecture of trial ``index``; must not return a key in ``taken``."""

    def __init__(self, space: SearchSpace, seed: int) -> None:
        self.space = space
        self.seed = seed

    @abstractmethod
    def suggest(
        self,
        index: int,
        finished: Sequence[Observation],
        running: Sequence[Observation],
        taken: frozenset[str],
        prior: Prior | None = None,
    ) -> Assignment | None:
        """The next architecture, or None when every architecture has been tried. ``prior``
        holds the screening's scores when the experiment has a screen stage."""

    def warm_start(
        self,
        prior: Prior | None,
        finished: Sequence[Observation],
        running: Sequence[Observation],
        taken: frozenset[str],
    ) -> Assignment | None:
        """The best-screened untried architecture while the search has fewer trials than the
        screening's ``warmup``; None otherwise (the strategy decides)."""
        if prior is None or len(finished) + len(running) >= prior.warmup:
            return None
        return next((a for a in prior.ranked if self.space.key(a) not in taken), None)

    def proposal_or_near(
        self, proposal: Assignment, rng: random.Random, taken: frozenset[str]
    ) -> Assignment | None:
        """A sampler's ``proposal`` when it is new, else the first new mutation of it (then
        :meth:`first_untaken`'s fallbacks)."""
        first = [True]

        def propose(r: random.Random) -> Assignment:
            if first[0]:
                first[0] = False
                return proposal
            return self.space.mutate(proposal, r)

        return self.first_untaken(propose, rng, taken)

    def first_untaken(
        self,
        propose: Callable[[random.Random], Assignment],
        rng: random.Random,
        taken: frozenset[str],
        prior: Prior | None = None,
    ) -> Assignment | None:
        """Retry ``propose`` until it gives a new architecture, then fall back to random draws and
        finally the space's canonical order, so a finite space is used up before giving up.
        With a prior, the best-screened of up to ``PRIOR_POOL`` new proposals (a filter)."""
        pool: dict[str, Assignment] = {}
        for attempt in range(2 * _RANDOM_RETRIES):
            candidate = propose(rng) if attempt < _RANDOM_RETRIES else self.space.sample(rng)
            key = self.space.key(candidate)
            if key in taken:
                continue
            if prior is None:
                return candidate
            pool.setdefault(key, candidate)
            if len(pool) == PRIOR_POOL:
                break
        if pool and prior is not None:
            best = max(pool, key=prior.score)  # first proposed wins ties
            return pool[best]
        size = self.space.size()
        if size is not None and len(taken) >= size:
            return None
        for candidate in self.space.grid(float_points=2):
            if self.space.key(candidate) not in taken:
                return candidate
        return None
