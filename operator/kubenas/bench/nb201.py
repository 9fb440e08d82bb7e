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


def run_search(table: Table, strategy: str, seed: int, queries: int) -> float:
    """One search of ``queries`` table look-ups; returns test_acc_200ep of the named best."""
    spec = benchmark_spec(strategy, seed, queries)
    sim = simulate(spec, lambda params, epoch: table.val_12[nb201_cell_string(params)])
    best = sim.final.best
    if best is None:
        raise RuntimeError(f"{strategy} seed {seed}: no best trial")
    return table.test_200[nb201_cell_string(best.params)]


_TABLE: Table | None = None


def _init_worker(path: str) -> None:
    global _TABLE
    _TABLE = load_table(Path(path))


def _one(task: tuple[str, int, int]) -> tuple[str, float, float]:
    strategy, seed, queries = task
    assert _TABLE is not None
    started = time.perf_counter()
    score = run_search(_TABLE, strategy, seed, queries)
    return strategy, score, time.perf_counter() - started


@dataclass(frozen=True)
class Result:
    strategy: str
    mean: float
    std: float
    seeds: int
    queries: int
    cpu_seconds: float


def run_benchmark(
    table_path: Path, strategies: list[str], queries: int, seeds: int, workers: int
) -> list[Result]:
    tasks = [(s, seed, queries) for s in strategies for seed in range(seeds)]
    scores: dict[str, list[float]] = {s: [] for s in strategies}
    seconds: dict[str, float] = dict.fromkeys(strategies, 0.0)
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(workers, initializer=_init_worker, initargs=(str(table_path),)) as pool:
        for strategy, score, spent in pool.imap_unordered(_one, tasks, chunksize=4):
            scores[strategy].append(score)
            seconds[strategy] += spent
    return [
        Result(
            strategy=s,
            mean=statistics.fmean(scores[s]),
            std=statistics.pstdev(scores[s]),
            seeds=seeds,
            queries=queries,
            cpu_seconds=seconds[s],
        )
        for s in strategies
    ]
