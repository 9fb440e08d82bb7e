"""The final stage of ``kubenas run`` with the real trainer: it waits for approval, retrains the
approved network on every seed beside a baseline, reports both, and exports a model that loads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.slow, pytest.mark.trainer]

BASELINE = {
    "stem_channels": 8,
    "stages": [{"width": 8, "blocks": ["conv3x3", "conv3x3"]}],
}


def _kubenas(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kubenas.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _experiment(tmp_path: Path) -> Path:
    doc: dict[str, Any] = {
        "apiVersion": "kubenas.io/v1alpha1",
        "kind": "NASExperiment",
        "metadata": {"name": "finals"},
        "spec": {
            "searchSpace": {
                "family": "chain",
                "stemChannels": 8,
                "stages": 1,
                "depth": {"min": 1, "max": 2},
                "widths": [[8, 16]],
                "operations": ["conv3x3", "sepconv3x3", "identity"],
            },
            "strategy": {"name": "random"},
            "seed": 2,
            "budget": {"maxTrials": 3, "parallelTrials": 2},
            "fidelity": {"resource": "epochs", "max": 1},
            "final": {"topK": 1, "seeds": 2, "fidelity": 2, "approval": "manual"},
            "baselines": [{"name": "conv-chain", "architecture": BASELINE}],
            "trial": {
                "dataset": "digits",
                "timeoutSeconds": 300,
                "hyperparameters": {"batch_size": 64, "learning_rate": 0.05},
            },
        },
    }
    path = tmp_path / "finals.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _records(out: Path) -> list[dict[str, Any]]:
    last: dict[str, dict[str, Any]] = {}
    for line in (out / "trials.jsonl").read_text().splitlines():
        record = json.loads(line)
        last[record["name"]] = record
    return list(last.values())


def test_approve_retrain_compare_and_export(tmp_path: Path) -> None:
    out = tmp_path / "out"
    paused = _kubenas("run", str(_experiment(tmp_path)), "--out", str(out), "--quiet")
    last = paused.stderr.strip().splitlines()[-1] if paused.stderr.strip() else ""
    assert paused.returncode == 3, paused.stdout + paused.stderr
    assert "awaits approval" in paused.stdout + last
    assert f"kubenas approve {out}" in paused.stdout + last
    assert {r["role"] for r in _records(out)} == {"candidate"}
    summary = json.loads((out / "summary.json").read_text())
    (proposed,) = summary["final"]["finalists"]
    assert "Awaiting approval to retrain" in (out / "summary.md").read_text()
    assert _kubenas("export", str(out), "-o", str(tmp_path / "m.onnx")).returncode == 1

    done = _kubenas("approve", str(out), "--quiet")
    assert done.returncode == 0, done.stdout + done.stderr
    records = _records(out)
    finals = [r for r in records if r["role"] == "final"]
    baselines = [r for r in records if r["role"] == "baseline"]
    assert sorted((r["source"], r["replica"]) for r in finals) == [(proposed, 0), (proposed, 1)]
    assert sorted(r["replica"] for r in baselines) == [0, 1]
    assert all(r["state"] == "Succeeded" and r["fidelity"] == 2 for r in finals + baselines)

    final = json.loads((out / "summary.json").read_text())["final"]
    networks = {n["name"]: n for n in final["networks"]}
    assert networks[proposed]["seeds"] == 2 and networks["conv-chain"]["seeds"] == 2
    accuracy = networks[proposed]["metrics"]["test_accuracy"]
    assert 0.3 < accuracy["mean"] <= 1.0 and accuracy["std"] >= 0.0 and accuracy["n"] == 2
    (comparison,) = final["comparison"]
    assert comparison["baseline"] == "conv-chain" and "params" in comparison["costs"]
    report = (out / "summary.md").read_text()
    assert "NAS vs baseline" in report and f"{accuracy['mean']:.4f} ±" in report
    assert "vs baseline conv-chain" in done.stdout + done.stderr

    # The exported model loads and classifies like the trained network would.
    exported = tmp_path / "model.pt"
    copied = _kubenas("export", str(out), "--format", "torchscript", "-o", str(exported))
    assert copied.returncode == 0, copied.stderr
    model = torch.jit.load(str(exported))
    logits = model(torch.zeros(5, 1, 8, 8))
    assert tuple(logits.shape) == (5, 10)
    assert (out / "final-model" / "model.onnx").exists()
    assert (out / "final-model" / "rebuild.py").exists()

    # Running the finished experiment again repeats nothing.
    again = _kubenas("run", str(_experiment(tmp_path)), "--out", str(out), "--quiet")
    assert again.returncode == 0, again.stderr
    assert len(_records(out)) == len(records)
