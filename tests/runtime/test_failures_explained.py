"""A real ``kubenas run`` whose trials all fail ends by saying why, in its last line and summary."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.trainer]


def test_failed_trials_explain_the_run_instead_of_best_none(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    experiment = tmp_path / "doomed.yaml"
    experiment.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kubenas.io/v1alpha1",
                "kind": "NASExperiment",
                "metadata": {"name": "doomed"},
                "spec": {
                    "searchSpace": {
                        "family": "nb201-cell",
                        "stemChannels": [4],
                        "cellsPerStage": [1],
                    },
                    "budget": {"maxTrials": 2, "parallelTrials": 2, "maxFailedTrials": 1},
                    # Valid as written, but the file is not there: only the trainer can tell.
                    "trial": {"dataset": f"npz:{tmp_path / 'missing.npz'}", "timeoutSeconds": 120},
                },
            }
        )
    )
    out = tmp_path / "out"
    done = subprocess.run(
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
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 1, done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reason"] == "TooManyFailures" and summary["best"] is None
    expected = f"2 of 2 trials failed: cannot read npz dataset {tmp_path / 'missing.npz'}"
    assert summary["message"].startswith(expected), summary["message"]
    final = done.stderr.strip().splitlines()[-1]
    assert f"no best trial; {expected}" in final, final
    assert "best None" not in final
