"""Asynchronous successive halving (Li et al., MLSys 2020) and asynchronous Hyperband brackets.

Trials start at the lowest rung of their bracket; whenever a slot frees, a trial in the top
1/eta of its rung that has not moved up yet is promoted to the next rung and resumes from its
checkpoint. Nothing waits for a rung to fill, so workers never idle.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from kubenas.api.records import TrialRecord, TrialState
from kubenas.schedulers._base import Objective, Promotion, Scheduler


def rungs(minimum: int, maximum: int, eta: int) -> list[int]:
    """Rung fidelities from ``minimum`` to ``maximum``, each about ``eta`` times the one below."""
    count = math.floor(math.log(maximum / minimum, eta) + 1e-9)
    values = sorted({max(minimum, round(maximum / eta**k)) for k in range(count + 1)})
    return values


class SuccessiveHalving(Scheduler):
    """ASHA with one bracket (``brackets=1``) or async Hyperband with one bracket per start rung."""

    def __init__(self, minimum: int, maximum: int, eta: int, hyperband: bool) -> None:
        self.eta = eta
        self.rungs = rungs(minimum, maximum, eta)
        top = len(self.rungs) - 1
        # Bracket b starts at rung b; Hyperband sends more trials to the aggressive brackets.
        brackets = range(top + 1) if hyperband else range(1)
        self.cycle: list[int] = []
        for b in brackets:
            halvings = top - b
            self.cycle.extend([b] * math.ceil((top + 1) / (halvings + 1) * eta**halvings))

    def bracket(self, index: int) -> int:
        return self.cycle[index % len(self.cycle)]

    def initial_fidelity(self, index: int) -> int | None:
        return self.rungs[self.bracket(index)]

    def promotions(self, records: Sequence[TrialRecord], objective: Objective) -> list[Promotion]:
        out: list[Promotion] = []
        by_bracket: dict[int, list[TrialRecord]] = {}
        for r in records:
            by_bracket.setdefault(self.bracket(r.index), []).append(r)
        for rung in range(len(self.rungs) - 2, -1, -1):
            fidelity, next_fidelity = self.rungs[rung], self.rungs[rung + 1]
            for members in by_bracket.values():
                scored = []
                for r in members:
                    result = r.results.get(fidelity)
                    value = objective.of(result) if result is not None else None
                    if value is not None:
                        scored.append((value, -r.index, r))
                scored.sort(key=lambda t: (t[0], t[1]), reverse=True)
                for _, _, r in scored[: len(scored) // self.eta]:
                    if r.state == TrialState.SUCCEEDED and r.fidelity == fidelity:
                        out.append(Promotion(r.name, next_fidelity, r.checkpoint))
        return out
