"""Strategies through the real engine on a NAS-Bench-201 table, under the benchmark's protocol.

The search sees ``val_acc_12ep`` of each architecture it queries; when its budget is spent the
engine names the best trial (highest observed value) and the score is that architecture's
``test_acc_200ep``. Repeated over seeds; mean and standard deviation are reported.
"""

from __future__ import annotations

import csv
import multiprocessing
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubenas.api.experiment import ExperimentSpec
from kubenas.runtime.simulated import simulate
from kubenas.space import nb201_cell_string

DEFAULT_SETTINGS: dict[str, dict[str, Any]] = {
    "random": {},
    "grid": {},
    "evolution": {"populationSize": 10, "sampleSize": 3},
    "tpe": {},
    "local-search": {},
    "bananas": {},
    "reinforce": {},
}


@dataclass(frozen=True)
class Table:
    val_12: dict[str, float]
    test_200: dict[str, float]


def load_table(path: Path) -> Table:
    """Read a CSV with the columns ``arch``, ``val_acc_12ep`` and ``test_acc_200ep``."""
    val_12: dict[str, float] = {}
    test_200: dict[str, float] = {}
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = {"arch", "val_acc_12ep", "test_acc_200ep"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing columns {sorted(missing)}")
        for row in reader:
            val_12[row["arch"]] = float(row["val_acc_12ep"])
            test_200[row["arch"]] = float(row["test_acc_200ep"])
    return Table(val_12, test_200)


def benchmark_spec(strategy: str, seed: int, queries: int) -> ExperimentSpec:
    return ExperimentSpec.model_validate(
        {
            "searchSpace": {"family": "nb201-cell"},
            "strategy": {"name": strategy, **DEFAULT_SETTINGS.get(strategy, {})},
            "seed": seed,
            "budget": {"maxTrials": queries, "parallelTrials": 1},
            # Trials are table look-ups, not runs of the built-in trainer and its datasets.
            "trial": {"dataset": "nb201-table", "command": ["nb201-table-lookup"]},
        }
    )


def run_search(table: Table, strategy: str, seed: int, queries: Sequence[int]) -> dict[int, float]:
    """One search of ``max(queries)`` table look-ups, scored after each budget in ``queries``:
    test_acc_200ep of the best trial among the first q. A strategy's first q suggestions do not
    depend on the budget, so the prefix is exactly a search of q queries."""
    spec = benchmark_spec(strategy, seed, max(queries))
    sim = simulate(spec, lambda params, epoch: table.val_12[nb201_cell_string(params)])
    trials = sorted(sim.records.values(), key=lambda r: r.index)
    scores: dict[int, float] = {}
    for q in queries:
        found = [r for r in trials[:q] if "val_accuracy" in r.metrics]
        if not found:
            raise RuntimeError(f"{strategy} seed {seed}: no trial succeeded in {q} queries")
        best = max(found, key=lambda r: (r.metrics["val_accuracy"], -r.index))
        scores[q] = table.test_200[nb201_cell_string(best.params)]
    return scores


_TABLE: Table | None = None


def _init_worker(path: str) -> None:
    global _TABLE
    _TABLE = load_table(Path(path))


def _one(task: tuple[str, int, tuple[int, ...]]) -> tuple[str, dict[int, float], float]:
    strategy, seed, queries = task
    assert _TABLE is not None
    started = time.perf_counter()
    scores = run_search(_TABLE, strategy, seed, queries)
    return strategy, scores, time.perf_counter() - started


@dataclass(frozen=True)
class Result:
    """One strategy at one query budget; ``cpu_seconds`` is that of its searches at the largest
    budget of the run, which the smaller budgets are prefixes of."""

    strategy: str
    mean: float
    std: float
    seeds: int
    queries: int
    cpu_seconds: float


def run_benchmark(
    table_path: Path, strategies: list[str], queries: Sequence[int], seeds: int, workers: int
) -> list[Result]:
    """Every strategy over ``seeds`` seeds; one result per strategy and budget in ``queries``."""
    budgets = tuple(sorted(set(queries)))
    tasks = [(s, seed, budgets) for s in strategies for seed in range(seeds)]
    scores: dict[tuple[str, int], list[float]] = {(s, q): [] for s in strategies for q in budgets}
    seconds: dict[str, float] = dict.fromkeys(strategies, 0.0)
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(workers, initializer=_init_worker, initargs=(str(table_path),)) as pool:
        for strategy, found, spent in pool.imap_unordered(_one, tasks, chunksize=4):
            for q, score in found.items():
                scores[strategy, q].append(score)
            seconds[strategy] += spent
    return [
        Result(
            strategy=s,
            mean=statistics.fmean(scores[s, q]),
            std=statistics.pstdev(scores[s, q]),
            seeds=seeds,
            queries=q,
            cpu_seconds=seconds[s],
        )
        for s in strategies
        for q in budgets
    ]
