"""The one owner of trial-record transitions, and the one way to apply the engine's decisions.

Every runtime (local processes, the operator, the simulator) moves a record to its next state
only through these pure functions, and applies :class:`Decisions` only through
:func:`apply_decisions`, so they reset the same fields and act in the same order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from kubenas.api.records import DerivedArchitecture, TrialRecord, TrialState
from kubenas.engine import Decisions, StartTrial
from kubenas.schedulers import Promotion, Stop


def created(name: str, start: StartTrial, now: float) -> TrialRecord:
    """A new trial, waiting to run: its clock has not started, its queue time has."""
    return TrialRecord(
        name=name,
        index=start.index,
        role=start.role,
        params=start.params,
        key=start.key,
        state=TrialState.PENDING,
        fidelity=start.fidelity,
        source=start.source,
        baseline=start.baseline,
        replica=start.replica,
        created_at=now,
        queued_at=now,
    )


def started(record: TrialRecord, at: float) -> TrialRecord:
    """Its process or container started at ``at``: the trial's clock runs from here, and the
    wait since it was queued is added to its queue time. A record already running is kept."""
    if record.state is TrialState.RUNNING:
        return record
    waited = 0.0 if record.queued_at is None else max(0.0, at - record.queued_at)
    return record.with_changes(
        state=TrialState.RUNNING,
        started_at=at,
        queued_at=None,
        queue_seconds=record.queue_seconds + waited,
        intermediate=[],
        reason=None,
        message=None,
    )


def resumed(record: TrialRecord, resume_from: str | None, now: float) -> TrialRecord:
    """A run interrupted by a restart of its runtime, queued again from its latest checkpoint."""
    return record.with_changes(
        state=TrialState.PENDING, resumed_from=resume_from, started_at=None, queued_at=now
    )


WAITING_FOR_ADMISSION = "WaitingForAdmission"


def waiting(record: TrialRecord, reason: str | None, message: str | None) -> TrialRecord:
    """A pending trial's reason to wait (a quota manager has not admitted its run yet), or
    None once nothing holds it back; a record in any other state, or unchanged, is kept."""
    if record.state is not TrialState.PENDING or (record.reason, record.message) == (
        reason,
        message,
    ):
        return record
    return record.with_changes(reason=reason, message=message)


def leased(record: TrialRecord, lease: str, worker: str, now: float) -> TrialRecord:
    """Handed to a worker pod (trial reuse): it runs from now, the lease open until a result
    or the pod's end closes it."""
    return started(record, now).with_changes(lease=lease, worker=worker)


WORKER_LOST = "WorkerLost"


def lease_lost(record: TrialRecord, limit: int, now: float) -> TrialRecord:
    """Its worker pod ended while training it (killed, evicted, out of memory): queued again
    from where the run started, as a lost Job is, unless ``limit`` runs were lost that way
    already; then it failed, naming the worker whose logs say why."""
    lost = record.lost_leases + 1
    if lost > limit:
        message = (
            f"its worker pod (Job {record.worker}) ended while training it, "
            f"{lost} time{'s' if lost > 1 else ''}; kubectl logs job/{record.worker} says why"
        )
        return failed(record.with_changes(lost_leases=lost), WORKER_LOST, message, now)
    return resumed(record, record.resumed_from, now).with_changes(
        lease=None, worker=None, lost_leases=lost
    )


def worker_preempted(record: TrialRecord, now: float) -> TrialRecord:
    """Its worker Job was preempted (suspended by a quota manager) while training it: queued
    again for the next worker, from its checkpoint, and not counted as a lost run."""
    return resumed(record, record.resumed_from, now).with_changes(lease=None, worker=None)


def progressed(record: TrialRecord, points: list[tuple[int, float]]) -> TrialRecord:
    """Per-epoch objective values of the current run; epochs already recorded are ignored."""
    last = record.intermediate[-1][0] if record.intermediate else 0
    fresh = sorted(p for p in points if p[0] > last)
    if not fresh:
        return record
    return record.with_changes(intermediate=[*record.intermediate, *fresh])


INFEASIBLE = "Infeasible"


def succeeded(
    record: TrialRecord,
    metrics: Mapping[str, float],
    *,
    checkpoint: str | None,
    source: str,
    now: float,
    device: str | None = None,
) -> TrialRecord:
    """A finished run: its metrics are folded into the results of its fidelity."""
    values = dict(metrics)
    return record.with_changes(
        state=TrialState.SUCCEEDED,
        metrics=values,
        results={**record.results, record.fidelity or 0: values},
        checkpoint=checkpoint,
        metrics_source=source,
        device=device,
        reason=None,
        message=None,
        finished_at=now,
    )


def infeasible(
    record: TrialRecord,
    metrics: Mapping[str, float],
    violations: Sequence[str],
    *,
    source: str,
    now: float,
    device: str | None = None,
) -> TrialRecord:
    """A run that measured its costs, found them outside the constraints and ended before
    training: stopped, with its figures and what it broke (it never trains further)."""
    return record.with_changes(
        state=TrialState.STOPPED,
        metrics=dict(metrics),
        metrics_source=source,
        device=device,
        reason=INFEASIBLE,
        message="; ".join(violations),
        finished_at=now,
    )


def ended_unscored(
    record: TrialRecord,
    metrics: Mapping[str, float],
    violations: Sequence[str],
    objective: str,
    *,
    source: str,
    now: float,
    device: str | None = None,
) -> TrialRecord:
    """A run that ended without its objective: infeasible when the figures it did report break
    a constraint (so it never trained), else a failure that names the missing metric."""
    if violations:
        return infeasible(record, metrics, violations, source=source, now=now, device=device)
    return failed(record, "MissingObjective", f"the trial reported no {objective}", now)


def screened(
    record: TrialRecord,
    scores: Mapping[str, Sequence[float | None]],
    *,
    metrics: Mapping[str, float],
    now: float,
) -> TrialRecord:
    """A finished screen trial: its proxy values per screened candidate, and its own figures
    (architectures scored, seconds)."""
    return record.with_changes(
        state=TrialState.SUCCEEDED,
        screen_scores={proxy: list(values) for proxy, values in scores.items()},
        metrics=dict(metrics),
        reason=None,
        message=None,
        finished_at=now,
    )


def supernet_trained(
    record: TrialRecord,
    derived: Sequence[DerivedArchitecture],
    *,
    metrics: Mapping[str, float],
    now: float,
) -> TrialRecord:
    """A finished supernet trial: the architectures it derived, best first, and its own
    figures (supernet epochs, seconds)."""
    return record.with_changes(
        state=TrialState.SUCCEEDED,
        derived=list(derived),
        metrics=dict(metrics),
        reason=None,
        message=None,
        finished_at=now,
    )


def failed(record: TrialRecord, reason: str, message: str, now: float) -> TrialRecord:
    return record.with_changes(
        state=TrialState.FAILED, reason=reason, message=message, finished_at=now
    )


def stopped(record: TrialRecord, stop: Stop, now: float, detail: str = "") -> TrialRecord:
    """A deliberate stop, or a failure (a timeout) when the stop says so; ``detail`` is what the
    run left behind (its stderr tail)."""
    if stop.failed:
        return failed(record, stop.reason, f"{stop.message}\n{detail}".strip(), now)
    return record.with_changes(
        state=TrialState.STOPPED, reason=stop.reason, message=stop.message, finished_at=now
    )


def promoted(record: TrialRecord, promotion: Promotion, now: float) -> TrialRecord:
    """Queued again for more training, resuming from its checkpoint; nothing of the last run's
    end (reason, finish time, per-epoch values) carries over."""
    return record.with_changes(
        state=TrialState.PENDING,
        fidelity=promotion.fidelity,
        resumed_from=promotion.resume_from,
        intermediate=[],
        reason=None,
        message=f"promoted to fidelity {promotion.fidelity}",
        started_at=None,
        finished_at=None,
        queued_at=now,
    )


class Effects(Protocol):
    """What a runtime does for each applied decision; the records themselves are decided here."""

    def halt(self, record: TrialRecord) -> str:
        """End the record's current run; returns what the run left to say (e.g. stderr tail)."""
        ...

    def save(self, before: TrialRecord | None, after: TrialRecord) -> None:
        """Persist ``after`` (``before`` is None for a new trial)."""
        ...

    def launch(self, record: TrialRecord) -> TrialRecord:
        """Start a run of a saved, pending record; returns the record as the runtime left it
        (running, where the runtime starts it at once)."""
        ...


@dataclass(frozen=True)
class Applied:
    """The records after applying, by name, and which of them changed."""

    records: dict[str, TrialRecord]
    changed: tuple[str, ...]


def apply_decisions(
    decisions: Decisions,
    records: Mapping[str, TrialRecord],
    effects: Effects,
    *,
    name_of: Callable[[int], str],
    now: float,
) -> Applied:
    """Stops first (they free slots), then promotions, then new trials: each record is saved
    before its run is launched, so a crash in between leaves a pending record to resume."""
    out = dict(records)
    changed: list[str] = []
    for stop in decisions.stop:
        before = out.get(stop.trial)
        if before is None or not before.state.active:
            continue
        detail = effects.halt(before)
        after = stopped(before, stop, now, detail)
        effects.save(before, after)
        out[stop.trial] = after
        changed.append(stop.trial)
    for promotion in decisions.promote:
        before = out[promotion.trial]
        after = promoted(before, promotion, now)
        effects.save(before, after)
        out[promotion.trial] = effects.launch(after)
        changed.append(promotion.trial)
    for start in decisions.start:
        name = name_of(start.index)
        record = created(name, start, now)
        effects.save(None, record)
        out[name] = effects.launch(record)
        changed.append(name)
    return Applied(records=out, changed=tuple(changed))
