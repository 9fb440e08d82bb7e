"""Strategy ``oneshot``: the candidates are the architectures a supernet trial derived.

The weight sharing happens in the supernet trial (the trainer); what is left for the search is
to train the derived architectures standalone, best supernet score first. The engine hands them
over as a :class:`Prior` whose ranked list is the derived list.
"""

from __future__ import annotations

from collections.abc import Sequence

from kubenas.space import Assignment, SearchSpace
from kubenas.strategies._base import Observation, Strategy
from kubenas.strategies.prior import Prior, rank_scores


def derived_prior(space: SearchSpace, derived: Sequence[tuple[Assignment, float]]) -> Prior:
    """The supernet's derived architectures (best first, with their supernet scores) as the
    prior every candidate comes from."""
    ranked = tuple(space.active(params) for params, _ in derived)
    ranks = rank_scores([score for _, score in derived])
    return Prior(
        ranked=ranked,
        scores={space.key(a): rank for a, rank in zip(ranked, ranks, strict=True)},
        warmup=len(ranked),
    )


class DerivedCandidates(Strategy):
    """Trains the derived architectures in the supernet's order and nothing else: once they are
    all taken the search is done (the engine says so)."""

    def suggest(
        self,
        index: int,
        finished: Sequence[Observation],
        running: Sequence[Observation],
        taken: frozenset[str],
        prior: Prior | None = None,
    ) -> Assignment | None:
        # The prior's warm-up is the whole derived list, so it ends when they are all taken.
        return self.warm_start(prior, finished, running, taken)
