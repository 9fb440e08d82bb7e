"""A runtime on a simulated clock: trials train one epoch per tick through a given function.

Used by the NAS-Bench-201 benchmark (a table look-up per query) and by the contract tests of
strategies and schedulers: the same decide/apply loop as the real runtimes, with no processes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from kubenas.api.experiment import ExperimentSpec
from kubenas.api.records import TrialRecord, TrialState
from kubenas.engine import Decisions, decide
from kubenas.space import Assignment

# value of the objective after `epoch` epochs of training `params`; None means the trial crashed
Curve = Callable[[Assignment, int], float | None]


@dataclass
class Simulation:
    records: dict[str, TrialRecord] = field(default_factory=dict)
    decisions: list[Decisions] = field(default_factory=list)
    epochs_trained: int = 0
    peak_running: int = 0

    @property
    def final(self) -> Decisions:
        return self.decisions[-1]


def trial_name(index: int) -> str:
    return f"sim-{index:04d}"


def simulate(
    spec: ExperimentSpec,
    curve: Curve,
    *,
    max_ticks: int = 100_000,
    on_tick: Callable[[Simulation], None] | None = None,
) -> Simulation:
    """Run ``spec`` to the end: each tick decides, applies, then trains the oldest running trial
    one epoch (a trial without a fidelity trains a single epoch)."""
    sim = Simulation()
    metric = spec.objective.metric
    epoch_of: dict[str, int] = {}
    for tick in range(max_ticks):
        decisions = decide(spec, list(sim.records.values()), now=float(tick))
        sim.decisions.append(decisions)
        for stop in decisions.stop:
            sim.records[stop.trial] = sim.records[stop.trial].with_changes(
                state=TrialState.FAILED if stop.failed else TrialState.STOPPED,
                reason=stop.reason,
                message=stop.message,
            )
        if decisions.finished:
            return sim
        for start in decisions.start:
            name = trial_name(start.index)
            sim.records[name] = TrialRecord(
                name=name,
                index=start.index,
                params=start.params,
                key=start.key,
                state=TrialState.RUNNING,
                fidelity=start.fidelity,
                started_at=float(tick),
            )
            epoch_of[name] = 0
        for promotion in decisions.promote:
            record = sim.records[promotion.trial]
            sim.records[promotion.trial] = record.with_changes(
                state=TrialState.RUNNING,
                fidelity=promotion.fidelity,
                resumed_from=promotion.resume_from,
                intermediate=[],
                started_at=float(tick),
            )
        running = [r for r in sim.records.values() if r.state == TrialState.RUNNING]
        sim.peak_running = max(sim.peak_running, len(running))
        if running:
            _train_one_epoch(
                sim,
                min(running, key=lambda r: (r.started_at, r.index)),
                curve,
                epoch_of,
                metric,
                tick,
            )
        if on_tick is not None:
            on_tick(sim)
    raise RuntimeError(f"simulation did not finish within {max_ticks} ticks")


def _train_one_epoch(
    sim: Simulation,
    record: TrialRecord,
    curve: Curve,
    epoch_of: dict[str, int],
    metric: str,
    tick: int,
) -> None:
    epoch = epoch_of[record.name] + 1
    epoch_of[record.name] = epoch
    sim.epochs_trained += 1
    value = curve(record.params, epoch)
    if value is None:
        sim.records[record.name] = record.with_changes(
            state=TrialState.FAILED,
            reason="Crashed",
            message="the curve said so",
            finished_at=float(tick),
        )
        return
    target = record.fidelity or 1
    intermediate = [*record.intermediate, (epoch, value)]
    if epoch < target:
        sim.records[record.name] = record.with_changes(intermediate=intermediate)
        return
    metrics = {metric: value}
    sim.records[record.name] = record.with_changes(
        state=TrialState.SUCCEEDED,
        intermediate=intermediate,
        metrics=metrics,
        results={**record.results, target: metrics},
        checkpoint=f"checkpoints/{record.name}/epoch-{epoch}.pt",
        finished_at=float(tick),
    )
