"""Warm workers (kubenas.runtime.workers, kubenas_trainer.worker) with real trainings on digits:
a trial in a worker gives bit for bit what a fresh process gives, and a trial that fails, is
killed or times out takes only its worker, which is replaced."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from kubenas.runtime.process import TrialProcess
from kubenas.runtime.workers import WorkerPool

pytestmark = [pytest.mark.slow, pytest.mark.trainer]

CELL = "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|"
SLOT_ENV = {"OMP_NUM_THREADS": "1", "KUBENAS_DEVICE": "cpu", "CUDA_VISIBLE_DEVICES": ""}


def trial_env(name: str, seed: int, epochs: int = 2, **extra: str) -> dict[str, str]:
    architecture = {"cell": CELL, "stem_channels": 4, "cells_per_stage": 1}
    return {
        **SLOT_ENV,
        "KUBENAS_TRIAL": name,
        "KUBENAS_FAMILY": "nb201-cell",
        "KUBENAS_ARCHITECTURE": json.dumps(architecture),
        "KUBENAS_DATASET": "digits",
        "KUBENAS_SEED": str(seed),
        "KUBENAS_EPOCHS": str(epochs),
        **extra,
    }


def wait(process: TrialProcess, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while (code := process.poll()) is None:
        assert time.monotonic() < deadline, f"{process.name} did not end"
        time.sleep(0.05)
    return code


def final(directory: Path) -> dict[str, Any]:
    summary: dict[str, Any] = json.loads((directory / "termination.json").read_text())
    summary["metrics"].pop("train_seconds")  # wall time, the one figure allowed to differ
    return summary["metrics"]  # type: ignore[no-any-return]


def weights(directory: Path) -> dict[str, torch.Tensor]:
    state: dict[str, Any] = torch.load(
        directory / "checkpoint" / "checkpoint.pt", weights_only=False
    )
    return state["model"]  # type: ignore[no-any-return]


def test_a_trial_in_a_worker_is_bit_for_bit_a_fresh_process(tmp_path: Path) -> None:
    pool = WorkerPool("digits", tmp_path / "workers")
    worker = pool.warm("cpu0", SLOT_ENV)
    try:
        first = TrialProcess.launch("a", tmp_path / "a", [], trial_env("a", 11), None, worker)
        assert wait(first) == 0
        warm = TrialProcess.launch("b", tmp_path / "b", [], trial_env("b", 7), None, worker)
        assert wait(warm) == 0
    finally:
        pool.close()
    command = ["python", "-m", "kubenas_trainer"]
    fresh = TrialProcess.launch("b", tmp_path / "fresh", command, trial_env("b", 7), None)
    assert wait(fresh) == 0
    assert final(tmp_path / "b") == final(tmp_path / "fresh")
    assert final(tmp_path / "a") != final(tmp_path / "b")  # another seed: another network
    warm_weights, fresh_weights = weights(tmp_path / "b"), weights(tmp_path / "fresh")
    assert warm_weights.keys() == fresh_weights.keys()
    assert all(torch.equal(warm_weights[k], fresh_weights[k]) for k in warm_weights)
    events = [json.loads(line)["event"] for line in (tmp_path / "b" / "report.jsonl").open()]
    assert events == ["start", "epoch", "epoch", "final"]  # its own report, nothing of "a"


def test_a_failing_trial_takes_its_worker_and_the_next_gets_a_new_one(tmp_path: Path) -> None:
    pool = WorkerPool("digits", tmp_path / "workers")
    try:
        worker = pool.warm("cpu0", SLOT_ENV)
        bad = trial_env("bad", 1, KUBENAS_ARCHITECTURE='{"cell": "|conv_9x9~0|"}')
        failed = TrialProcess.launch("bad", tmp_path / "bad", [], bad, None, worker)
        assert wait(failed) == 2  # a setting that can never work, as a fresh process exits
        assert "cell" in (tmp_path / "bad" / "stderr.log").read_text()
        pool.finished("cpu0", 2)
        assert not worker.alive
        replacement = pool.warm("cpu0", SLOT_ENV)
        assert replacement.popen.pid != worker.popen.pid
        good = TrialProcess.launch("ok", tmp_path / "ok", [], trial_env("ok", 1), None, replacement)
        assert wait(good) == 0
        assert pool.started == 2
    finally:
        pool.close()


def test_a_worker_killed_mid_trial_reads_as_the_trials_crash(tmp_path: Path) -> None:
    pool = WorkerPool("digits", tmp_path / "workers")
    try:
        worker = pool.warm("cpu0", SLOT_ENV)
        long = trial_env("long", 1, epochs=500)
        running = TrialProcess.launch("long", tmp_path / "long", [], long, None, worker)
        deadline = time.monotonic() + 120
        while '"epoch"' not in _read(tmp_path / "long" / "report.jsonl"):
            assert time.monotonic() < deadline, "the trial never trained an epoch"
            time.sleep(0.1)
        os.kill(worker.popen.pid, signal.SIGSEGV)  # a native crash inside the trial
        assert wait(running) == -signal.SIGSEGV
        said = (tmp_path / "long" / "stderr.log").read_text()
        assert f"the warm worker running this trial ended (exit code {-signal.SIGSEGV})" in said
        pool.finished("cpu0", -signal.SIGSEGV)
        after = pool.warm("cpu0", SLOT_ENV)
        good = TrialProcess.launch("ok", tmp_path / "ok", [], trial_env("ok", 1), None, after)
        assert wait(good) == 0
    finally:
        pool.close()


def test_a_worker_that_cannot_start_fails_its_trial_with_the_reason(tmp_path: Path) -> None:
    pool = WorkerPool("digits", tmp_path / "workers")
    try:
        broken = pool.warm("cpu0", {**SLOT_ENV, "PYTHONHOME": str(tmp_path / "no-python")})
        trial = TrialProcess.launch("t", tmp_path / "t", [], trial_env("t", 1), None, broken)
        assert wait(trial) == 1
        said = (tmp_path / "t" / "stderr.log").read_text()
        assert "the warm worker running this trial ended (exit code 1)" in said
        assert "Fatal Python error" in said  # the worker's own last words
    finally:
        pool.close()


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def test_a_timed_out_trial_ends_with_its_worker_and_the_search_goes_on(tmp_path: Path) -> None:
    """Through ``kubenas run``: each trial would train far past timeoutSeconds (2,000 epochs;
    the smallest grid cell trains about ten a second here). The first is failed as Timeout when
    its time is up, taking its worker; the next runs in a new one."""
    experiment = {
        "apiVersion": "kubenas.io/v1alpha1",
        "kind": "NASExperiment",
        "metadata": {"name": "slow"},
        "spec": {
            "searchSpace": {
                "family": "nb201-cell",
                "stemChannels": [4, 16],
                "cellsPerStage": [1, 5],
            },
            "strategy": {"name": "grid"},
            "budget": {"maxTrials": 2, "parallelTrials": 1, "maxFailedTrials": 2},
            "fidelity": {"max": 2000},
            "trial": {"dataset": "digits", "timeoutSeconds": 8},
        },
    }
    path = tmp_path / "slow.yaml"
    path.write_text(yaml.safe_dump(experiment))
    out = tmp_path / "out"
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "kubenas.cli", "run", str(path), "--out", str(out), "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    elapsed = time.monotonic() - started
    records = {}
    for line in (out / "trials.jsonl").read_text().splitlines():
        record = json.loads(line)
        records[record["name"]] = record
    reasons = sorted(str(r.get("reason")) for r in records.values())
    assert reasons == ["Timeout", "Timeout"], (reasons, done.stderr[-2000:])
    # 2 x 8 s, plus start-up: no trial outlived its time, and the second had a working slot.
    # (A worker's start-up, importing torch, is queue time: the trial's clock runs from the
    # moment its worker began it.)
    assert elapsed < 60, elapsed
    assert not (out / "trials" / "slow-0001" / "termination.json").exists()
