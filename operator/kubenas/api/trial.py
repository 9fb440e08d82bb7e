"""Wire models of the ``NASTrial`` resource: one architecture of an experiment and its runs.

``spec`` is written once, when the trial is created, and holds what the engine decided;
``status`` holds what happened. :func:`to_record` and :func:`status_of` translate between the
resource and the engine's :class:`TrialRecord`, so records live in the API server only.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import Field

from kubenas.api._base import WireModel
from kubenas.api.records import (
    DerivedArchitecture,
    ScreenScores,
    TrialRecord,
    TrialRole,
    TrialState,
)

TRIAL_KIND = "NASTrial"


class TrialSpec(WireModel):
    experiment: str
    index: int = Field(ge=0)
    parameters: dict[str, Any]
    architecture: dict[str, Any]
    key: str
    fidelity: int | None = None
    role: TrialRole = TrialRole.CANDIDATE
    source: str | None = Field(default=None, description="a final trial's candidate trial")
    baseline: str | None = Field(default=None, description="a baseline trial's baseline name")
    replica: int | None = Field(default=None, ge=0, description="a final trial's seed number")


class ScreenResult(WireModel):
    """Where a screen trial's scores are: one ConfigMap per proxy, holding each screened
    architecture's rank (a status cannot hold 20,000 scores within its size bound)."""

    candidates: int = Field(ge=0)
    proxies: list[str]
    config_maps: list[str]


class RungResult(WireModel):
    fidelity: int
    metrics: dict[str, float]


class EpochValue(WireModel):
    epoch: int
    value: float


class TrialStatus(WireModel):
    state: TrialState = TrialState.PENDING
    fidelity: int | None = None
    resumed_from: str | None = None
    job: str | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    results: list[RungResult] = Field(default_factory=list)
    intermediate: list[EpochValue] = Field(default_factory=list)
    checkpoint: str | None = None
    metrics_source: str | None = Field(
        default=None, description="where the final metrics were read from"
    )
    device: str | None = Field(
        default=None, description="the device the trial's cost metrics were measured on"
    )
    lease: str | None = Field(
        default=None, description="the id of the current or last lease to a worker pod"
    )
    worker: str | None = Field(default=None, description="the worker Job of the current lease")
    lost_leases: int = Field(
        default=0, ge=0, description="runs lost with their worker pod, queued again since"
    )
    reason: str | None = None
    message: str | None = None
    queued_at: str | None = Field(
        default=None, description="when the current run was asked for, while it waits to start"
    )
    queue_seconds: float = Field(
        default=0.0, description="seconds all runs waited between being asked for and starting"
    )
    start_time: str | None = None
    completion_time: str | None = None
    screen: ScreenResult | None = None
    derived: list[DerivedArchitecture] | None = Field(
        default=None, description="a supernet trial's derived architectures, best first"
    )


def to_rfc3339(seconds: float | None) -> str | None:
    """A timestamp as the API server stores them (RFC 3339, UTC, whole seconds)."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def from_rfc3339(text: str | None) -> float | None:
    """Seconds of an RFC 3339 time, in the API's ``Z`` form or the client's ``+00:00`` one."""
    if not text:
        return None
    parsed = datetime.fromisoformat(text)
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def to_record(
    name: str,
    spec: TrialSpec,
    status: TrialStatus | None,
    screen_scores: ScreenScores | None = None,
) -> TrialRecord:
    """The engine's view of a NASTrial; one without status yet is Pending at its spec fidelity.
    A screen trial's scores live outside it (``status.screen``): the caller reads them."""
    status = status or TrialStatus()
    return TrialRecord(
        name=name,
        index=spec.index,
        role=spec.role,
        source=spec.source,
        baseline=spec.baseline,
        replica=spec.replica,
        screen_scores=screen_scores,
        derived=status.derived,
        params=spec.parameters,
        key=spec.key,
        state=status.state,
        fidelity=status.fidelity if status.fidelity is not None else spec.fidelity,
        resumed_from=status.resumed_from,
        metrics=status.metrics,
        results={r.fidelity: r.metrics for r in status.results},
        intermediate=[(p.epoch, p.value) for p in status.intermediate],
        checkpoint=status.checkpoint,
        metrics_source=status.metrics_source,
        device=status.device,
        lease=status.lease,
        worker=status.worker,
        lost_leases=status.lost_leases,
        reason=status.reason,
        message=status.message,
        queued_at=from_rfc3339(status.queued_at),
        queue_seconds=status.queue_seconds,
        started_at=from_rfc3339(status.start_time),
        finished_at=from_rfc3339(status.completion_time),
    )


def status_of(
    record: TrialRecord, job: str | None, screen_config_maps: list[str] | None = None
) -> TrialStatus:
    """The NASTrial status that stores ``record`` (a screen trial's scores: in the ConfigMaps
    named, one per proxy in the order of its scores)."""
    scores = record.screen_scores
    screen = (
        ScreenResult(
            candidates=len(next(iter(scores.values()), [])),
            proxies=list(scores),
            config_maps=screen_config_maps,
        )
        if scores is not None and screen_config_maps is not None
        else None
    )
    return TrialStatus(
        state=record.state,
        fidelity=record.fidelity,
        resumed_from=record.resumed_from,
        job=job,
        metrics=record.metrics,
        results=[RungResult(fidelity=f, metrics=m) for f, m in sorted(record.results.items())],
        intermediate=[EpochValue(epoch=e, value=v) for e, v in record.intermediate],
        checkpoint=record.checkpoint,
        metrics_source=record.metrics_source,
        device=record.device,
        lease=record.lease,
        worker=record.worker,
        lost_leases=record.lost_leases,
        reason=record.reason,
        message=record.message,
        queued_at=to_rfc3339(record.queued_at),
        queue_seconds=round(record.queue_seconds, 3),
        start_time=to_rfc3339(record.started_at),
        completion_time=to_rfc3339(record.finished_at),
        screen=screen,
        derived=record.derived,
    )
