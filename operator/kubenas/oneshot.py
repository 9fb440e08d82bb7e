"""What the control plane reads from a supernet trial (strategy ``oneshot``) and reports of it.

The trainer's final summary lists the derived architectures as compact choice indices
(:meth:`kubenas.space.SearchSpace.to_choices`) with their supernet scores, best first, so even
32 of them fit a Kubernetes termination message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kubenas import transitions
from kubenas.api.experiment import ExperimentSpec, OneshotStrategy
from kubenas.api.records import DerivedArchitecture, TrialRecord, TrialRole, TrialState
from kubenas.durations import spoken_duration
from kubenas.screening import spearman
from kubenas.space import SearchSpace


def decode_derived(space: SearchSpace, reported: object) -> list[DerivedArchitecture]:
    """The derived architectures of a supernet trial's final summary; ValueError, saying what
    is wrong, when there are none or one does not fit the space."""
    if not isinstance(reported, list) or not reported:
        raise ValueError("the supernet trial reported no derived architectures")
    derived: list[DerivedArchitecture] = []
    for position, entry in enumerate(reported):
        if not isinstance(entry, dict) or not isinstance(entry.get("choices"), list):
            raise ValueError(f"derived[{position}]: want {{choices: [...], score: x}}")
        score = entry.get("score")
        if not isinstance(score, int | float):
            raise ValueError(f"derived[{position}].score: not a number")
        try:
            params = space.from_choices([int(c) for c in entry["choices"]])
        except (TypeError, ValueError) as error:
            raise ValueError(f"derived[{position}].choices: {error}") from error
        derived.append(DerivedArchitecture(params=params, score=float(score)))
    return derived


def supernet_ended(
    record: TrialRecord,
    space: SearchSpace,
    reported: object,
    *,
    metrics: Mapping[str, float],
    now: float,
) -> TrialRecord:
    """The record of a supernet trial that exited well: trained, with the architectures its
    final summary ``reported``, or failed ``MissingDerived`` saying what was wrong with them."""
    try:
        derived = decode_derived(space, reported)
    except ValueError as error:
        return transitions.failed(record, "MissingDerived", str(error), now)
    return transitions.supernet_trained(record, derived, metrics=metrics, now=now)


def supernet_summary(
    spec: ExperimentSpec, space: SearchSpace, records: Sequence[TrialRecord], gpus: float = 0.0
) -> dict[str, Any] | None:
    """What the supernet did and whether its ranking held: its state, epochs, attempts,
    seconds (and GPU-seconds, for ``gpus`` per trial), how many architectures it derived, and
    the Spearman correlation between supernet score and the objective over the derived
    architectures trained so far."""
    strategy = spec.strategy
    if not isinstance(strategy, OneshotStrategy):
        return None
    supernets = [r for r in records if r.role is TrialRole.SUPERNET]
    out: dict[str, Any] = {"method": spec.oneshot_method(), "epochs": strategy.supernet_epochs}
    if not supernets:
        out["state"] = TrialState.PENDING.value
        return out
    latest = supernets[-1]
    out |= {"trial": latest.name, "state": latest.state.value, "attempts": len(supernets)}
    seconds = [
        r.finished_at - r.started_at
        for r in supernets
        if r.finished_at is not None and r.started_at is not None
    ]
    if seconds:
        out["seconds"] = round(sum(seconds), 3)
        if gpus:
            out["gpuSeconds"] = round(sum(seconds) * gpus, 3)
    if not latest.derived:
        return out
    out["derived"] = len(latest.derived)
    out["bestScore"] = latest.derived[0].score
    score_of = {space.key(d.params): d.score for d in latest.derived}
    metric = spec.objective.metric
    pairs = [
        (score_of[r.key], r.metrics[metric])
        for r in records
        if r.role is TrialRole.CANDIDATE and r.key in score_of and metric in r.metrics
    ]
    out["trainedDerived"] = len(pairs)
    if len(pairs) >= 3:
        correlation = spearman([s for s, _ in pairs], [m for _, m in pairs])
        out["spearman"] = None if correlation is None else round(correlation, 3)
    return out


def supernet_line(supernet: dict[str, Any]) -> str:
    """The supernet in a line, e.g. ``beta-darts, 20 epochs in 2 min: 5 derived, best score
    0.93; Spearman with the objective over 5 trained: 0.60``, or its state while it runs."""
    text = f"{supernet.get('method')}, {supernet.get('epochs')} epochs"
    if supernet.get("seconds") is not None:
        text += f" in {spoken_duration(float(supernet['seconds']))}"
    if supernet.get("attempts", 1) > 1:
        text += f" ({supernet['attempts']} attempts)"
    if "derived" not in supernet:
        return f"{text}: {supernet.get('state', 'Pending')}"
    text += f": {supernet['derived']} derived, best score {supernet.get('bestScore', 0):.3f}"
    if supernet.get("spearman") is not None:
        trained = supernet.get("trainedDerived", 0)
        text += f"; Spearman with the objective over {trained} trained: {supernet['spearman']:.2f}"
    return text
