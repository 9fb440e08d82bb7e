"""Pareto arithmetic: hand-computed cases, and random sets against brute force and optuna."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from optuna._hypervolume import compute_hypervolume

from kubenas.pareto import (
    Point,
    augmented_chebyshev,
    bounded_front,
    crowding_distances,
    dominates,
    hypervolume,
    non_dominated,
    random_weights,
    ranked,
)


def _random_points(rng: random.Random, count: int, dimensions: int) -> list[Point]:
    """Uniform points, a third snapped to a coarse grid (ties) and a few repeated (duplicates)."""
    points: list[Point] = []
    for _ in range(count):
        p = tuple(rng.random() for _ in range(dimensions))
        points.append(tuple(round(x, 1) for x in p) if rng.random() < 0.3 else p)
    points += rng.sample(points, count // 10)
    rng.shuffle(points)
    return points


def _sphere(rng: random.Random, count: int, dimensions: int) -> list[Point]:
    """Points on the positive unit sphere: every one of them is on the front."""
    points: list[Point] = []
    for _ in range(count):
        g = [abs(rng.gauss(0.0, 1.0)) + 1e-9 for _ in range(dimensions)]
        norm = math.sqrt(sum(x * x for x in g))
        points.append(tuple(x / norm for x in g))
    return points


def _optuna_hypervolume(points: list[Point], reference: Point) -> float:
    """Optuna minimises, so negate; it refuses points worse than the reference, which add 0."""
    inside = [p for p in points if all(x >= r for x, r in zip(p, reference, strict=True))]
    if not inside:
        return 0.0
    return float(compute_hypervolume(-np.array(inside), -np.array(reference)))


def _brute_non_dominated(points: list[Point]) -> list[int]:
    return [
        i
        for i, p in enumerate(points)
        if not any(dominates(q, p) for q in points) and p not in points[:i]
    ]


def test_dominates_needs_one_strict_improvement() -> None:
    assert dominates((2.0, 1.0), (1.0, 1.0))
    assert not dominates((1.0, 1.0), (1.0, 1.0))
    assert not dominates((2.0, 0.0), (1.0, 1.0))
    with pytest.raises(ValueError):
        dominates((1.0,), (1.0, 2.0))


def test_hypervolume_of_hand_computed_sets() -> None:
    assert hypervolume([(1.0, 3.0), (2.0, 2.0), (3.0, 1.0)], (0.0, 0.0)) == 6.0
    assert hypervolume([(2.0, 3.0)], (1.0, 1.0)) == 2.0
    assert hypervolume([(3.0,), (5.0,)], (1.0,)) == 4.0
    assert hypervolume([(2.0, 1.0, 1.0), (1.0, 2.0, 1.0)], (0.0, 0.0, 0.0)) == 3.0
    assert hypervolume([(1.0, 1.0, 1.0, 1.0), (2.0, 2.0, 2.0, 2.0)], (0.0,) * 4) == 16.0
    assert hypervolume([], (0.0, 0.0)) == 0.0


def test_mixed_lengths_are_refused() -> None:
    with pytest.raises(ValueError):
        hypervolume([(1.0, 2.0), (1.0, 2.0, 3.0)], (0.0, 0.0))
    with pytest.raises(ValueError):
        hypervolume([(1.0, 2.0)], ())
    with pytest.raises(ValueError):
        non_dominated([(1.0, 2.0), (1.0,)])
    with pytest.raises(ValueError):
        crowding_distances([(1.0, 2.0), (1.0,)])


def test_points_not_beyond_the_reference_enclose_nothing() -> None:
    assert hypervolume([(-1.0, 5.0), (0.0, 4.0), (5.0, 0.0)], (0.0, 0.0)) == 0.0
    assert hypervolume([(1.0, 3.0), (0.0, 9.0), (9.0, -1.0)], (0.0, 0.0)) == 3.0


def test_dominated_and_duplicate_points_add_nothing() -> None:
    front = [(1.0, 3.0, 2.0), (2.0, 2.0, 2.0), (3.0, 1.0, 1.0)]
    volume = hypervolume(front, (0.0, 0.0, 0.0))
    assert hypervolume([*front, *front, (1.0, 1.0, 1.0)], (0.0, 0.0, 0.0)) == volume


@pytest.mark.parametrize("dimensions", [2, 3, 4])
@pytest.mark.parametrize("seed", range(6))
def test_hypervolume_matches_optuna_on_random_sets(dimensions: int, seed: int) -> None:
    rng = random.Random(seed * 10 + dimensions)
    count = {2: 300, 3: 120, 4: 50}[dimensions]
    points = _random_points(rng, count, dimensions)
    reference = tuple(round(rng.uniform(0.0, 0.3), 1) for _ in range(dimensions))
    assert any(not all(x > r for x, r in zip(p, reference, strict=True)) for p in points)
    expected = _optuna_hypervolume(points, reference)
    assert expected > 0
    assert hypervolume(points, reference) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("dimensions", [3, 4])
def test_hypervolume_matches_optuna_when_every_point_is_on_the_front(dimensions: int) -> None:
    points = _sphere(random.Random(dimensions), 60, dimensions)
    reference = (0.0,) * dimensions
    expected = _optuna_hypervolume(points, reference)
    assert hypervolume(points, reference) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("dimensions", [1, 2, 3, 4])
def test_non_dominated_matches_brute_force(dimensions: int) -> None:
    rng = random.Random(dimensions)
    for _ in range(20):
        points = _random_points(rng, rng.randint(1, 60), dimensions)
        assert non_dominated(points) == _brute_non_dominated(points)


def test_non_dominated_keeps_the_first_of_duplicates() -> None:
    points = [(1.0, 1.0), (2.0, 0.0), (1.0, 1.0), (0.0, 0.0), (2.0, 0.0)]
    assert non_dominated(points) == [0, 1]
    assert non_dominated([]) == []


def test_crowding_by_hand() -> None:
    distances = crowding_distances([(0.0, 4.0), (1.0, 3.0), (2.0, 2.0), (4.0, 0.0)])
    assert distances == [math.inf, 1.0, 1.5, math.inf]
    assert crowding_distances([(1.0, 1.0), (2.0, 0.0)]) == [math.inf, math.inf]
    assert crowding_distances([]) == []


def test_crowding_gives_the_extremes_of_every_objective_infinity() -> None:
    points = _sphere(random.Random(0), 30, 3)
    distances = crowding_distances(points)
    for axis in range(3):
        values = [p[axis] for p in points]
        assert distances[values.index(max(values))] == math.inf
        assert distances[values.index(min(values))] == math.inf
    assert sum(d == math.inf for d in distances) <= 6


def test_bounded_front_drops_the_most_crowded_member() -> None:
    points = [(0.0, 10.0), (5.0, 5.0), (5.1, 4.9), (10.0, 0.0), (1.0, 1.0)]
    assert bounded_front(points, 3) == [0, 1, 3]
    assert bounded_front(points, 4) == [0, 1, 2, 3]
    assert bounded_front(points, 10) == [0, 1, 2, 3]


def test_bounded_front_breaks_ties_by_keeping_the_lower_index() -> None:
    points = [(0.0, 4.0), (1.0, 3.0), (2.0, 2.0), (3.0, 1.0), (4.0, 0.0)]
    # Evenly spaced, the middle three tie and the highest index goes; then 2 has more room than 1.
    assert bounded_front(points, 4) == [0, 1, 2, 4]
    assert bounded_front(points, 3) == [0, 2, 4]


@pytest.mark.parametrize("dimensions", [2, 3, 4])
def test_bounded_front_keeps_extremes_within_the_limit(dimensions: int) -> None:
    rng = random.Random(dimensions)
    for _ in range(10):
        points = _sphere(rng, rng.randint(10, 60), dimensions)
        points += _random_points(rng, 20, dimensions)
        front = non_dominated(points)
        limit = rng.randint(2 * dimensions, 12)
        kept = bounded_front(points, limit)
        assert len(kept) == min(limit, len(front))
        assert kept == sorted(kept) and set(kept) <= set(front)
        for axis in range(dimensions):
            values = [points[i][axis] for i in front]
            assert max(values) in [points[i][axis] for i in kept]
            assert min(values) in [points[i][axis] for i in kept]
        assert bounded_front(points, limit) == kept


def test_bounded_front_below_the_number_of_extremes_keeps_the_first_objectives() -> None:
    points = [(4.0, 0.0, 1.0), (0.0, 4.0, 0.0), (1.0, 1.0, 4.0), (2.0, 2.0, 2.0)]
    # Objective 0: best 0, worst 1; objective 1: best 1 (seen), worst 0 (seen); then 2.
    assert bounded_front(points, 2) == [0, 1]
    assert bounded_front(points, 3) == [0, 1, 2]
    assert bounded_front(points, 1) == [0]
    with pytest.raises(ValueError):
        bounded_front(points, 0)


def test_augmented_chebyshev_is_zero_at_the_ideal_and_by_hand() -> None:
    assert augmented_chebyshev((1.0, 1.0), (0.5, 0.5)) == 0.0
    assert augmented_chebyshev((0.5, 0.0), (0.5, 0.5)) == pytest.approx(-(0.5 + 0.05 * 0.75))
    assert augmented_chebyshev((0.5, 0.0), (0.5, 0.5), rho=0.0) == pytest.approx(-0.5)


def test_augmented_chebyshev_rises_when_any_weighted_coordinate_improves() -> None:
    rng = random.Random(0)
    for _ in range(200):
        weights = random_weights(rng, 3)
        point = tuple(rng.random() for _ in range(3))
        axis = rng.randrange(3)
        better = tuple(x + 0.1 if i == axis else x for i, x in enumerate(point))
        assert augmented_chebyshev(better, weights) > augmented_chebyshev(point, weights)
        assert augmented_chebyshev(point, weights) <= 0.0


@pytest.mark.parametrize("dimensions", [1, 2, 3, 5])
def test_random_weights_lie_on_the_simplex(dimensions: int) -> None:
    rng = random.Random(dimensions)
    draws = [random_weights(rng, dimensions) for _ in range(2000)]
    for w in draws:
        assert len(w) == dimensions
        assert all(x >= 0 for x in w)
        assert sum(w) == pytest.approx(1.0, abs=1e-12)
    for axis in range(dimensions):
        mean = sum(w[axis] for w in draws) / len(draws)
        assert mean == pytest.approx(1 / dimensions, abs=0.03)
    assert random_weights(random.Random(7), 3) == random_weights(random.Random(7), 3)
    with pytest.raises(ValueError):
        random_weights(rng, 0)


def test_ranked_puts_each_objective_on_a_scale_no_outlier_squashes() -> None:
    # One broken network at 10 % would leave the others within the top tenth after min-max.
    points = [(0.93, -4.0), (0.10, -1.0), (0.94, -9.0), (0.93, -2.0)]
    assert ranked(points) == [
        (0.5, 1 / 3),  # tied with the fourth: their mean rank
        (0.0, 1.0),
        (1.0, 0.0),
        (0.5, 2 / 3),
    ]
    assert ranked([(3.0, 1.0)]) == [(1.0, 1.0)]
    assert ranked([]) == []
