"""The Pareto front of a multi-objective search: who is on it, how much it dominates, from where.

Only feasible trials that reported every objective count. The status holds at most
``PARETO_LIMIT`` members, chosen to keep the front's shape (both extremes, then the most spread
out), while its size and hypervolume describe the whole front. The hypervolume's reference point
is stated with it: each objective's ``reference`` when set, else the bound of a constraint on
that metric, else the worst value a counted trial reached.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kubenas.api.experiment import Objective as ObjectiveSpec
from kubenas.api.records import TrialRecord, TrialState
from kubenas.api.status import PARETO_LIMIT
from kubenas.pareto import bounded_front, hypervolume, non_dominated
from kubenas.schedulers import Objective


@dataclass(frozen=True)
class Front:
    """``members`` is the bounded list, best main objective first; ``size`` counts the whole
    front; ``reference`` is in each metric's own units (not oriented)."""

    members: tuple[TrialRecord, ...]
    size: int
    hypervolume: float | None
    reference: dict[str, float]


def infeasible_count(spec: ObjectiveSpec, records: Sequence[TrialRecord]) -> int:
    """Trials that ended with figures outside the constraints (a failed trial has none)."""
    if not spec.constraints:
        return 0
    return sum(
        r.state in (TrialState.SUCCEEDED, TrialState.STOPPED) and spec.violation(r.metrics) > 0
        for r in records
    )


def reference_point(
    spec: ObjectiveSpec, objectives: Sequence[Objective], points: Sequence[tuple[float, ...]]
) -> tuple[float, ...] | None:
    """The oriented reference point (see the module docstring); None without any point to take
    a worst value from when one is needed."""
    given = [spec.reference, *(o.reference for o in spec.additional)]
    bounds = {c.metric: c for c in spec.constraints}
    out: list[float] = []
    for i, (objective, reference) in enumerate(zip(objectives, given, strict=True)):
        if reference is not None:
            out.append(objective.sign * reference)
            continue
        constraint = bounds.get(objective.metric)
        bound = None
        if constraint is not None:
            bound = constraint.max if objective.sign < 0 else constraint.min
        if bound is not None:
            out.append(objective.sign * bound)
        elif points:
            out.append(min(p[i] for p in points))
        else:
            return None
    return tuple(out)


def pareto_front(
    spec: ObjectiveSpec,
    records: Sequence[TrialRecord],
    objectives: Sequence[Objective],
    limit: int = PARETO_LIMIT,
) -> Front:
    """The front of the feasible, reported trials over ``objectives`` (oriented, larger is
    better), bounded to ``limit`` members."""
    counted: list[TrialRecord] = []
    points: list[tuple[float, ...]] = []
    for r in records:
        if r.state is TrialState.FAILED or (spec.constraints and spec.violation(r.metrics) > 0):
            continue
        values = [o.of(r.metrics) for o in objectives]
        if all(v is not None for v in values):
            counted.append(r)
            points.append(tuple(float(v) for v in values if v is not None))
    front = non_dominated(points)
    front_points = [points[i] for i in front]
    kept = [front[i] for i in bounded_front(front_points, limit)]
    kept.sort(key=lambda i: (-points[i][0], counted[i].index))
    reference = reference_point(spec, objectives, points)
    volume = None if reference is None or not points else hypervolume(front_points, reference)
    return Front(
        members=tuple(counted[i] for i in kept),
        size=len(front),
        hypervolume=volume,
        reference=(
            {}
            if reference is None
            else {o.metric: o.sign * r for o, r in zip(objectives, reference, strict=True)}
        ),
    )
