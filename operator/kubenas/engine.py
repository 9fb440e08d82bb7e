"""The pure decision function: from the spec and the trial records to what happens next.

No I/O, no clock of its own, no state between calls. Both runtimes (local processes and the
Kubernetes operator) call :func:`decide` after every change and apply what it returns; a
restart, a crash or a duplicate call is harmless because the same records give the same answer.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from kubenas.api.experiment import ExperimentSpec, OneshotStrategy
from kubenas.api.records import TrialRecord, TrialRole, TrialState
from kubenas.failures import explain_failures, failure_reason
from kubenas.final import FINAL_ROLES, Approval, chosen, finalists, plan_final, wanted_trials
from kubenas.front import Front, pareto_front
from kubenas.schedulers import Objective, Promotion, Scheduler, Stop, make_scheduler
from kubenas.screening import screening_prior
from kubenas.space import Architecture, Assignment, SearchSpace, build_space
from kubenas.strategies import Observation, Prior, Strategy, derived_prior, make_strategy


class FinishReason(StrEnum):
    BUDGET_SPENT = "BudgetSpent"
    GOAL_REACHED = "GoalReached"
    SPACE_EXHAUSTED = "SpaceExhausted"
    TOO_MANY_FAILURES = "TooManyFailures"
    SCREENING_FAILED = "ScreeningFailed"
    SUPERNET_FAILED = "SupernetFailed"
    FINAL_FAILED = "FinalFailed"


@dataclass(frozen=True)
class StartTrial:
    index: int
    params: Assignment
    key: str
    architecture: Architecture
    fidelity: int | None
    role: TrialRole = TrialRole.CANDIDATE
    source: str | None = None
    baseline: str | None = None
    replica: int | None = None


@dataclass(frozen=True)
class Decisions:
    start: tuple[StartTrial, ...] = ()
    promote: tuple[Promotion, ...] = ()
    stop: tuple[Stop, ...] = ()
    finished: bool = False
    reason: FinishReason | None = None
    message: str = ""
    best: TrialRecord | None = None
    front: Front | None = None
    # The final stage: the candidates it retrains, or would once approved.
    finalists: tuple[TrialRecord, ...] = ()
    awaiting_approval: bool = False

    @property
    def pareto(self) -> tuple[TrialRecord, ...]:
        """The bounded Pareto front (multi-objective experiments), best main objective first."""
        return self.front.members if self.front is not None else ()

    @property
    def succeeded(self) -> bool:
        """A finished search counts as failed when too many trials or its screening failed."""
        return self.finished and self.reason not in (
            FinishReason.TOO_MANY_FAILURES,
            FinishReason.SCREENING_FAILED,
            FinishReason.SUPERNET_FAILED,
            FinishReason.FINAL_FAILED,
        )


@dataclass(frozen=True)
class Planner:
    """What one spec needs to decide: its space, strategy and scheduler (cached per spec)."""

    space: SearchSpace
    strategy: Strategy
    scheduler: Scheduler
    objective: Objective
    extra_objectives: tuple[Objective, ...]


@functools.lru_cache(maxsize=64)
def _planner_for(spec_json: str) -> Planner:
    spec = ExperimentSpec.model_validate_json(spec_json)
    space = build_space(spec.search_space)
    sign = 1.0 if spec.objective.direction == "maximize" else -1.0
    return Planner(
        space=space,
        strategy=make_strategy(spec.strategy, space, spec.seed),
        scheduler=make_scheduler(spec.fidelity),
        objective=Objective(spec.objective.metric, sign),
        extra_objectives=tuple(
            Objective(o.metric, 1.0 if o.direction == "maximize" else -1.0)
            for o in spec.objective.additional
        ),
    )


def planner(spec: ExperimentSpec) -> Planner:
    return _planner_for(spec.model_dump_json())


def _strategy_value(record: TrialRecord, objective: Objective) -> float | None:
    """What a strategy learns from a trial: its final objective, else its best partial one."""
    raw = record.metrics.get(objective.metric)
    value = None if raw is None else objective.sign * raw
    if value is None and record.state is TrialState.STOPPED and record.intermediate:
        value = max(objective.sign * v for _, v in record.intermediate)
    return value


def _objective_values(record: TrialRecord, objectives: Sequence[Objective]) -> tuple[float, ...]:
    """Every objective of a finished trial, oriented; empty unless it reported all of them."""
    values = [o.of(record.metrics) for o in objectives]
    return tuple(v for v in values if v is not None) if None not in values else ()


def _by_index(record: TrialRecord) -> int:
    return record.index


def timeout_deadline(spec: ExperimentSpec, record: TrialRecord) -> float | None:
    """When a running trial times out: ``timeoutSeconds`` after its run started. A trial that
    waits for a slot, a GPU or a quota is not running, so its clock has not started."""
    if record.state is not TrialState.RUNNING or record.started_at is None:
        return None
    return record.started_at + spec.trial.timeout_seconds


SCREEN_KEY = "screen"


def _screening_stage(
    spec: ExperimentSpec, screen: TrialRecord | None, next_index: int, now: float
) -> Decisions:
    """Before the screen trial has succeeded no candidate starts: start it, wait for it (and
    time it out), or end the search when it failed."""
    if screen is None:
        start = StartTrial(
            index=next_index,
            params={},
            key=SCREEN_KEY,
            architecture={},
            fidelity=None,
            role=TrialRole.SCREEN,
        )
        return Decisions(start=(start,))
    if screen.state is TrialState.FAILED:
        return Decisions(
            finished=True,
            reason=FinishReason.SCREENING_FAILED,
            message=f"the screen trial {screen.name} failed: {failure_reason(screen)}",
        )
    deadline = timeout_deadline(spec, screen)
    if deadline is not None and now > deadline:
        timeout = f"ran longer than timeoutSeconds ({spec.trial.timeout_seconds})"
        return Decisions(stop=(Stop(screen.name, "Timeout", timeout, failed=True),))
    return Decisions()


SUPERNET_KEY = "supernet"


def _supernet_stage(
    spec: ExperimentSpec, supernets: Sequence[TrialRecord], next_index: int, now: float
) -> Decisions | None:
    """Strategy oneshot trains one supernet before any candidate: start it (again after a
    failure, while failures stay within maxFailedTrials), wait for it and time it out. None
    once it has succeeded: the search goes on from its derived architectures."""
    latest = supernets[-1] if supernets else None
    if latest is not None and latest.state is TrialState.SUCCEEDED:
        return None
    if latest is not None and latest.state.active:
        deadline = timeout_deadline(spec, latest)
        if deadline is not None and now > deadline:
            timeout = f"ran longer than timeoutSeconds ({spec.trial.timeout_seconds})"
            return Decisions(stop=(Stop(latest.name, "Timeout", timeout, failed=True),))
        return Decisions()
    failures = [r for r in supernets if r.state is TrialState.FAILED]
    if len(failures) > spec.budget.max_failed_trials:
        return Decisions(
            finished=True,
            reason=FinishReason.SUPERNET_FAILED,
            message=f"the supernet trial failed {len(failures)} times, more than "
            f"maxFailedTrials ({spec.budget.max_failed_trials}); the last, "
            f"{failures[-1].name}: {failure_reason(failures[-1])}",
        )
    assert isinstance(spec.strategy, OneshotStrategy)
    start = StartTrial(
        index=next_index,
        params={},
        key=SUPERNET_KEY,
        architecture={},
        fidelity=spec.strategy.supernet_epochs,
        role=TrialRole.SUPERNET,
    )
    return Decisions(start=(start,))


def decide(
    spec: ExperimentSpec,
    records: Sequence[TrialRecord],
    now: float,
    approval: Approval | None = None,
) -> Decisions:
    """Everything that should happen next, given every trial record of the experiment and,
    when its final stage waits for one, a person's approval."""
    plan = planner(spec)
    everything = sorted(records, key=_by_index)
    next_index = everything[-1].index + 1 if everything else 0
    screens = [r for r in everything if r.role is TrialRole.SCREEN]
    candidates = [r for r in everything if r.role is TrialRole.CANDIDATE]
    prior: Prior | None = None
    if spec.screening is not None:
        screen = screens[-1] if screens else None
        if screen is None or screen.state is not TrialState.SUCCEEDED:
            return _screening_stage(spec, screen, next_index, now)
        prior = screening_prior(spec, plan.space, screen)
    if isinstance(spec.strategy, OneshotStrategy):
        supernets = [r for r in everything if r.role is TrialRole.SUPERNET]
        stage = _supernet_stage(spec, supernets, next_index, now)
        if stage is not None:
            return stage
        derived = supernets[-1].derived or []
        prior = derived_prior(plan.space, [(d.params, d.score) for d in derived])
    search = _search(spec, plan, candidates, next_index, now, prior)
    if spec.final is None or not search.succeeded:
        return search
    finals = [r for r in everything if r.role in FINAL_ROLES]
    return _final_stage(spec, plan, search, candidates, finals, next_index, now, approval)


def _final_stage(
    spec: ExperimentSpec,
    plan: Planner,
    search: Decisions,
    candidates: Sequence[TrialRecord],
    finals: Sequence[TrialRecord],
    next_index: int,
    now: float,
    approval: Approval | None,
) -> Decisions:
    """After a search that finished well: retrain its finalists and train the baselines."""
    proposed = finalists(
        spec,
        candidates,
        plan.objective,
        search.pareto,
        feasible=lambda r: spec.objective.violation(r.metrics) == 0,
    )
    started = [r for r in finals if r.role is TrialRole.FINAL]
    retrain = chosen(proposed, candidates, approval, started)
    wanted = wanted_trials(spec, plan.space, retrain)

    def timed_out(record: TrialRecord) -> bool:
        deadline = timeout_deadline(spec, record)
        return deadline is not None and now > deadline

    step = plan_final(spec, wanted, finals, approval=approval, timed_out=timed_out)
    searched = f"{search.reason}: {search.message}"
    if step.awaiting_approval:
        return Decisions(
            stop=search.stop,
            message=f"{searched}; the final stage awaits approval",
            best=search.best,
            front=search.front,
            finalists=tuple(proposed),
            awaiting_approval=True,
        )
    if step.done:
        failed_all = bool(wanted) and step.trained == 0
        return Decisions(
            stop=search.stop,
            finished=True,
            reason=FinishReason.FINAL_FAILED if failed_all else search.reason,
            message=f"{searched}; final stage: {step.trained} of {len(wanted)} trials trained",
            best=search.best,
            front=search.front,
            finalists=tuple(retrain),
        )
    fidelity = spec.final_fidelity()
    starts = tuple(
        StartTrial(
            index=next_index + offset,
            params=trial.params,
            key=trial.key,
            architecture=trial.architecture,
            fidelity=fidelity,
            role=trial.role,
            source=trial.source,
            baseline=trial.baseline,
            replica=trial.replica,
        )
        for offset, trial in enumerate(step.start)
    )
    return Decisions(
        start=starts,
        stop=(*search.stop, *step.stop),
        message=f"{searched}; final stage running",
        best=search.best,
        front=search.front,
        finalists=tuple(retrain),
    )


def _search(
    spec: ExperimentSpec,
    plan: Planner,
    records: Sequence[TrialRecord],
    next_index: int,
    now: float,
    prior: Prior | None,
) -> Decisions:
    """The search stage: candidates proposed by the strategy, run by the scheduler."""
    budget = spec.budget
    objective = plan.objective
    objectives = (objective, *plan.extra_objectives)
    front = pareto_front(spec.objective, records, objectives) if plan.extra_objectives else None
    constraints = spec.objective.violation if spec.objective.constraints else None
    active: list[TrialRecord] = []
    finished: list[Observation] = []
    failed = 0
    best: TrialRecord | None = None
    best_rank: tuple[int, float] = (0, 0.0)
    for r in records:  # one pass: this loop dominates decide() at 10,000 records
        state = r.state
        if state is TrialState.PENDING or state is TrialState.RUNNING:
            active.append(r)
            continue
        if state is TrialState.FAILED:
            failed += 1
            finished.append(Observation(r.index, r.params, r.key, None))
            continue
        value = _strategy_value(r, objective)
        violation = constraints(r.metrics) if constraints is not None else 0.0
        finished.append(
            Observation(
                r.index,
                r.params,
                r.key,
                value,
                objectives=_objective_values(r, objectives) if plan.extra_objectives else (),
                violation=violation,
            )
        )
        if objective.metric in r.metrics and value is not None and violation == 0:
            rank = (r.fidelity or 0, value)
            if best is None or rank > best_rank:
                best, best_rank = r, rank

    def finish(reason: FinishReason, message: str, stops: Sequence[Stop] = ()) -> Decisions:
        named = {s.trial for s in stops}
        ending = [
            Stop(r.name, "ExperimentFinished", f"{reason}: {message}")
            for r in active
            if r.name not in named
        ]
        return Decisions(
            stop=(*stops, *ending),
            finished=True,
            reason=reason,
            message=message,
            best=best,
            front=front,
        )

    if failed > budget.max_failed_trials:
        return finish(
            FinishReason.TOO_MANY_FAILURES,
            f"{explain_failures(records)}; more than maxFailedTrials ({budget.max_failed_trials})",
        )
    if budget.goal is not None and best is not None:
        value = objective.of(best.metrics)
        if value is not None and value >= objective.sign * budget.goal:
            return finish(
                FinishReason.GOAL_REACHED,
                f"{best.name} reached {objective.metric} {best.metrics[objective.metric]:.4g}",
            )

    stops = [
        Stop(
            r.name,
            "Timeout",
            f"ran longer than timeoutSeconds ({spec.trial.timeout_seconds})",
            failed=True,
        )
        for r in active
        if (deadline := timeout_deadline(spec, r)) is not None and now > deadline
    ]
    stopping = {s.trial for s in stops}
    stops += [s for s in plan.scheduler.stops(records, objective) if s.trial not in stopping]
    stopping = {s.trial for s in stops}
    still_active = [r for r in active if r.name not in stopping]

    slots = budget.parallel_trials - len(still_active)
    promotions = plan.scheduler.promotions(records, objective)[: max(0, slots)]
    slots -= len(promotions)

    starts: list[StartTrial] = []
    exhausted = False
    new_trials = min(slots, budget.max_trials - len(records))
    if new_trials > 0:
        running = [Observation(r.index, r.params, r.key, None) for r in active]
        taken = {r.key for r in records}
        for index in range(next_index, next_index + new_trials):
            params = plan.strategy.suggest(index, finished, running, frozenset(taken), prior)
            if params is None:
                exhausted = True
                break
            params = plan.space.active(params)
            key = plan.space.key(params)
            start = StartTrial(
                index=index,
                params=params,
                key=key,
                architecture=plan.space.to_architecture(params),
                fidelity=plan.scheduler.initial_fidelity(index),
            )
            starts.append(start)
            running.append(Observation(index, params, key, None))
            taken.add(key)

    if not still_active and not promotions and not starts:
        oneshot = isinstance(spec.strategy, OneshotStrategy)
        if oneshot and (exhausted or len(records) >= budget.max_trials):
            return finish(
                FinishReason.BUDGET_SPENT,
                f"all {len(records)} architectures derived from the supernet were trained",
                stops,
            )
        if len(records) >= budget.max_trials:
            return finish(FinishReason.BUDGET_SPENT, f"all {budget.max_trials} trials done", stops)
        if exhausted:
            return finish(
                FinishReason.SPACE_EXHAUSTED,
                f"every architecture of the space was tried ({len(records)})",
                stops,
            )
    return Decisions(
        start=tuple(starts),
        promote=tuple(promotions),
        stop=tuple(stops),
        best=best,
        front=front,
    )
