"""Median stopping (Golovin et al., Google Vizier 2017): stop a running trial whose best value so
far is worse than the median of what other trials had reached at the same epoch."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from kubenas.api.records import TrialRecord, TrialState
from kubenas.schedulers._base import Objective, Scheduler, Stop


class MedianStopping(Scheduler):
    def __init__(self, minimum: int, maximum: int, grace_trials: int) -> None:
        self.minimum = minimum
        self.maximum = maximum
        self.grace_trials = grace_trials

    def initial_fidelity(self, index: int) -> int | None:
        return self.maximum

    def stops(self, records: Sequence[TrialRecord], objective: Objective) -> list[Stop]:
        finished = [r for r in records if r.state == TrialState.SUCCEEDED and r.intermediate]
        if len(finished) < self.grace_trials:
            return []
        sign = objective.sign
        out: list[Stop] = []
        for r in records:
            if r.state != TrialState.RUNNING or not r.intermediate:
                continue
            epoch = r.intermediate[-1][0]
            if epoch < self.minimum or epoch >= self.maximum:
                continue
            best_so_far = max(sign * v for e, v in r.intermediate if e <= epoch)
            peers = [
                max(sign * v for e, v in other.intermediate if e <= epoch)
                for other in finished
                if any(e <= epoch for e, _ in other.intermediate)
            ]
            if len(peers) < self.grace_trials:
                continue
            median = statistics.median(peers)
            if best_so_far < median:
                out.append(
                    Stop(
                        r.name,
                        "EarlyStopped",
                        f"{objective.metric} {sign * best_so_far:.4g} at epoch {epoch} is below "
                        f"the median {sign * median:.4g} of {len(peers)} trials",
                    )
                )
        return out
