"""Pure builders of NASExperiment status (:class:`~kubenas.api.status.ExperimentStatus`):
conditions kstatus and ``kubectl wait`` understand, counters by trial state with the time trials
waited to start, the best trial and a bounded Pareto front. Never a list of all trials."""

from __future__ import annotations

from collections.abc import Sequence

from kubenas.api.experiment import NASExperiment
from kubenas.api.experiment import Objective as ObjectiveSpec
from kubenas.api.records import TrialRecord, TrialRole, TrialState
from kubenas.api.status import (
    BestTrial,
    Condition,
    ExperimentStatus,
    FinalComparison,
    FinalNetwork,
    FinalStatus,
    ParetoMember,
    ParetoSummary,
    ScreeningStatus,
    SeedSpread,
    SupernetStatus,
    TrialCounts,
)
from kubenas.api.trial import to_rfc3339
from kubenas.contract import gpus_requested
from kubenas.engine import Decisions, planner
from kubenas.final_results import best_network, final_results
from kubenas.front import Front, infeasible_count
from kubenas.k8s.metrics_source import Availability, MetricsSnapshot
from kubenas.oneshot import supernet_summary
from kubenas.screening import screening_summary

METRICS_AVAILABLE = "MetricsAvailable"
AWAITING_APPROVAL = "AwaitingApproval"
NO_PROMETHEUS = (
    "no Prometheus configured (--prometheus-url): final metrics come from termination "
    "messages, and no per-epoch progress is read"
)


def _condition(
    previous: Sequence[Condition],
    kind: str,
    status: str,
    reason: str,
    message: str,
    generation: int,
    now: float,
) -> Condition:
    """A condition keeping its lastTransitionTime while its status does not change."""
    old = next((c for c in previous if c.type == kind), None)
    since = old.last_transition_time if old is not None and old.status == status else None
    return Condition.model_validate(
        {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": since or to_rfc3339(now),
            "observedGeneration": generation,
        }
    )


def metrics_state(previous: Sequence[Condition], metrics: MetricsSnapshot) -> tuple[str, str, str]:
    """(status, reason, message) of MetricsAvailable: True only when this pass's query to
    Prometheus succeeded; a pass that did not ask keeps what the last one found."""
    if metrics.availability is Availability.NOT_CONFIGURED:
        return "False", "NotConfigured", NO_PROMETHEUS
    if metrics.availability is Availability.UNREACHABLE:
        return "False", "PrometheusUnreachable", metrics.problem or "Prometheus unreachable"
    if metrics.availability is Availability.ANSWERED:
        return "True", "PrometheusReachable", "Prometheus answered the last query"
    old = next((c for c in previous if c.type == METRICS_AVAILABLE), None)
    if old is not None and old.reason not in (None, "NotConfigured"):
        return old.status, old.reason or "", old.message or ""
    return "Unknown", "NotQueried", "Prometheus has not been asked yet: no trial has run"


def conditions(
    previous: Sequence[Condition],
    generation: int,
    *,
    finished: bool,
    succeeded: bool,
    reason: str,
    message: str,
    metrics: MetricsSnapshot,
    now: float,
    awaiting_approval: bool | None = None,
) -> list[Condition]:
    """Ready/Succeeded/Failed for people and ``kubectl wait``; Reconciling/Stalled for kstatus
    (Flux, Argo CD): Reconciling while the search runs, Stalled once it failed. With a final
    stage, AwaitingApproval says whether it waits for a person (who is not reconciling)."""
    if awaiting_approval:
        waits = "the final stage awaits approval (docs/final.md)"
        states = [
            ("Ready", "True", "AwaitingApproval", message or waits),
            ("Succeeded", "False", "AwaitingApproval", waits),
            ("Failed", "False", "AwaitingApproval", "no failure"),
            ("Reconciling", "False", "AwaitingApproval", waits),
            ("Stalled", "False", "AwaitingApproval", waits),
        ]
    elif not finished:
        states = [
            ("Ready", "True", "Running", message or "the search is running"),
            ("Succeeded", "False", "Running", "the search has not finished"),
            ("Failed", "False", "Running", "no failure"),
            ("Reconciling", "True", "Searching", message or "trials are running"),
            ("Stalled", "False", "Running", "progressing"),
        ]
    elif succeeded:
        states = [
            ("Ready", "True", "Succeeded", message),
            ("Succeeded", "True", reason, message),
            ("Failed", "False", reason, "no failure"),
            ("Reconciling", "False", reason, "the search has finished"),
            ("Stalled", "False", reason, "the search has finished"),
        ]
    else:
        states = [
            ("Ready", "False", "Failed", message),
            ("Succeeded", "False", reason, message),
            ("Failed", "True", reason, message),
            ("Reconciling", "False", reason, "the search has stopped"),
            ("Stalled", "True", reason, message),
        ]
    states.append((METRICS_AVAILABLE, *metrics_state(previous, metrics)))
    if awaiting_approval is not None:
        states.append(
            (
                AWAITING_APPROVAL,
                "True" if awaiting_approval else "False",
                "AwaitingApproval" if awaiting_approval else "Released",
                "annotate the experiment to approve: docs/final.md"
                if awaiting_approval
                else "the final stage needs no approval, or has it",
            )
        )
    return [_condition(previous, k, s, r, m, generation, now) for k, s, r, m in states]


def trial_counts(
    records: Sequence[TrialRecord], objective: ObjectiveSpec | None = None
) -> TrialCounts:
    """Candidates by state and their queue time: the total of every finished wait, and its mean
    per trial (the screen trial is counted under ``screening``, not against the budget); done
    trials outside ``objective``'s constraints are also counted as infeasible."""
    records = [r for r in records if r.role is TrialRole.CANDIDATE]
    counts = {state: sum(r.state == state for r in records) for state in TrialState}
    infeasible = infeasible_count(objective, records) if objective is not None else 0
    queued = sum(r.queue_seconds for r in records)
    return TrialCounts(
        total=len(records),
        pending=counts[TrialState.PENDING],
        running=counts[TrialState.RUNNING],
        succeeded=counts[TrialState.SUCCEEDED],
        failed=counts[TrialState.FAILED],
        stopped=counts[TrialState.STOPPED],
        done=counts[TrialState.SUCCEEDED] + counts[TrialState.FAILED] + counts[TrialState.STOPPED],
        infeasible=infeasible,
        queue_seconds=round(queued, 1),
        mean_queue_seconds=round(queued / len(records), 1) if records else 0.0,
    )


def _best(record: TrialRecord, experiment: NASExperiment) -> BestTrial:
    space = planner(experiment.spec).space
    return BestTrial(
        name=record.name,
        objective=record.metrics.get(experiment.spec.objective.metric),
        fidelity=record.fidelity,
        architecture=space.to_architecture(space.active(record.params)),
        metrics=dict(record.metrics),
    )


def experiment_status(
    experiment: NASExperiment,
    previous: ExperimentStatus,
    generation: int,
    records: Sequence[TrialRecord],
    decisions: Decisions,
    *,
    metrics: MetricsSnapshot,
    now: float,
) -> ExperimentStatus:
    """The whole status subresource of an experiment that runs or has run."""
    finished = decisions.finished
    reason = str(decisions.reason or "Running")
    return ExperimentStatus(
        observed_generation=generation,
        conditions=conditions(
            previous.conditions,
            generation,
            finished=finished,
            succeeded=decisions.succeeded,
            reason=reason,
            message=decisions.message,
            metrics=metrics,
            now=now,
            awaiting_approval=decisions.awaiting_approval
            if experiment.spec.final is not None
            else None,
        ),
        trials=trial_counts(records, experiment.spec.objective),
        start_time=previous.start_time or to_rfc3339(now),
        best_trial=_best(decisions.best, experiment) if decisions.best else None,
        pareto_front=[ParetoMember(name=r.name, metrics=dict(r.metrics)) for r in decisions.pareto]
        or None,
        pareto=_pareto(decisions.front),
        completion_time=(previous.completion_time or to_rfc3339(now)) if finished else None,
        finish_reason=reason if finished else None,
        screening=_screening(experiment, records),
        supernet=_supernet(experiment, records),
        final=_final(experiment, records, decisions),
    )


def _final(
    experiment: NASExperiment, records: Sequence[TrialRecord], decisions: Decisions
) -> FinalStatus | None:
    """The final stage once the search has handed it finalists (or waits to)."""
    results = final_results(experiment.spec, records)
    if results is None or not (decisions.finalists or results["networks"]):
        return None
    if decisions.awaiting_approval:
        state = "AwaitingApproval"
    elif not decisions.finished:
        state = "Running"
    else:
        state = "Succeeded" if decisions.succeeded else "Failed"
    best = best_network(results)
    return FinalStatus(
        state=state,
        metric=results["metric"],
        finalists=[r.name for r in decisions.finalists],
        best=results["best"],
        networks=[
            FinalNetwork(
                name=n["name"],
                kind=n["kind"],
                seeds=n["seeds"],
                failed=n["failed"],
                running=n["running"],
                metrics={k: SeedSpread(**v) for k, v in n["metrics"].items()},
            )
            for n in results["networks"]
        ],
        comparison=[
            FinalComparison(
                nas=c["nas"],
                baseline=c["baseline"],
                metric=c["metric"],
                nas_mean=c["nas_mean"],
                baseline_mean=c["baseline_mean"],
                difference=c["difference"],
                nas_better=c["nas_better"],
            )
            for c in results["comparison"]
        ],
        export=best["export"] if best is not None else None,
    )


def _pareto(front: Front | None) -> ParetoSummary | None:
    if front is None:
        return None
    return ParetoSummary(
        size=front.size,
        hypervolume=None if front.hypervolume is None else round(front.hypervolume, 6),
        reference_point=front.reference,
    )


def _supernet(experiment: NASExperiment, records: Sequence[TrialRecord]) -> SupernetStatus | None:
    summary = supernet_summary(
        experiment.spec, planner(experiment.spec).space, records, gpus_requested(experiment)
    )
    return SupernetStatus.model_validate(summary) if summary is not None else None


def _screening(experiment: NASExperiment, records: Sequence[TrialRecord]) -> ScreeningStatus | None:
    summary = screening_summary(experiment.spec, planner(experiment.spec).space, records)
    return ScreeningStatus.model_validate(summary) if summary is not None else None


def failed_to_run_status(
    previous: ExperimentStatus,
    generation: int,
    reason: str,
    message: str,
    *,
    metrics: MetricsSnapshot,
    now: float,
) -> ExperimentStatus:
    """Status of a spec that passed the schema but cannot run: Failed with the reason, at once;
    what earlier passes recorded (counters, best trial) stays."""
    return previous.model_copy(
        update={
            "observed_generation": generation,
            "conditions": conditions(
                previous.conditions,
                generation,
                finished=True,
                succeeded=False,
                reason=reason,
                message=message,
                metrics=metrics,
                now=now,
            ),
            "completion_time": previous.completion_time or to_rfc3339(now),
            "finish_reason": reason,
        }
    )
