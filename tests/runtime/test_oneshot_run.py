"""``kubenas run`` with strategy oneshot and real training: the supernet trial, then its derived
architectures; a run killed mid-supernet resumes the supernet from its checkpoint."""

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

pytestmark = [pytest.mark.slow, pytest.mark.trainer]


def _experiment(tmp_path: Path, family: str) -> Path:
    space = (
        {"family": "nb201-cell", "stemChannels": [4], "cellsPerStage": [1]}
        if family == "nb201-cell"
        else {
            "family": "chain",
            "stemChannels": 8,
            "stages": 2,
            "depth": {"min": 1, "max": 2},
            "widths": [[8], [16]],
            "operations": ["conv3x3", "sepconv3x3", "identity"],
        }
    )
    doc = {
        "apiVersion": "kubenas.io/v1alpha1",
        "kind": "NASExperiment",
        "metadata": {"name": "tiny"},
        "spec": {
            "searchSpace": space,
            # Long enough that the kill lands mid-training (a chain epoch here takes ~0.2 s).
            "strategy": {
                "name": "oneshot",
                "supernetEpochs": 6 if family == "nb201-cell" else 30,
                "topK": 2,
            },
            "budget": {"maxTrials": 2, "parallelTrials": 2},
            "fidelity": {"max": 1},
            "trial": {"dataset": "digits", "timeoutSeconds": 300},
        },
    }
    path = tmp_path / "oneshot.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _records(out: Path) -> dict[str, dict[str, object]]:
    last: dict[str, dict[str, object]] = {}
    for line in (out / "trials.jsonl").read_text().splitlines():
        record = json.loads(line)
        last[record["name"]] = record
    return last


def _supernet_epochs_reported(out: Path) -> int:
    report = out / "trials" / "tiny-0000" / "report.jsonl"
    if not report.exists():
        return 0
    lines = report.read_text().splitlines()
    return sum(json.loads(line)["event"] == "epoch" for line in lines if line.strip())


@pytest.mark.parametrize("family", ["nb201-cell", "chain"])
def test_a_killed_oneshot_run_resumes_its_supernet_and_trains_what_it_derived(
    tmp_path: Path, family: str
) -> None:
    out = tmp_path / "out"
    experiment = _experiment(tmp_path, family)
    command = [sys.executable, "-m", "kubenas.cli", "run", str(experiment), "--out", str(out)]
    runner = subprocess.Popen(
        [*command, "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while _supernet_epochs_reported(out) < 2:
        assert time.monotonic() < deadline, "the supernet never reported two epochs"
        assert runner.poll() is None, "the run ended before it was killed"
        time.sleep(0.1)
    os.killpg(runner.pid, signal.SIGKILL)  # the runner and its trainer, as a crash would
    runner.wait()

    done = subprocess.run(
        [*command, "--quiet"], capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr
    records = _records(out)
    assert sorted(records) == ["tiny-0000", "tiny-0001", "tiny-0002"]
    supernet = records["tiny-0000"]
    assert supernet["role"] == "supernet" and supernet["state"] == "Succeeded"
    metrics = supernet["metrics"]
    assert isinstance(metrics, dict) and metrics["start_epoch"] >= 2, "resumed, not restarted"
    derived = supernet["derived"]
    assert isinstance(derived, list) and len(derived) == 2
    candidates = [records["tiny-0001"], records["tiny-0002"]]
    assert [c["params"] for c in candidates] == [d["params"] for d in derived]
    assert all(c["state"] == "Succeeded" for c in candidates)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["supernet"]["derived"] == 2 and summary["supernet"]["state"] == "Succeeded"
    assert set(summary["stages"]) == {"supernet", "candidate"}
    last_line = (done.stdout or done.stderr).strip().splitlines()[-1]
    assert "supernet" in last_line, "the last line says what the supernet did"
