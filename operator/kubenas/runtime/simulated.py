"""A runtime on a simulated clock: trials train one epoch per tick through a given function.

Used by the NAS-Bench-201 benchmark (a table look-up per query) and by the contract tests of
strategies and schedulers: the same decide/apply loop as the real runtimes, with no processes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from kubenas import transitions
from kubenas.api.experiment import ExperimentSpec
from kubenas.api.records import TrialRecord, TrialRole, TrialState
from kubenas.engine import Decisions, decide
from kubenas.final import Approval
from kubenas.space import Assignment

# value of the objective after `epoch` epochs of training `params`; None means the trial crashed
Curve = Callable[[Assignment, int], float | None]
# cost metrics of `params`, measured before training (a trial outside the constraints on them
# ends there, as the trainer ends it)
Costs = Callable[[Assignment], dict[str, float]]


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


class _SimulatedEffects:
    """Runs start at once on the simulated clock; stopping a run has nothing to clean up."""

    def __init__(self, sim: Simulation, epoch_of: dict[str, int]) -> None:
        self.sim = sim
        self.epoch_of = epoch_of
        self.tick = 0

    def halt(self, record: TrialRecord) -> str:
        return ""

    def save(self, before: TrialRecord | None, after: TrialRecord) -> None:
        self.sim.records[after.name] = after

    def launch(self, record: TrialRecord) -> TrialRecord:
        if record.role is TrialRole.SCREEN:
            raise ValueError("the simulator runs no screen trial: pass a finished one as initial")
        running = transitions.started(record, float(self.tick))
        self.sim.records[record.name] = running
        self.epoch_of.setdefault(record.name, 0)
        return running


def simulate(
    spec: ExperimentSpec,
    curve: Curve,
    *,
    max_ticks: int = 100_000,
    on_tick: Callable[[Simulation], None] | None = None,
    initial: Sequence[TrialRecord] = (),
    costs: Costs | None = None,
    approval: Approval | None = None,
) -> Simulation:
    """Run ``spec`` to the end: each tick decides, applies, then trains the oldest running trial
    one epoch (a trial without a fidelity trains a single epoch). ``initial`` records are there
    from the start (a screen trial whose scores cost nothing in a benchmark); ``costs`` gives
    each architecture's cost metrics, reported with its result or, outside the constraints,
    instead of training it (the tick it takes is its cost check); ``approval`` releases a final
    stage that waits for one (without it, such a run ends awaiting approval)."""
    sim = Simulation(records={r.name: r for r in initial})
    metric = spec.objective.metric
    epoch_of: dict[str, int] = {}
    effects = _SimulatedEffects(sim, epoch_of)
    for tick in range(max_ticks):
        effects.tick = tick
        decisions = decide(spec, list(sim.records.values()), now=float(tick), approval=approval)
        sim.decisions.append(decisions)
        transitions.apply_decisions(
            decisions, sim.records, effects, name_of=trial_name, now=float(tick)
        )
        if decisions.finished or decisions.awaiting_approval:
            return sim
        running = [r for r in sim.records.values() if r.state == TrialState.RUNNING]
        sim.peak_running = max(sim.peak_running, len(running))
        if running:
            _train_one_epoch(
                sim,
                min(running, key=lambda r: (r.started_at or 0.0, r.index)),
                curve,
                epoch_of,
                metric,
                tick,
                spec,
                costs,
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
    spec: ExperimentSpec,
    costs: Costs | None,
) -> None:
    figures = costs(record.params) if costs is not None else {}
    violations = spec.objective.violations(figures)
    if violations:
        sim.records[record.name] = transitions.infeasible(
            record, figures, violations, source="simulation", now=float(tick)
        )
        return
    epoch = epoch_of[record.name] + 1
    epoch_of[record.name] = epoch
    sim.epochs_trained += 1
    value = curve(record.params, epoch)
    if value is None:
        sim.records[record.name] = transitions.failed(
            record, "Crashed", "the curve said so", float(tick)
        )
        return
    record = transitions.progressed(record, [(epoch, value)])
    if epoch < (record.fidelity or 1):
        sim.records[record.name] = record
        return
    sim.records[record.name] = transitions.succeeded(
        record,
        {metric: value, **figures},
        checkpoint=f"checkpoints/{record.name}/epoch-{epoch}.pt",
        source="simulation",
        now=float(tick),
    )
