"""Trial records: the only state of a search. Locally JSON lines, in a cluster NASTrial status."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class TrialState(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    STOPPED = "Stopped"

    @property
    def active(self) -> bool:
        return self in (TrialState.PENDING, TrialState.RUNNING)


class TrialRole(StrEnum):
    """Which stage a trial belongs to: a candidate is trained and compared; a screen trial scores
    many architectures with zero-cost proxies before any candidate starts; after the search a
    final trial retrains a chosen candidate on one seed, and a baseline trial trains a
    hand-designed network exactly as the final trials are trained. A supernet trial (strategy
    ``oneshot``) trains one weight-sharing network whose derived architectures become the
    candidates."""

    CANDIDATE = "candidate"
    SCREEN = "screen"
    SUPERNET = "supernet"
    FINAL = "final"
    BASELINE = "baseline"


# A screen trial's values per proxy, in the order of the screened candidates (None: undefined).
ScreenScores = dict[str, list[float | None]]


class DerivedArchitecture(BaseModel):
    """One architecture a supernet trial derived, with its supernet score (the validation
    accuracy of its path with the supernet's weights)."""

    model_config = ConfigDict(frozen=True)

    params: dict[str, Any]
    score: float


class TrialRecord(BaseModel):
    """Everything the engine knows about one trial (an architecture and its training runs).

    ``fidelity`` is the target of the current or last run; ``results`` maps each completed
    fidelity to its final metrics, so a multi-fidelity scheduler can rank trials per rung;
    ``intermediate`` holds the objective per epoch of the current run (median stopping).
    ``started_at`` is when the current run's process or container started (the trial's clock);
    ``queued_at`` is when the run was asked for, while it waits; ``queue_seconds`` sums the
    waits of all its runs. With trial reuse a run is *leased* to a worker pod: it is open while
    the record is Running with a ``worker``. :mod:`kubenas.transitions` is the only code that
    changes a record.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    index: int = Field(ge=0)
    role: TrialRole = TrialRole.CANDIDATE
    params: dict[str, Any]
    key: str = Field(description="canonical encoding of the architecture, for de-duplication")
    state: TrialState = TrialState.PENDING
    fidelity: int | None = None
    resumed_from: str | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    results: dict[int, dict[str, float]] = Field(default_factory=dict)
    intermediate: list[tuple[int, float]] = Field(default_factory=list)
    checkpoint: str | None = None
    screen_scores: ScreenScores | None = Field(
        default=None,
        description="a screen trial's proxy values, per proxy in the order of the screened "
        "candidates (None: the proxy is undefined for that network)",
    )
    derived: list[DerivedArchitecture] | None = Field(
        default=None, description="a supernet trial's derived architectures, best first"
    )
    metrics_source: str | None = Field(
        default=None, description="where the final metrics were read from"
    )
    device: str | None = Field(
        default=None, description="the device the trial's cost metrics were measured on"
    )
    source: str | None = Field(default=None, description="a final trial's candidate trial")
    baseline: str | None = Field(default=None, description="a baseline trial's baseline name")
    replica: int | None = Field(
        default=None, ge=0, description="a final or baseline trial's seed number"
    )
    lease: str | None = Field(
        default=None,
        description="with trial reuse: the id of the current or last lease to a worker pod",
    )
    worker: str | None = Field(
        default=None, description="with trial reuse: the worker Job of the current lease"
    )
    lost_leases: int = Field(
        default=0, ge=0, description="runs lost with their worker pod, queued again since"
    )
    reason: str | None = None
    message: str | None = None
    created_at: float | None = None
    queued_at: float | None = None
    queue_seconds: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None

    def with_changes(self, **changes: Any) -> TrialRecord:
        return self.model_copy(update=changes)
