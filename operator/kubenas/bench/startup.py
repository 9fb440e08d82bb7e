"""What warm workers save in ``kubenas run``: a trial's fixed cost, from its launch to its first
training step, in a fresh process (``--no-reuse``) and in a warm worker, side by side on the
same trial; and a whole search's wall time both ways.

The built-in trainer reports ``start`` right before its first epoch, after the data is loaded
and the model built, so the time from launching a trial to that line in its report is what a
trial pays before it trains.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from kubenas.runtime.process import TrialProcess
from kubenas.runtime.workers import WorkerPool

CELL = "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|"
POLL_SECONDS = 0.002


@dataclass(frozen=True)
class Startup:
    mode: str
    median_s: float
    max_s: float
    trials: int


def _env(name: str, dataset: str, threads: int) -> dict[str, str]:
    """One epoch of a demo-sized cell (stem 16, one cell per stage)."""
    architecture = {"cell": CELL, "stem_channels": 16, "cells_per_stage": 1}
    return {
        "OMP_NUM_THREADS": str(threads),
        "KUBENAS_DEVICE": "cpu",
        "CUDA_VISIBLE_DEVICES": "",
        "KUBENAS_TRIAL": name,
        "KUBENAS_FAMILY": "nb201-cell",
        "KUBENAS_ARCHITECTURE": json.dumps(architecture),
        "KUBENAS_DATASET": dataset,
        "KUBENAS_SEED": "1",
        "KUBENAS_EPOCHS": "1",
    }


def _until_started(process: TrialProcess, launched: float) -> float:
    report = process.directory / "report.jsonl"
    while True:
        if report.exists() and '"start"' in report.read_text():
            started = time.perf_counter() - launched
            break
        if process.poll() is not None:
            raise RuntimeError(f"{process.name} ended before it started training")
        time.sleep(POLL_SECONDS)
    while process.poll() is None:
        time.sleep(0.01)
    return started


def measure(work: Path, dataset: str, trials: int, threads: int) -> list[Startup]:
    """``trials`` fresh processes, then ``trials`` trials in one warm worker (started and ready
    before the first is timed, as the runner starts its workers with the search)."""
    command = ["python", "-m", "kubenas_trainer"]
    fresh = []
    for i in range(trials):
        name = f"fresh-{i}"
        launched = time.perf_counter()
        process = TrialProcess.launch(
            name, work / name, command, _env(name, dataset, threads), None
        )
        fresh.append(_until_started(process, launched))
    pool = WorkerPool(dataset, work / "workers")
    warm = []
    try:
        worker = pool.warm("cpu0", _env("warm", dataset, threads))
        for i in range(trials + 1):  # the first waits for the worker's own start-up: untimed
            name = f"warm-{i}"
            launched = time.perf_counter()
            process = TrialProcess.launch(
                name, work / name, [], _env(name, dataset, threads), None, worker
            )
            seconds = _until_started(process, launched)
            if i:
                warm.append(seconds)
    finally:
        pool.close()
    return [
        Startup(mode, round(statistics.median(xs), 3), round(max(xs), 3), len(xs))
        for mode, xs in (("fresh process", fresh), ("warm worker", warm))
    ]


@dataclass(frozen=True)
class SearchRun:
    mode: str
    seconds: float
    best: str | None
    metrics: dict[str, float]


def compare_searches(experiment: Path, work: Path, cpu_slots: int) -> list[SearchRun]:
    """The whole search twice, one after the other: a fresh process per trial, then warm
    workers. Each run's wall time is that of ``kubenas run`` itself, its set-up included."""
    runs = []
    for mode, flags in (("fresh processes", ["--no-reuse"]), ("warm workers", [])):
        out = work / mode.replace(" ", "-")
        started = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "kubenas.cli",
                "run",
                str(experiment),
                "--out",
                str(out),
                "--quiet",
                "--cpu-slots",
                str(cpu_slots),
                *flags,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        seconds = time.perf_counter() - started
        best = json.loads((out / "summary.json").read_text()).get("best") or {}
        metrics = {k: v for k, v in (best.get("metrics") or {}).items() if k != "train_seconds"}
        runs.append(SearchRun(mode, round(seconds, 1), best.get("trial"), metrics))
    return runs
