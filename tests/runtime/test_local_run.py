"""``kubenas run`` end to end with real trainer processes: results, crashes, timeouts, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

OWN_TRAINER = Path(__file__).parent / "own_trainer.py"


def _kubenas(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-m", "kubenas.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        **kwargs,
    )


def _write(path: Path, doc: dict[str, object]) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


def _custom_experiment(tmp_path: Path, modes: list[str], **budget: int) -> Path:
    return _write(
        tmp_path / "exp.yaml",
        {
            "apiVersion": "kubenas.io/v1alpha1",
            "kind": "NASExperiment",
            "metadata": {"name": "own"},
            "spec": {
                "searchSpace": {
                    "family": "custom",
                    "parameters": [
                        {"name": "quality", "type": "int", "low": 1, "high": 4},
                        {"name": "mode", "type": "categorical", "choices": modes},
                    ],
                },
                "strategy": {"name": "grid"},
                "budget": {"maxTrials": 6, "parallelTrials": 2, "maxFailedTrials": 10, **budget},
                "trial": {
                    "dataset": "none:",
                    "timeoutSeconds": 3,
                    "command": ["python", str(OWN_TRAINER)],
                },
            },
        },
    )


def _records(out: Path) -> dict[str, dict[str, object]]:
    last: dict[str, dict[str, object]] = {}
    for line in (out / "trials.jsonl").read_text().splitlines():
        record = json.loads(line)
        last[record["name"]] = record
    return last


def test_crashing_and_hanging_trials_are_recorded_and_the_search_goes_on(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = _kubenas(
        "run",
        str(_custom_experiment(tmp_path, ["crash", "hang", "ok"], maxTrials=12)),
        "--out",
        str(out),
        "--quiet",
    )
    assert done.returncode == 0, done.stderr
    records = _records(out)
    crashed = [r for r in records.values() if r["params"]["mode"] == "crash"]  # type: ignore[index]
    hung = [r for r in records.values() if r["params"]["mode"] == "hang"]  # type: ignore[index]
    assert crashed and all(r["state"] == "Failed" and r["reason"] == "Crashed" for r in crashed)
    assert all("illegal memory access" in str(r["message"]) for r in crashed)
    assert hung and all(r["state"] == "Failed" and r["reason"] == "Timeout" for r in hung)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished"] and summary["reason"] == "BudgetSpent"
    assert summary["trials"]["total"] == 12
    assert summary["trials"]["failed"] == len(crashed) + len(hung)
    assert summary["best"]["architecture"]["mode"] == "ok"
    final = done.stderr.strip().splitlines()[-1]
    assert "8 of 12 trials failed, 4 of them: CUDA error: an illegal memory access" in final, final


def test_too_many_failures_exit_1(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = _kubenas(
        "run",
        str(_custom_experiment(tmp_path, ["crash"], maxFailedTrials=2)),
        "--out",
        str(out),
        "--quiet",
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reason"] == "TooManyFailures" and not summary["succeeded"]
    assert done.returncode == 1


def test_invalid_experiment_exits_2_naming_the_field(tmp_path: Path) -> None:
    path = _custom_experiment(tmp_path, ["ok"])
    doc = yaml.safe_load(path.read_text())
    doc["spec"]["budget"]["parallelTrials"] = 0
    done = _kubenas("run", str(_write(path, doc)), "--quiet")
    assert done.returncode == 2
    assert "spec.budget.parallelTrials: must be >= 1" in done.stderr


def _digits_experiment(tmp_path: Path) -> Path:
    return _write(
        tmp_path / "digits.yaml",
        {
            "apiVersion": "kubenas.io/v1alpha1",
            "kind": "NASExperiment",
            "metadata": {"name": "tiny"},
            "spec": {
                "searchSpace": {"family": "nb201-cell", "stemChannels": [4], "cellsPerStage": [1]},
                "strategy": {"name": "random"},
                "budget": {"maxTrials": 5, "parallelTrials": 2},
                "fidelity": {"max": 2},
                "trial": {"dataset": "digits", "timeoutSeconds": 300},
            },
        },
    )


@pytest.mark.trainer
def test_killed_run_resumes_without_rerunning_or_losing_trials(tmp_path: Path) -> None:
    out = tmp_path / "out"
    experiment = _digits_experiment(tmp_path)
    runner = subprocess.Popen(
        [sys.executable, "-m", "kubenas.cli", "run", str(experiment), "--out", str(out), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if (out / "trials.jsonl").exists():
            states = [r["state"] for r in _records(out).values()]
            if states.count("Succeeded") >= 2 and "Running" in states:
                break
        time.sleep(0.2)
    else:
        pytest.fail("the run never reached two finished trials")
    os.killpg(runner.pid, signal.SIGKILL)  # the runner and its trainers, as a crash would
    runner.wait()
    before = _records(out)
    finished_before = {n for n, r in before.items() if r["state"] == "Succeeded"}

    done = _kubenas("run", str(experiment), "--out", str(out), "--quiet")
    assert done.returncode == 0, done.stderr
    after = _records(out)
    assert sorted(after) == [f"tiny-{i:04d}" for i in range(5)], "no trial lost, none added"
    assert all(r["state"] == "Succeeded" for r in after.values())
    for name in finished_before:
        assert after[name] == before[name], f"{name} finished before the kill and was not re-run"
        starts = [
            line
            for line in (out / "trials" / name / "report.jsonl").read_text().splitlines()
            if json.loads(line)["event"] == "start"
        ]
        assert len(starts) == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trials"] == {"total": 5, "succeeded": 5, "failed": 0, "stopped": 0}
    assert summary["best"]["metrics"]["test_accuracy"] > 0.5
    for name in ("summary.md", "summary.csv", "best.json", "progress.png", "best-checkpoint.pt"):
        assert (out / name).exists(), name


def test_a_changed_spec_does_not_mix_into_an_old_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    path = _custom_experiment(tmp_path, ["ok"], maxTrials=2)
    assert _kubenas("run", str(path), "--out", str(out), "--quiet").returncode == 0
    doc = yaml.safe_load(path.read_text())
    doc["spec"]["seed"] = 5
    done = _kubenas("run", str(_write(path, doc)), "--out", str(out), "--quiet")
    assert done.returncode == 2
    assert "use another --out" in done.stderr


def test_promoted_runs_carry_nothing_of_the_last_runs_end(tmp_path: Path) -> None:
    """ASHA promotions go through the shared transitions: while a promoted trial runs again,
    its record has no finish time or reason left over from the rung it completed."""
    path = _custom_experiment(tmp_path, ["ok"], maxTrials=4)
    doc = yaml.safe_load(path.read_text())
    doc["spec"]["fidelity"] = {"min": 1, "max": 3, "scheduler": "asha", "reductionFactor": 2}
    path.write_text(yaml.safe_dump(doc))
    out = tmp_path / "out"
    done = _kubenas("run", str(path), "--out", str(out), "--quiet")
    assert done.returncode == 0, done.stderr
    history = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]
    reruns = [r for r in history if r["state"] == "Running" and r["results"]]
    assert reruns, "no trial was promoted"
    assert all(r["finished_at"] is None for r in reruns)
    assert all(r["reason"] is None for r in reruns)
    assert all(r["started_at"] is not None and r["queued_at"] is None for r in reruns)
