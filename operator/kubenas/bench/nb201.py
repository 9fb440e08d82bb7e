"""Strategies through the real engine on a NAS-Bench-201 table, under the benchmark's protocol.

The search sees ``val_acc_12ep`` of each architecture it queries; when its budget is spent the
engine names the best trial (highest observed value) and the score is that architecture's
``test_acc_200ep``. Repeated over seeds; mean and standard deviation are reported.
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubenas.api.experiment import ExperimentSpec
from kubenas.api.records import TrialRecord, TrialRole, TrialState
from kubenas.api.vocabulary import PROXIES
from kubenas.engine import SCREEN_KEY, planner
from kubenas.runtime.simulated import simulate, trial_name
from kubenas.screening import screened_candidates
from kubenas.space import nb201_cell_string

NB201_CELLS = 5**6
DEFAULT_SETTINGS: dict[str, dict[str, Any]] = {
    "random": {},
    "grid": {},
    "evolution": {"populationSize": 10, "sampleSize": 3},
    "tpe": {},
    "local-search": {},
    "bananas": {},
    "reinforce": {},
    "nsga2": {},
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


ProxyTable = dict[str, dict[str, float | None]]


def load_proxy_table(path: Path) -> ProxyTable:
    """Proxy scores by NB201 cell string, from the JSON lines ``python -m kubenas_trainer.screen``
    writes (one architecture a line, each proxy's value under its name)."""
    table: ProxyTable = {}
    with path.open() as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            row = json.loads(line)
            architecture = row.get("architecture")
            cell = architecture.get("cell") if isinstance(architecture, dict) else None
            if not isinstance(cell, str):
                raise ValueError(f"{path}:{number}: no architecture.cell")
            table[cell] = {
                name: (None if value is None else float(value))
                for name, value in row.items()
                if name in PROXIES
            }
    if not table:
        raise ValueError(f"{path}: no rows")
    return table


def table_proxies(table: ProxyTable) -> list[str]:
    """The proxies a table holds a score of for some cell, in the vocabulary's order."""
    held = {
        name for scores in table.values() for name, value in scores.items() if value is not None
    }
    return [name for name in PROXIES if name in held]


def benchmark_spec(
    strategy: str, seed: int, queries: int, proxies: Sequence[str] = ()
) -> ExperimentSpec:
    doc: dict[str, Any] = {
        "searchSpace": {"family": "nb201-cell"},
        "strategy": {"name": strategy, **DEFAULT_SETTINGS.get(strategy, {})},
        "seed": seed,
        "budget": {"maxTrials": queries, "parallelTrials": 1},
        # Trials are table look-ups, not runs of the built-in trainer and its datasets.
        "trial": {"dataset": "nb201-table", "command": ["nb201-table-lookup"]},
    }
    if proxies:
        # The whole space screened, as the proxy table was computed: NB201's CIFAR-10 setting.
        doc["screening"] = {"ensemble": list(proxies), "candidates": NB201_CELLS}
        doc["trial"] = {"dataset": "synthetic:3x32x32:10"}
    return ExperimentSpec.model_validate(doc)


def screen_record(spec: ExperimentSpec, proxy_table: ProxyTable) -> TrialRecord:
    """A succeeded screen trial whose scores are looked up: proxies cost no query."""
    assert spec.screening is not None
    space = planner(spec).space
    candidates, _ = screened_candidates(spec, space)
    cells = [nb201_cell_string(c) for c in candidates]
    missing = [c for c in cells if c not in proxy_table]
    if missing:
        raise ValueError(f"the proxy table lacks {len(missing)} cells, e.g. {missing[0]}")
    return TrialRecord(
        name=trial_name(0),
        index=0,
        role=TrialRole.SCREEN,
        params={},
        key=SCREEN_KEY,
        state=TrialState.SUCCEEDED,
        screen_scores={p: [proxy_table[c].get(p) for c in cells] for p in spec.screening.proxies},
        started_at=0.0,
        finished_at=0.0,
    )


def run_search(
    table: Table,
    strategy: str,
    seed: int,
    queries: Sequence[int],
    proxy_table: ProxyTable | None = None,
    proxies: Sequence[str] = (),
) -> dict[int, float]:
    """One search of ``max(queries)`` table look-ups, scored after each budget in ``queries``:
    test_acc_200ep of the best trial among the first q. A strategy's first q suggestions do not
    depend on the budget, so the prefix is exactly a search of q queries."""
    spec = benchmark_spec(strategy, seed, max(queries), proxies if proxy_table else ())
    initial = [screen_record(spec, proxy_table)] if proxy_table and proxies else []
    sim = simulate(
        spec, lambda params, epoch: table.val_12[nb201_cell_string(params)], initial=initial
    )
    trials = sorted(
        (r for r in sim.records.values() if r.role is TrialRole.CANDIDATE), key=lambda r: r.index
    )
    scores: dict[int, float] = {}
    for q in queries:
        found = [r for r in trials[:q] if "val_accuracy" in r.metrics]
        if not found:
            raise RuntimeError(f"{strategy} seed {seed}: no trial succeeded in {q} queries")
        best = max(found, key=lambda r: (r.metrics["val_accuracy"], -r.index))
        scores[q] = table.test_200[nb201_cell_string(best.params)]
    return scores


_TABLE: Table | None = None
_PROXY_TABLE: ProxyTable | None = None
_PROXIES: tuple[str, ...] = ()


def _init_worker(path: str, proxy_path: str | None, proxies: tuple[str, ...]) -> None:
    global _TABLE, _PROXY_TABLE, _PROXIES
    _TABLE = load_table(Path(path))
    _PROXY_TABLE = load_proxy_table(Path(proxy_path)) if proxy_path else None
    _PROXIES = proxies


def _one(task: tuple[str, int, tuple[int, ...]]) -> tuple[str, dict[int, float], float]:
    strategy, seed, queries = task
    assert _TABLE is not None
    started = time.perf_counter()
    scores = run_search(_TABLE, strategy, seed, queries, _PROXY_TABLE, _PROXIES)
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
    table_path: Path,
    strategies: list[str],
    queries: Sequence[int],
    seeds: int,
    workers: int,
    proxy_table: Path | None = None,
    proxies: Sequence[str] = (),
) -> list[Result]:
    """Every strategy over ``seeds`` seeds; one result per strategy and budget in ``queries``.
    With ``proxy_table``, every search starts with the whole space screened by ``proxies``."""
    budgets = tuple(sorted(set(queries)))
    tasks = [(s, seed, budgets) for s in strategies for seed in range(seeds)]
    scores: dict[tuple[str, int], list[float]] = {(s, q): [] for s in strategies for q in budgets}
    seconds: dict[str, float] = dict.fromkeys(strategies, 0.0)
    ctx = multiprocessing.get_context("fork")
    initargs = (str(table_path), str(proxy_table) if proxy_table else None, tuple(proxies))
    with ctx.Pool(workers, initializer=_init_worker, initargs=initargs) as pool:
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
