"""A screened search end to end: the built-in trainer scores the candidates the engine names,
and the search trains the best-screened first."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubenas.api import load_experiment
from kubenas.api.records import TrialRecord, TrialRole
from kubenas.engine import planner
from kubenas.screening import screening_prior

pytestmark = [pytest.mark.slow, pytest.mark.trainer]


def _run(
    experiment: dict[str, Any], tmp_path: Path
) -> tuple[Path, Path, subprocess.CompletedProcess[str]]:
    """``kubenas run`` of ``experiment``: its file, its results folder and the finished run."""
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(experiment))
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "kubenas.cli", "run", str(path), "--out", str(out), "--quiet"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    return path, out, done


def test_the_screen_trial_scores_the_engines_candidates_and_guides_the_first(
    tmp_path: Path,
) -> None:
    experiment = {
        "apiVersion": "kubenas.io/v1alpha1",
        "kind": "NASExperiment",
        "metadata": {"name": "screened"},
        "spec": {
            "searchSpace": {"family": "nb201-cell", "stemChannels": [8], "cellsPerStage": [1]},
            "strategy": {"name": "evolution"},
            "budget": {"maxTrials": 2, "parallelTrials": 2},
            "fidelity": {"max": 1},
            "screening": {"ensemble": ["synflow", "naswot"], "candidates": 20, "warmup": 2},
            "trial": {"dataset": "digits", "timeoutSeconds": 300},
        },
    }
    path, out, done = _run(experiment, tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trials"]["total"] == 2  # the screen trial is not a candidate
    assert summary["screening"]["state"] == "Succeeded"
    assert summary["screening"]["screened"] == 20
    assert summary["stages"]["screen"]["trainerSeconds"] > 0

    records: dict[str, TrialRecord] = {}
    for line in (out / "trials.jsonl").read_text().splitlines():
        record = TrialRecord.model_validate_json(line)
        records[record.name] = record
    (screen,) = [r for r in records.values() if r.role is TrialRole.SCREEN]
    assert screen.screen_scores is not None
    assert all(len(v) == 20 for v in screen.screen_scores.values())
    spec = load_experiment(path).spec
    space = planner(spec).space
    prior = screening_prior(spec, space, screen)
    best_screened = {space.key(a) for a in prior.ranked[:2]}
    trained = {r.key for r in records.values() if r.role is TrialRole.CANDIDATE}
    assert trained == best_screened


def test_a_failing_screen_ends_the_run_saying_why(tmp_path: Path) -> None:
    experiment = {
        "apiVersion": "kubenas.io/v1alpha1",
        "kind": "NASExperiment",
        "metadata": {"name": "unscreenable"},
        "spec": {
            "searchSpace": {"family": "nb201-cell", "stemChannels": [8], "cellsPerStage": [1]},
            "budget": {"maxTrials": 2},
            "screening": {"proxy": "naswot", "candidates": 5, "warmup": 2},
            "trial": {"dataset": f"npz:{tmp_path / 'missing.npz'}", "timeoutSeconds": 300},
        },
    }
    _, out, done = _run(experiment, tmp_path)
    assert done.returncode == 1
    final = done.stderr.strip().splitlines()[-1]
    assert "ScreeningFailed" in final and "cannot read npz dataset" in final, final
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trials"]["total"] == 0 and summary["screening"]["state"] == "Failed"
