"""Multi-fidelity schedulers: at which fidelity a trial starts, which to promote, which to stop."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from kubenas.api.records import TrialRecord


@dataclass(frozen=True)
class Promotion:
    """Continue ``trial`` up to ``fidelity``, resuming from its checkpoint."""

    trial: str
    fidelity: int
    resume_from: str | None


@dataclass(frozen=True)
class Stop:
    """End ``trial`` now; ``failed`` says whether to record it as a failure (a timeout) rather
    than a deliberate stop (early stopping, the experiment finishing)."""

    trial: str
    reason: str
    message: str
    failed: bool = False


@dataclass(frozen=True)
class Objective:
    """Reads a record's objective, oriented so that larger is better."""

    metric: str
    sign: float

    def of(self, metrics: dict[str, float]) -> float | None:
        value = metrics.get(self.metric)
        return None if value is None else self.sign * float(value)


class Scheduler(ABC):
    @abstractmethod
    def initial_fidelity(self, index: int) -> int | None:
        """Fidelity for a new trial (None: the trainer's own default)."""

    def promotions(self, records: Sequence[TrialRecord], objective: Objective) -> list[Promotion]:
        """Idle trials that earned more training, most deserving first."""
        return []

    def stops(self, records: Sequence[TrialRecord], objective: Objective) -> list[Stop]:
        """Running trials to stop now."""
        return []


class FullFidelity(Scheduler):
    """No early stopping: every trial trains to the maximum fidelity."""

    def __init__(self, fidelity: int | None) -> None:
        self.fidelity = fidelity

    def initial_fidelity(self, index: int) -> int | None:
        return self.fidelity
