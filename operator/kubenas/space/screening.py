"""Which architectures a screen trial scores, decided from the spec alone.

The engine and the trainer both call :func:`screening_candidates`, so the screen trial needs
only the spec to know what to score, and its results need only the scores, in this order.
"""

from __future__ import annotations

import random

from kubenas.space.space import Assignment, SearchSpace

# Draws per wanted candidate before a space with few distinct architectures is given up on.
_DRAWS_PER_CANDIDATE = 50


def screening_candidates(space: SearchSpace, seed: int, count: int) -> list[Assignment]:
    """The whole space in canonical order when it holds no more than ``count`` architectures,
    else ``count`` distinct ones drawn with a stream fixed by the experiment seed."""
    size = space.size()
    if size is not None and size <= count:
        return [space.active(a) for a in space.grid(float_points=2)]
    rng = random.Random(f"kubenas/{seed}/screen")
    seen: set[str] = set()
    out: list[Assignment] = []
    for _ in range(count * _DRAWS_PER_CANDIDATE):
        candidate = space.active(space.sample(rng))
        key = space.key(candidate)
        if key not in seen:
            seen.add(key)
            out.append(candidate)
            if len(out) == count:
                break
    return out
