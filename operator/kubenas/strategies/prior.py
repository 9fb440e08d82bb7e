"""What a screen trial's zero-cost scores tell the strategies.

Each proxy ranks the screened architectures; an ensemble averages the ranks, so proxies of any
scale combine. A score is a rank in [0, 1] (1 = best-screened); an architecture that was not
screened has no score and counts as average.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from kubenas.space import Assignment

UNSCREENED = 0.5


@dataclass(frozen=True)
class Prior:
    """The screened architectures best first, and each one's rank score by canonical key."""

    ranked: tuple[Assignment, ...]
    scores: Mapping[str, float]
    warmup: int

    def score(self, key: str) -> float:
        return self.scores.get(key, UNSCREENED)


def rank_scores(values: Sequence[float | None]) -> list[float]:
    """Each value's rank in [0, 1], larger value higher; a missing value (undefined proxy, e.g.
    no signal through the network) ranks lowest, and ties share their mean rank."""
    n = len(values)
    if n < 2:
        return [1.0] * n
    order = sorted(range(n), key=lambda i: (values[i] is not None, values[i] or 0.0))
    ranks = [0.0] * n
    start = 0
    while start < n:
        end = start
        while end + 1 < n and values[order[end + 1]] == values[order[start]]:
            end += 1
        for position in range(start, end + 1):
            ranks[order[position]] = (start + end) / 2 / (n - 1)
        start = end + 1
    return ranks


def build_prior(
    candidates: Sequence[Assignment],
    keys: Sequence[str],
    scores: Mapping[str, Sequence[float | None]],
    warmup: int,
) -> Prior:
    """The prior of a screen: every proxy's ranks averaged per candidate."""
    per_proxy = [rank_scores(values) for values in scores.values()]
    combined = [sum(ranks[i] for ranks in per_proxy) / len(per_proxy) for i in range(len(keys))]
    order = sorted(range(len(keys)), key=lambda i: (-combined[i], i))
    return Prior(
        ranked=tuple(candidates[i] for i in order),
        scores={keys[i]: combined[i] for i in range(len(keys))},
        warmup=warmup,
    )
