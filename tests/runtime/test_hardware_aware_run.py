"""``kubenas run`` of a constrained multi-objective search with the built-in trainer: costs are
measured before training, infeasible candidates end there, and the front reaches the results."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.trainer]

PARAMS_BOUND = 20_000  # stem 4 cells fit, most stem 16 cells do not


def test_infeasible_candidates_are_measured_never_trained_and_the_front_is_reported(
    tmp_path: Path,
) -> None:
    experiment = tmp_path / "hardware.yaml"
    experiment.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kubenas.io/v1alpha1",
                "kind": "NASExperiment",
                "metadata": {"name": "hw"},
                "spec": {
                    "objective": {
                        "metric": "val_accuracy",
                        "additional": [{"metric": "latency_ms", "direction": "minimize"}],
                        "constraints": [{"metric": "params", "max": PARAMS_BOUND}],
                    },
                    "searchSpace": {
                        "family": "nb201-cell",
                        "stemChannels": [4, 16],
                        "cellsPerStage": [1],
                    },
                    "strategy": {"name": "nsga2", "populationSize": 4},
                    "seed": 1,
                    "budget": {"maxTrials": 8, "parallelTrials": 2},
                    "fidelity": {"max": 1},
                    "trial": {"dataset": "digits", "timeoutSeconds": 300},
                },
            }
        )
    )
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "kubenas.cli", "run", str(experiment), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    records: dict[str, dict[str, object]] = {}
    for line in (out / "trials.jsonl").read_text().splitlines():
        record = json.loads(line)
        records[record["name"]] = record
    infeasible = [r for r in records.values() if r["reason"] == "Infeasible"]
    trained = [r for r in records.values() if r["state"] == "Succeeded"]
    assert infeasible and trained, "the bound must split the candidates for this to mean much"
    for r in infeasible:
        metrics = r["metrics"]
        assert isinstance(metrics, dict)
        assert r["state"] == "Stopped" and "val_accuracy" not in metrics
        assert metrics["params"] > PARAMS_BOUND and metrics["latency_ms"] > 0
        assert r["message"] == f"params {metrics['params']:.4g} > max {PARAMS_BOUND}"
        assert str(r["device"]).startswith("cpu: ")
    for r in trained:
        metrics = r["metrics"]
        assert isinstance(metrics, dict)
        assert metrics["params"] <= PARAMS_BOUND and metrics["latency_ms"] > 0

    summary = json.loads((out / "summary.json").read_text())
    assert summary["trials"]["infeasible"] == len(infeasible)
    pareto = summary["pareto"]
    assert 1 <= pareto["size"] == len(pareto["members"]) <= len(trained)
    assert set(pareto["referencePoint"]) == {"val_accuracy", "latency_ms"}
    assert pareto["hypervolume"] >= 0
    assert {m["trial"] for m in pareto["members"]} <= {r["name"] for r in trained}
    assert "## Pareto front" in (out / "summary.md").read_text()
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    last = done.stderr.strip().splitlines()[-1]
    assert f"{len(infeasible)} infeasible" in last and f"Pareto front of {pareto['size']}" in last
