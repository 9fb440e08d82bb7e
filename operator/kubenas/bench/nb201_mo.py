"""Hardware-aware search on a NAS-Bench-201 table: accuracy against a cost, through the engine.

The accuracies come from the table; the cost of each cell (FLOPs or parameters) comes from the
project's own cost model, as the trainer measures it for the CIFAR-10 skeleton (a JSON lines
file of ``python -m kubenas_trainer.screen --all --proxies params,flops``). Two tasks:

* **multi-objective**: maximise ``val_acc_12ep`` and minimise the cost. The score of a search
  after q queries is the hypervolume of the architectures it queried, measured in
  (``test_acc_200ep`` / 100, cost / the space's largest cost) from the reference point
  (0 accuracy, the largest cost): 1.0 would be a 100 % network that costs nothing.
* **constrained**: maximise ``val_acc_12ep`` with the cost at most the space's median. The score
  is ``test_acc_200ep`` of the best feasible architecture found. Every trial is charged one
  query, infeasible or not (the trainer ends an infeasible one after its cost check). Random
  search ignoring the constraint, then filtering its trials, is the baseline
  (``random-then-filter``).
"""

from __future__ import annotations

import math
import multiprocessing
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubenas.api.experiment import ExperimentSpec
from kubenas.api.records import TrialRecord, TrialRole
from kubenas.bench.nb201 import DEFAULT_SETTINGS, ProxyTable, Table, load_proxy_table, load_table
from kubenas.pareto import hypervolume
from kubenas.runtime.simulated import simulate
from kubenas.space import Assignment, nb201_cell_string

RANDOM_THEN_FILTER = "random-then-filter"
MULTI_OBJECTIVE = "multi-objective"
CONSTRAINED = "constrained"


@dataclass(frozen=True)
class CostTable:
    """One cost metric of every cell, and the bound the constrained task puts on it."""

    metric: str
    cost: dict[str, float]

    @property
    def largest(self) -> float:
        return max(self.cost.values())

    @property
    def median(self) -> float:
        return statistics.median(self.cost.values())


def cost_table(table: ProxyTable, metric: str) -> CostTable:
    cost = {cell: value for cell, scores in table.items() if (value := scores.get(metric))}
    if not cost:
        raise ValueError(f"the cost table holds no {metric}")
    return CostTable(metric, {cell: float(value) for cell, value in cost.items()})


def task_spec(
    task: str, strategy: str, seed: int, queries: int, costs: CostTable
) -> ExperimentSpec:
    objective: dict[str, Any] = {"metric": "val_accuracy", "direction": "maximize"}
    if task == MULTI_OBJECTIVE:
        objective["additional"] = [{"metric": costs.metric, "direction": "minimize"}]
    elif strategy != RANDOM_THEN_FILTER:
        objective["constraints"] = [{"metric": costs.metric, "max": costs.median}]
    name = "random" if strategy == RANDOM_THEN_FILTER else strategy
    return ExperimentSpec.model_validate(
        {
            "objective": objective,
            "searchSpace": {"family": "nb201-cell"},
            "strategy": {"name": name, **DEFAULT_SETTINGS.get(name, {})},
            "seed": seed,
            "budget": {"maxTrials": queries, "parallelTrials": 1},
            # Trials are table look-ups, not runs of the built-in trainer and its datasets.
            "trial": {"dataset": "nb201-table", "command": ["nb201-table-lookup"]},
        }
    )


def front_hypervolume(cells: Sequence[str], table: Table, costs: CostTable) -> float:
    """The multi-objective score of the queried ``cells`` (see the module docstring)."""
    largest = costs.largest
    points = [(table.test_200[c] / 100.0, -costs.cost[c] / largest) for c in cells]
    return hypervolume(points, (0.0, -1.0))


def best_feasible(trials: Sequence[TrialRecord], table: Table, costs: CostTable) -> float:
    """The constrained score: ``test_acc_200ep`` of the best ``val_acc_12ep`` within the bound
    (NaN when no queried cell was feasible)."""
    bound = costs.median
    found = [
        r
        for r in trials
        if "val_accuracy" in r.metrics and costs.cost[nb201_cell_string(r.params)] <= bound
    ]
    if not found:
        return math.nan
    best = max(found, key=lambda r: (r.metrics["val_accuracy"], -r.index))
    return table.test_200[nb201_cell_string(best.params)]


def run_search(
    task: str, table: Table, costs: CostTable, strategy: str, seed: int, queries: Sequence[int]
) -> dict[int, float]:
    """One search of ``max(queries)`` look-ups, scored after each budget in ``queries`` (a
    strategy's first q suggestions do not depend on the budget)."""
    spec = task_spec(task, strategy, seed, max(queries), costs)

    def cost_of(params: Assignment) -> dict[str, float]:
        return {costs.metric: costs.cost[nb201_cell_string(params)]}

    sim = simulate(
        spec,
        lambda params, epoch: table.val_12[nb201_cell_string(params)],
        costs=cost_of,
    )
    trials = sorted(
        (r for r in sim.records.values() if r.role is TrialRole.CANDIDATE), key=lambda r: r.index
    )
    scores: dict[int, float] = {}
    for q in queries:
        first = trials[:q]
        if task == MULTI_OBJECTIVE:
            scores[q] = front_hypervolume(
                [nb201_cell_string(r.params) for r in first], table, costs
            )
        else:
            scores[q] = best_feasible(first, table, costs)
    return scores


_TABLE: Table | None = None
_COSTS: CostTable | None = None


def _init_worker(path: str, cost_path: str, metric: str) -> None:
    global _TABLE, _COSTS
    _TABLE = load_table(Path(path))
    _COSTS = cost_table(load_proxy_table(Path(cost_path)), metric)


def _one(job: tuple[str, str, int, tuple[int, ...]]) -> tuple[str, dict[int, float], float]:
    task, strategy, seed, queries = job
    assert _TABLE is not None and _COSTS is not None
    started = time.perf_counter()
    scores = run_search(task, _TABLE, _COSTS, strategy, seed, queries)
    return strategy, scores, time.perf_counter() - started


@dataclass(frozen=True)
class Result:
    """One strategy at one budget: mean, standard deviation and standard error over the seeds
    that found a score (``missing``: seeds that found no feasible architecture)."""

    task: str
    strategy: str
    queries: int
    mean: float
    std: float
    stderr: float
    seeds: int
    missing: int
    cpu_seconds: float


def run_benchmark(
    task: str,
    table_path: Path,
    cost_path: Path,
    metric: str,
    strategies: Sequence[str],
    queries: Sequence[int],
    seeds: int,
    workers: int,
) -> list[Result]:
    budgets = tuple(sorted(set(queries)))
    jobs = [(task, s, seed, budgets) for s in strategies for seed in range(seeds)]
    scores: dict[tuple[str, int], list[float]] = {(s, q): [] for s in strategies for q in budgets}
    seconds = dict.fromkeys(strategies, 0.0)
    ctx = multiprocessing.get_context("fork")
    initargs = (str(table_path), str(cost_path), metric)
    with ctx.Pool(workers, initializer=_init_worker, initargs=initargs) as pool:
        for strategy, found, spent in pool.imap_unordered(_one, jobs, chunksize=4):
            for q, score in found.items():
                scores[strategy, q].append(score)
            seconds[strategy] += spent
    results = []
    for s in strategies:
        for q in budgets:
            values = [v for v in scores[s, q] if not math.isnan(v)]
            std = statistics.pstdev(values) if values else math.nan
            results.append(
                Result(
                    task=task,
                    strategy=s,
                    queries=q,
                    mean=statistics.fmean(values) if values else math.nan,
                    std=std,
                    stderr=std / math.sqrt(len(values)) if values else math.nan,
                    seeds=seeds,
                    missing=seeds - len(values),
                    cpu_seconds=seconds[s],
                )
            )
    return results


def beats(a: Result, b: Result, standard_errors: float = 2.0) -> bool:
    """Whether ``a``'s mean exceeds ``b``'s by more than ``standard_errors`` standard errors of
    the difference."""
    return a.mean - b.mean > standard_errors * math.hypot(a.stderr, b.stderr)
