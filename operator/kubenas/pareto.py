"""Multi-objective arithmetic for the decision loop, on points where larger is better everywhere.

Pure Python, so the operator can call it on every reconcile without numpy or optuna. Crowding
distance is NSGA-II's (Deb, Pratap, Agarwal and Meyarivan 2002, "A fast and elitist
multiobjective genetic algorithm: NSGA-II"); the augmented Chebyshev scalarisation and the
simplex weights are ParEGO's (Knowles 2006, "ParEGO: a hybrid algorithm with on-line landscape
approximation for expensive multiobjective optimization problems").
"""

from __future__ import annotations

import bisect
import itertools
import math
import operator
import random
from collections.abc import Sequence

Point = tuple[float, ...]


def dominates(a: Point, b: Point) -> bool:
    """a is at least as good as b in every objective and better in one."""
    better = False
    for x, y in zip(a, b, strict=True):
        if x < y:
            return False
        better = better or x > y
    return better


def _covers(a: Point, b: Point) -> bool:
    """a dominates b or equals it: either way b adds nothing to a front holding a.

    Unchecked lengths, for speed: callers check them once with `_dimensions`.
    """
    return all(map(operator.ge, a, b))


def _dimensions(points: Sequence[Point]) -> int:
    """The points' common length; mixing lengths is a caller's bug, so it raises."""
    lengths = {len(p) for p in points}
    if len(lengths) > 1:
        raise ValueError(f"points of different lengths: {sorted(lengths)}")
    return lengths.pop() if lengths else 0


def non_dominated(points: Sequence[Point]) -> list[int]:
    """Indices, in input order, of the points no other point dominates; of duplicates the first."""
    dimensions = _dimensions(points)
    # In descending lexicographic order a point can only be covered by one before it, and a
    # covered point's coverer is itself covered by a kept one, so only kept points are checked.
    order = sorted(range(len(points)), key=lambda i: (tuple(map(operator.neg, points[i])), i))
    kept: list[int] = []
    if dimensions == 2:
        # In 2-D the kept points have rising y, so the last one decides.
        for i in order:
            if not kept or not _covers(points[kept[-1]], points[i]):
                kept.append(i)
    else:
        for i in order:
            if not any(_covers(points[k], points[i]) for k in kept):
                kept.append(i)
    return sorted(kept)


def hypervolume(points: Sequence[Point], reference: Point) -> float:
    """Exact volume of the region the points dominate and which dominates the reference.

    A point not strictly better than the reference in every coordinate encloses nothing.
    """
    if not reference or _dimensions([*points, reference]) != len(reference):
        raise ValueError("the reference and every point need the same, non-zero, length")
    shifted = (tuple(map(operator.sub, p, reference)) for p in points)
    offsets = [offset for offset in shifted if min(offset) > 0]
    return _volume(offsets) if offsets else 0.0


def _volume(points: list[Point]) -> float:
    """Hypervolume against the origin of points that are positive in every coordinate."""
    dimensions = len(points[0])
    if dimensions == 1:
        return max(p[0] for p in points)
    if dimensions == 2:
        return _area(points)
    if dimensions == 3:
        return _volume_3d(points)
    return _sliced(points)


def _area(points: list[Point]) -> float:
    """2-D sweep: right to left, each point that rises above the rest adds a strip."""
    area = 0.0
    top = 0.0
    for x, y in sorted(points, reverse=True):
        if y > top:
            area += x * (y - top)
            top = y
    return area


class _Staircase:
    """A 2-D non-dominated set under insertion, keeping its dominated area up to date."""

    def __init__(self) -> None:
        self.xs: list[float] = []  # ascending, so ys descending
        self.ys: list[float] = []
        self.area = 0.0

    def insert(self, x: float, y: float) -> None:
        right = bisect.bisect_left(self.xs, x)
        if right < len(self.xs) and self.ys[right] >= y:
            return  # the first point at or right of x covers the new one
        stop = bisect.bisect_right(self.xs, x)
        start = stop
        while start > 0 and self.ys[start - 1] <= y:
            start -= 1
        # The new point adds its rectangle less what the old staircase already held under it:
        # full height left of `left`, then the points it covers, then the next point's height.
        left = self.xs[start - 1] if start > 0 else 0.0
        held = 0.0
        edge = left
        for cx, cy in zip(self.xs[start:stop], self.ys[start:stop], strict=True):
            held += (cx - edge) * cy
            edge = cx
        below = self.ys[stop] if stop < len(self.ys) else 0.0
        held += (x - edge) * below
        self.area += (x - left) * y - held
        self.xs[start:stop] = [x]
        self.ys[start:stop] = [y]


def _volume_3d(points: list[Point]) -> float:
    """Slices along z, top down, each slab's section kept as an incremental 2-D staircase."""
    ordered = sorted(points, key=lambda p: p[2], reverse=True)
    section = _Staircase()
    volume = 0.0
    for i, (x, y, z) in enumerate(ordered):
        section.insert(x, y)
        below = ordered[i + 1][2] if i + 1 < len(ordered) else 0.0
        volume += section.area * (z - below)
    return volume


def _sliced(points: list[Point]) -> float:
    """Slices along the last axis (HSO); a section is recomputed only when its front changes."""
    ordered = sorted(points, key=lambda p: p[-1], reverse=True)
    front: list[Point] = []
    section = 0.0
    volume = 0.0
    for i, p in enumerate(ordered):
        projected = p[:-1]
        if not any(_covers(q, projected) for q in front):
            front = [q for q in front if not _covers(projected, q)]
            front.append(projected)
            section = _volume(front)
        below = ordered[i + 1][-1] if i + 1 < len(ordered) else 0.0
        volume += section * (p[-1] - below)
    return volume


def crowding_distances(points: Sequence[Point]) -> list[float]:
    """NSGA-II crowding distance: how much room each point has along the front; extremes inf."""
    count = len(points)
    distances = [0.0] * count
    for axis in range(_dimensions(points)):
        order = sorted(range(count), key=lambda i: (points[i][axis], i))
        distances[order[0]] = distances[order[-1]] = math.inf
        width = points[order[-1]][axis] - points[order[0]][axis]
        if width == 0:
            continue
        for before, here, after in zip(order, order[1:], order[2:], strict=False):
            distances[here] += (points[after][axis] - points[before][axis]) / width
    return distances


def _extremes(points: Sequence[Point], members: list[int]) -> list[int]:
    """Best then worst member of each objective in turn, lower index on ties, no repeats."""
    found: list[int] = []
    for axis in range(len(points[members[0]])):
        best = max(members, key=lambda i: (points[i][axis], -i))
        worst = min(members, key=lambda i: (points[i][axis], i))
        found += [i for i in (best, worst) if i not in found]
    return found


def bounded_front(points: Sequence[Point], limit: int) -> list[int]:
    """At most `limit` non-dominated indices (input order) that keep the front's extent and shape.

    Extremes always stay; otherwise the most crowded member goes, one at a time.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    members = non_dominated(points)
    if len(members) <= limit:
        return members
    extremes = _extremes(points, members)
    if len(extremes) >= limit:
        return sorted(extremes[:limit])
    protected = set(extremes)
    while len(members) > limit:
        distances = crowding_distances([points[i] for i in members])
        # Smallest distance goes; on a tie the higher index goes, so the lower one is kept.
        drop = min(
            (k for k, i in enumerate(members) if i not in protected),
            key=lambda k: (distances[k], -members[k]),
        )
        del members[drop]
    return members


def ranked(points: Sequence[Point]) -> list[Point]:
    """Each coordinate replaced by its rank among the points, scaled to [0, 1] (1 best, ties at
    their mean rank): a scale no outlier can squash, unlike min-max normalisation, where a
    handful of broken networks at 10 % accuracy leave every useful one within the top tenth."""
    if not points:
        return []
    count = len(points)
    columns: list[list[float]] = []
    for values in zip(*points, strict=True):
        order = sorted(range(count), key=values.__getitem__)
        rank = [0.0] * count
        start = 0
        while start < count:
            end = start
            while end + 1 < count and values[order[end + 1]] == values[order[start]]:
                end += 1
            for k in range(start, end + 1):
                rank[order[k]] = (start + end) / 2 / (count - 1) if count > 1 else 1.0
            start = end + 1
        columns.append(rank)
    return [tuple(column[i] for column in columns) for i in range(count)]


def augmented_chebyshev(point: Point, weights: Point, rho: float = 0.05) -> float:
    """ParEGO's scalarisation of a normalised point: larger is better and 0 is the ideal.

    The max term reaches non-convex parts of the front; the small sum term breaks its ties.
    """
    gaps = [w * (1.0 - x) for x, w in zip(point, weights, strict=True)]
    return -(max(gaps) + rho * sum(gaps))


def random_weights(rng: random.Random, dimensions: int) -> Point:
    """Weights drawn uniformly from the simplex, from the gaps between sorted uniforms."""
    if dimensions < 1:
        raise ValueError(f"dimensions must be at least 1, got {dimensions}")
    cuts = [0.0, *sorted(rng.random() for _ in range(dimensions - 1)), 1.0]
    return tuple(b - a for a, b in itertools.pairwise(cuts))
