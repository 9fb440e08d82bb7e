"""The final stage, decided purely: which candidates to retrain, on which seeds, next to which
baselines, and when a person must release it first.

It runs once the search has finished well. Every final and baseline trial is named by its key
(``final/<candidate key>/<seed>``, ``baseline/<name>/<seed>``), so the same records always give
the same plan, and a restart neither loses nor repeats a trial.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kubenas.api.experiment import ExperimentSpec
from kubenas.api.records import TrialRecord, TrialRole, TrialState
from kubenas.schedulers import Objective, Stop
from kubenas.space import Architecture, Assignment, SearchSpace

FINAL_ROLES = (TrialRole.FINAL, TrialRole.BASELINE)


@dataclass(frozen=True)
class Approval:
    """A person released the final stage; ``trials`` names the candidates to retrain instead
    of the proposed ones (empty: the proposed ones)."""

    trials: tuple[str, ...] = ()


def parse_approval(value: str | None) -> Approval | None:
    """An approval as a person writes it: ``proposed`` (or ``true``) for the proposed
    finalists, or a comma list of candidate trials to retrain instead; None when unset."""
    if value is None or not value.strip():
        return None
    names = tuple(n.strip() for n in value.split(",") if n.strip())
    if len(names) == 1 and names[0].lower() in ("proposed", "true", "yes"):
        return Approval()
    return Approval(trials=names)


@dataclass(frozen=True)
class FinalTrial:
    """One final or baseline trial the stage needs."""

    key: str
    role: TrialRole
    params: Assignment
    architecture: Architecture
    replica: int
    source: str | None = None
    baseline: str | None = None


@dataclass(frozen=True)
class FinalPlan:
    """What the final stage does next: trials to start, trials to stop, or that it is done."""

    start: tuple[FinalTrial, ...] = ()
    stop: tuple[Stop, ...] = ()
    awaiting_approval: bool = False
    done: bool = False
    trained: int = 0


def final_key(candidate: TrialRecord, replica: int) -> str:
    return f"final/{candidate.key}/{replica}"


def baseline_key(name: str, replica: int) -> str:
    return f"baseline/{name}/{replica}"


def rank_key(record: TrialRecord, objective: Objective) -> tuple[int, float] | None:
    """How a finished candidate ranks for the final stage: highest fidelity, then objective."""
    value = objective.of(record.metrics)
    if record.state is not TrialState.SUCCEEDED or value is None:
        return None
    return (record.fidelity or 0, value)


def finalists(
    spec: ExperimentSpec,
    candidates: Sequence[TrialRecord],
    objective: Objective,
    front: Sequence[TrialRecord] = (),
    feasible: Callable[[TrialRecord], bool] = lambda _: True,
) -> list[TrialRecord]:
    """The candidates the final stage retrains: the ``topK`` best, or, when the search is
    multi-objective, ``topK`` members spread evenly along the front (its two ends included)."""
    assert spec.final is not None
    k = spec.final.top_k
    if front:
        members = list(front)
        if len(members) <= k:
            return members
        if k == 1:
            return members[:1]
        picks = sorted({round(i * (len(members) - 1) / (k - 1)) for i in range(k)})
        return [members[i] for i in picks]
    ranked = [
        (rank, r)
        for r in candidates
        if feasible(r) and (rank := rank_key(r, objective)) is not None
    ]
    ranked.sort(key=lambda pair: (pair[0][0], pair[0][1], -pair[1].index), reverse=True)
    return [r for _, r in ranked[:k]]


def chosen(
    proposed: Sequence[TrialRecord],
    candidates: Sequence[TrialRecord],
    approval: Approval | None,
    started: Sequence[TrialRecord] = (),
) -> list[TrialRecord]:
    """The candidates to retrain: the proposed finalists, or the succeeded candidates a person
    named instead. Those with a final trial already (``started``) stay chosen whatever the
    approval says now, so a changed or removed approval adds networks but never drops one."""
    by_name = {r.name: r for r in candidates if r.state is TrialState.SUCCEEDED}
    begun = list(dict.fromkeys(r.source for r in started if r.source in by_name))
    if approval is not None and approval.trials:
        named = [name for name in approval.trials if name in by_name]
    elif approval is None and begun and not set(begun) <= {r.name for r in proposed}:
        named = []  # released for other candidates, and the approval is gone: keep those
    else:
        named = [r.name for r in proposed]
    return [by_name[name] for name in dict.fromkeys([*begun, *named])]


def wanted_trials(
    spec: ExperimentSpec, space: SearchSpace, retrain: Sequence[TrialRecord]
) -> list[FinalTrial]:
    """Every final and baseline trial, seed by seed: with few slots, each network gets its
    first seed before any gets its second."""
    assert spec.final is not None
    trials: list[FinalTrial] = []
    for replica in range(spec.final.seeds):
        for candidate in retrain:
            params = space.active(candidate.params)
            trials.append(
                FinalTrial(
                    key=final_key(candidate, replica),
                    role=TrialRole.FINAL,
                    params=params,
                    architecture=space.to_architecture(params),
                    replica=replica,
                    source=candidate.name,
                )
            )
        for baseline in spec.baselines:
            trials.append(
                FinalTrial(
                    key=baseline_key(baseline.name, replica),
                    role=TrialRole.BASELINE,
                    params={},
                    architecture=dict(baseline.architecture),
                    replica=replica,
                    baseline=baseline.name,
                )
            )
    return trials


def plan_final(
    spec: ExperimentSpec,
    wanted: Sequence[FinalTrial],
    existing: Sequence[TrialRecord],
    *,
    approval: Approval | None,
    timed_out: Callable[[TrialRecord], bool],
) -> FinalPlan:
    """Start what is missing as slots allow, time out what ran too long, and say when every
    wanted trial has ended. With ``approval: manual`` nothing starts until a person approves
    (once final trials exist, the stage was released and goes on)."""
    assert spec.final is not None
    if spec.final.approval == "manual" and approval is None and not existing:
        return FinalPlan(awaiting_approval=True)
    timeout = f"ran longer than timeoutSeconds ({spec.trial.timeout_seconds})"
    active = [r for r in existing if r.state.active]
    stops = tuple(Stop(r.name, "Timeout", timeout, failed=True) for r in active if timed_out(r))
    slots = spec.budget.parallel_trials - (len(active) - len(stops))
    present = {r.key for r in existing}
    missing = [t for t in wanted if t.key not in present]
    starts = tuple(missing[: max(0, slots)])
    trained = sum(1 for r in existing if r.state is TrialState.SUCCEEDED)
    done = not starts and not missing and not active
    return FinalPlan(start=starts, stop=stops, done=done, trained=trained)
