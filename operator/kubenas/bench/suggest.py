"""Latency of one ``decide`` call per strategy when the experiment already has N finished trials."""

from __future__ import annotations

import random
import statistics
import time
from dataclasses import dataclass

from kubenas.api.records import TrialRecord, TrialState
from kubenas.bench.nb201 import benchmark_spec
from kubenas.engine import decide, planner


@dataclass(frozen=True)
class Latency:
    strategy: str
    records: int
    median_ms: float
    max_ms: float


def synthetic_records(strategy: str, count: int, seed: int = 0) -> list[TrialRecord]:
    """``count`` distinct finished NB201 trials with made-up accuracies (the values don't matter
    for latency; their number and variety do)."""
    spec = benchmark_spec(strategy, seed, count + 10)
    space = planner(spec).space
    rng = random.Random(seed)
    records: list[TrialRecord] = []
    seen: set[str] = set()
    while len(records) < count:
        params = space.sample(rng)
        key = space.key(params)
        if key in seen:
            continue
        seen.add(key)
        records.append(
            TrialRecord(
                name=f"bench-{len(records):05d}",
                index=len(records),
                params=params,
                key=key,
                state=TrialState.SUCCEEDED,
                metrics={"val_accuracy": rng.uniform(10.0, 85.0)},
            )
        )
    return records


def measure(strategy: str, count: int, repeats: int = 3) -> Latency:
    spec = benchmark_spec(strategy, 0, count + 10)
    records = synthetic_records(strategy, count)
    decide(spec, records[:1], now=0.0)  # build the cached planner outside the timing
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        decisions = decide(spec, records, now=0.0)
        times.append(time.perf_counter() - started)
        if len(decisions.start) != 1:
            raise RuntimeError(f"{strategy}: expected one new trial, got {len(decisions.start)}")
    return Latency(strategy, count, statistics.median(times) * 1e3, max(times) * 1e3)
