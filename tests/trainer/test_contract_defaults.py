"""An experiment without a ``fidelity`` block trains: the control plane sends the contract's
default epochs, and the built-in trainer trains that long."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from kubenas.api import TrialRecord, parse_experiment
from kubenas.api.builtin_trainer import DEFAULT_EPOCHS
from kubenas.contract import trial_environment
from kubenas.space import build_space

pytestmark = pytest.mark.trainer


def test_a_spec_without_fidelity_trains_the_default_epochs(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    experiment = parse_experiment(
        {
            "apiVersion": "kubenas.io/v1alpha1",
            "kind": "NASExperiment",
            "metadata": {"name": "nofidelity"},
            "spec": {
                "searchSpace": {
                    "family": "chain",
                    "stemChannels": 4,
                    "stages": 1,
                    "widths": [[4]],
                    "depth": {"min": 1, "max": 1},
                },
                "budget": {"maxTrials": 1},
                "trial": {"dataset": "synthetic:1x6x6:3:60"},
            },
        }
    )
    assert experiment.spec.fidelity is None
    space = build_space(experiment.spec.search_space)
    params = space.sample(random.Random(0))
    record = TrialRecord(name="nofidelity-0000", index=0, params=params, key=space.key(params))
    env = trial_environment(experiment, record, space.to_architecture(params))
    assert env["KUBENAS_EPOCHS"] == str(DEFAULT_EPOCHS)
    report = tmp_path / "events.jsonl"
    trainer = subprocess.run(
        [sys.executable, "-m", "kubenas_trainer"],
        env={
            **os.environ,
            **env,
            "KUBENAS_DEVICE": "cpu",
            "KUBENAS_REPORT": f"jsonl:{report}",
            "KUBENAS_TERMINATION_MESSAGE_PATH": str(tmp_path / "termination-log"),
            "OMP_NUM_THREADS": "1",
        },
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert trainer.returncode == 0, trainer.stderr
    events = [json.loads(line) for line in report.read_text().splitlines()]
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == list(
        range(1, DEFAULT_EPOCHS + 1)
    )
    assert events[-1]["event"] == "final" and events[-1]["metrics"]["epochs"] == DEFAULT_EPOCHS
