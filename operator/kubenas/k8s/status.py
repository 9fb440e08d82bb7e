"""Pure builders of NASExperiment status: conditions kstatus and ``kubectl wait`` understand,
counters by trial state, the best trial and a bounded Pareto front. Never a list of all trials."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from kubenas.api.experiment import NASExperiment
from kubenas.api.records import TrialRecord, TrialState
from kubenas.engine import Decisions, planner


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(
    previous: Sequence[dict[str, Any]],
    kind: str,
    status: str,
    reason: str,
    message: str,
    generation: int,
) -> dict[str, Any]:
    """A condition keeping its lastTransitionTime while its status does not change."""
    old = next((c for c in previous if c.get("type") == kind), None)
    changed = old is None or old.get("status") != status
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": now_rfc3339() if changed else old["lastTransitionTime"],  # type: ignore[index]
        "observedGeneration": generation,
    }


def conditions(
    previous: Sequence[dict[str, Any]],
    generation: int,
    *,
    finished: bool,
    succeeded: bool,
    reason: str,
    message: str,
    metrics_problem: str | None,
) -> list[dict[str, Any]]:
    """Ready/Succeeded/Failed for people and ``kubectl wait``; Reconciling/Stalled for kstatus
    (Flux, Argo CD): Reconciling while the search runs, Stalled once it failed."""
    if not finished:
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
    out = [_condition(previous, k, s, r, m, generation) for k, s, r, m in states]
    if metrics_problem is not None:
        out.append(
            _condition(
                previous,
                "MetricsAvailable",
                "False",
                "PrometheusUnreachable",
                metrics_problem,
                generation,
            )
        )
    else:
        out.append(
            _condition(
                previous,
                "MetricsAvailable",
                "True",
                "PrometheusReachable",
                "metrics come from Prometheus",
                generation,
            )
        )
    return out


def _summary(record: TrialRecord, experiment: NASExperiment) -> dict[str, Any]:
    space = planner(experiment.spec).space
    metric = experiment.spec.objective.metric
    return {
        "name": record.name,
        "objective": record.metrics.get(metric),
        "fidelity": record.fidelity,
        "architecture": space.to_architecture(space.active(record.params)),
        "metrics": dict(record.metrics),
    }


def experiment_status(
    experiment: NASExperiment,
    previous: dict[str, Any],
    generation: int,
    records: Sequence[TrialRecord],
    decisions: Decisions,
    *,
    metrics_problem: str | None = None,
) -> dict[str, Any]:
    """The whole status subresource of an experiment that runs or has run."""
    counts = {state: sum(r.state == state for r in records) for state in TrialState}
    finished = decisions.finished
    succeeded = decisions.succeeded
    reason, message = str(decisions.reason or "Running"), decisions.message
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "conditions": conditions(
            previous.get("conditions") or [],
            generation,
            finished=finished,
            succeeded=succeeded,
            reason=reason,
            message=message,
            metrics_problem=metrics_problem,
        ),
        "trials": {
            "total": len(records),
            "pending": counts[TrialState.PENDING],
            "running": counts[TrialState.RUNNING],
            "succeeded": counts[TrialState.SUCCEEDED],
            "failed": counts[TrialState.FAILED],
            "stopped": counts[TrialState.STOPPED],
            "done": counts[TrialState.SUCCEEDED]
            + counts[TrialState.FAILED]
            + counts[TrialState.STOPPED],
        },
        "startTime": previous.get("startTime") or now_rfc3339(),
        "bestTrial": _summary(decisions.best, experiment) if decisions.best else None,
        "paretoFront": [{"name": r.name, "metrics": dict(r.metrics)} for r in decisions.pareto]
        or None,
        "completionTime": (previous.get("completionTime") or now_rfc3339()) if finished else None,
        "finishReason": reason if finished else None,
    }
    return status


def failed_to_run_status(
    previous: dict[str, Any],
    generation: int,
    reason: str,
    message: str,
    metrics_problem: str | None,
) -> dict[str, Any]:
    """Status of a spec that passed the schema but cannot run: Failed with the reason, at once."""
    return {
        "observedGeneration": generation,
        "conditions": conditions(
            previous.get("conditions") or [],
            generation,
            finished=True,
            succeeded=False,
            reason=reason,
            message=message,
            metrics_problem=metrics_problem,
        ),
        "completionTime": previous.get("completionTime") or now_rfc3339(),
        "finishReason": reason,
    }
