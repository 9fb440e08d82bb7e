"""Wire model of ``NASExperiment.status``: what the operator tells people and pipelines.

Conditions that kstatus and ``kubectl wait`` read, counters by trial state with the time trials
waited to start, the best trial and a bounded Pareto front; never a list of every trial (those
are ``NASTrial`` objects). ``tests/unit/test_crd_status.py`` keeps it in step with the CRD.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from kubenas.api._base import WireModel

PARETO_LIMIT = 20


class Condition(WireModel):
    """A standard Kubernetes condition (``metav1.Condition``)."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str | None = None
    message: str | None = None
    last_transition_time: str | None = None
    observed_generation: int | None = None


class TrialCounts(WireModel):
    """Trials by state, and how long they waited between being asked for and starting (for a
    GPU, a quota, a node): the part of an experiment's wall time no trainer ran."""

    total: int
    pending: int
    running: int
    succeeded: int
    failed: int
    stopped: int
    done: int
    infeasible: int = Field(
        default=0, description="done trials outside the objective's constraints"
    )
    queue_seconds: float = Field(default=0.0, description="seconds all trial runs waited")
    mean_queue_seconds: float = Field(
        default=0.0, description="mean wait of the trials that started at least once"
    )


class BestTrial(WireModel):
    name: str
    objective: float | None = None
    fidelity: int | None = None
    architecture: dict[str, Any]
    metrics: dict[str, float]


class ParetoMember(WireModel):
    name: str
    metrics: dict[str, float]


class ParetoSummary(WireModel):
    """The whole front of feasible trials (``paretoFront`` lists at most PARETO_LIMIT of it)
    and the hypervolume it dominates from ``referencePoint`` (one value per objective)."""

    size: int
    hypervolume: float | None = None
    reference_point: dict[str, float]


class ScreeningStatus(WireModel):
    """The screen stage as a user checks it: how many architectures were scored, in how long,
    and whether each proxy (and their ensemble) ranks the trained candidates as the objective
    does (Spearman; null below three trained candidates)."""

    trial: str | None = None
    state: str
    proxies: list[str]
    candidates: int | None = None
    screened: int | None = None
    seconds: float | None = Field(default=None, description="the screen trial's run time")
    trained_screened: int | None = Field(
        default=None, description="trained candidates that were screened"
    )
    spearman: dict[str, float | None] | None = None
    message: str | None = Field(default=None, description="what went wrong with the scores")


class SupernetStatus(WireModel):
    """The weight-sharing stage as a user checks it: the supernet trial, its attempts and run
    time, how many architectures it derived, and whether its scores rank the trained ones as
    the objective does (Spearman; null below three trained)."""

    method: str | None = None
    epochs: int
    trial: str | None = None
    state: str
    attempts: int | None = None
    seconds: float | None = Field(default=None, description="the supernet trials' run time")
    gpu_seconds: float | None = Field(
        default=None, description="seconds times the GPUs each trial asks for"
    )
    derived: int | None = None
    best_score: float | None = Field(
        default=None, description="supernet score of the best derived architecture"
    )
    trained_derived: int | None = None
    spearman: float | None = None


FINAL_NETWORK_LIMIT = 116  # final.topK (at most 100) and baselines (at most 16)


class SeedSpread(WireModel):
    """One metric of a network over the seeds it was trained on."""

    mean: float
    std: float
    n: int


class FinalNetwork(WireModel):
    """A retrained candidate (``nas``, named by its search trial) or a baseline, by name."""

    name: str
    kind: Literal["nas", "baseline"]
    seeds: int = Field(description="seeds trained to the end")
    failed: int = 0
    running: int = 0
    metrics: dict[str, SeedSpread]


class FinalComparison(WireModel):
    """The best retrained network against one baseline, on the held-out test metric."""

    nas: str
    baseline: str
    metric: str
    nas_mean: float
    baseline_mean: float
    difference: float
    nas_better: bool


class FinalStatus(WireModel):
    """The final stage (docs/final.md): what it retrains, or waits for approval to; each
    network over its seeds; NAS against the baselines; where the exported model is."""

    state: Literal["AwaitingApproval", "Running", "Succeeded", "Failed"]
    metric: str = Field(description="the held-out metric networks are compared on")
    finalists: list[str] = Field(default_factory=list, max_length=100)
    best: str | None = None
    networks: list[FinalNetwork] = Field(default_factory=list, max_length=FINAL_NETWORK_LIMIT)
    comparison: list[FinalComparison] = Field(default_factory=list, max_length=16)
    export: str | None = Field(
        default=None, description="folder of the best network's exported model"
    )


class ExperimentStatus(WireModel):
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    trials: TrialCounts | None = None
    best_trial: BestTrial | None = None
    pareto_front: list[ParetoMember] | None = Field(default=None, max_length=PARETO_LIMIT)
    pareto: ParetoSummary | None = None
    screening: ScreeningStatus | None = None
    supernet: SupernetStatus | None = None
    final: FinalStatus | None = None
    start_time: str | None = None
    completion_time: str | None = None
    finish_reason: str | None = None

    def condition(self, kind: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == kind), None)

    def to_patch(self) -> dict[str, Any]:
        """A JSON merge patch that makes the stored status this one: fields left out here are
        sent as null, which removes them (a search resumed after finishing loses its end)."""
        cleared = {info.alias or name: None for name, info in type(self).model_fields.items()}
        return {**cleared, **self.to_wire()}
