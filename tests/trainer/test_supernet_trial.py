"""Supernet trials through the trainer's CLI: derived architectures, resume after a kill, bad
settings; and the one-shot ranking benchmark on a tiny space."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter

pytest.importorskip("torch")

from kubenas.api.space import SearchSpaceSpec
from kubenas.space import SearchSpace, build_space
from kubenas_trainer.report import TERMINATION_MESSAGE_LIMIT, Reporter

pytestmark = pytest.mark.trainer

NB201_TINY = {"family": "nb201-cell", "stemChannels": [8], "cellsPerStage": [1]}
CHAIN_TINY = {
    "family": "chain",
    "stemChannels": 8,
    "stages": 2,
    "depth": {"min": 1, "max": 2},
    "widths": [[8], [16]],
    "operations": ["conv3x3", "sepconv3x3", "identity"],
}
METHODS = {"nb201-cell": "beta-darts", "chain": "spos"}
SPACES = {"nb201-cell": NB201_TINY, "chain": CHAIN_TINY}
KILL_WAIT_SECONDS = 300


def _space(family: str) -> SearchSpace:
    return build_space(TypeAdapter(SearchSpaceSpec).validate_python(SPACES[family]))


def _environment(
    family: str, tmp_path: Path, epochs: int, *, method: str | None = None, seed: int = 0
) -> dict[str, str]:
    supernet = {
        "method": method or METHODS[family],
        "topK": 3,
        "seed": seed,
        "searchSpace": SPACES[family],
    }
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "KUBENAS_FAMILY": family,
        "KUBENAS_DATASET": "digits",
        "KUBENAS_DEVICE": "cpu",
        "KUBENAS_EPOCHS": str(epochs),
        "KUBENAS_ARCHITECTURE": "{}",
        "KUBENAS_SUPERNET": json.dumps(supernet),
        "KUBENAS_REPORT": f"jsonl:{tmp_path / 'events.jsonl'}",
        "KUBENAS_TERMINATION_MESSAGE_PATH": str(tmp_path / "termination-log"),
    }


def _trainer(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kubenas_trainer"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("family", ["nb201-cell", "chain"])
def test_supernet_trial_reports_its_derived_architectures(tmp_path: Path, family: str) -> None:
    result = _trainer(_environment(family, tmp_path, epochs=2))
    assert result.returncode == 0, result.stderr
    events = _events(tmp_path / "events.jsonl")
    assert [e["event"] for e in events] == ["start", "epoch", "epoch", "final"]
    assert events[0]["supernet"] == METHODS[family] and events[0]["start_epoch"] == 0
    space = _space(family)
    for epoch in events[1:3]:
        assert space.validate(epoch["architecture"]) == []
        assert epoch["metrics"]["entropy"] >= 0
        assert 0 <= epoch["metrics"]["train_accuracy"] <= 1
    final = events[-1]
    assert json.loads((tmp_path / "termination-log").read_text()) == final
    derived = [space.from_choices(entry["choices"]) for entry in final["derived"]]
    assert len(derived) == 3 and len({space.key(a) for a in derived}) == 3
    assert all(space.validate(a) == [] for a in derived)
    scores = [entry["score"] for entry in final["derived"]]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    assert final["metrics"]["val_accuracy"] == pytest.approx(scores[0], abs=1e-6)
    assert final["metrics"]["supernet_epochs"] == 2


@pytest.mark.slow
def test_killed_supernet_trial_continues_from_its_checkpoint(tmp_path: Path) -> None:
    """A straight 4-epoch run, and one killed after epoch 2 then run again on the same
    checkpoint dir as a new pod would: the rerun trains only the epochs left, to the same end."""
    straight = tmp_path / "straight"
    env = _environment("chain", straight, epochs=4)
    assert _trainer({**env, "KUBENAS_CHECKPOINT_DIR": str(straight / "ckpt")}).returncode == 0

    killed = tmp_path / "killed"
    env = {**_environment("chain", killed, epochs=4), "KUBENAS_CHECKPOINT_DIR": str(killed)}
    process = subprocess.Popen(
        [sys.executable, "-m", "kubenas_trainer"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    events_file = killed / "events.jsonl"
    deadline = time.monotonic() + KILL_WAIT_SECONDS
    while not (events_file.exists() and '"epoch": 2' in events_file.read_text()):
        assert process.poll() is None and time.monotonic() < deadline, "no epoch 2 to kill at"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = len(_events(events_file))

    rerun = _trainer(env)
    assert rerun.returncode == 0, rerun.stderr
    events = _events(events_file)[killed_at:]
    start_epoch = events[0]["start_epoch"]
    # Killed at the sight of epoch 2, the process may just have checkpointed epoch 3.
    assert start_epoch in (2, 3)
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == list(range(start_epoch + 1, 5))
    final, reference = events[-1], _events(straight / "events.jsonl")[-1]
    assert final["metrics"]["supernet_epochs"] == 4
    assert final["derived"] == reference["derived"]


@pytest.mark.slow
def test_checkpoint_of_other_settings_is_not_resumed(tmp_path: Path) -> None:
    checkpoint = {"KUBENAS_CHECKPOINT_DIR": str(tmp_path)}
    assert _trainer({**_environment("chain", tmp_path, epochs=1), **checkpoint}).returncode == 0
    other = _trainer({**_environment("chain", tmp_path, epochs=2, seed=1), **checkpoint})
    assert other.returncode == 0, other.stderr
    assert "is not this supernet's checkpoint" in other.stderr
    starts = [e for e in _events(tmp_path / "events.jsonl") if e["event"] == "start"]
    assert [e["start_epoch"] for e in starts] == [0, 0]


def test_method_of_another_family_is_refused(tmp_path: Path) -> None:
    result = _trainer(_environment("nb201-cell", tmp_path, epochs=1, method="spos"))
    assert result.returncode == 2
    assert "supernet.method" in result.stderr.splitlines()[-1]
    assert json.loads((tmp_path / "termination-log").read_text())["event"] == "error"


def test_termination_message_keeps_the_derived_architectures(tmp_path: Path) -> None:
    reporter = Reporter([], termination_path=tmp_path / "termination-log")
    metrics = {f"epoch_{index}_entropy": float(index) for index in range(300)}
    derived = [{"choices": [index % 5] * 8, "score": 0.5} for index in range(32)]
    reporter.final({**metrics, "val_accuracy": 0.5}, derived=derived)
    text = (tmp_path / "termination-log").read_text()
    assert len(text.encode()) <= TERMINATION_MESSAGE_LIMIT
    message = json.loads(text)
    assert message["truncated"] and message["derived"] == derived
    assert message["metrics"] == {"val_accuracy": 0.5}


@pytest.mark.slow
def test_oneshot_check_measures_ranking_and_collapse(tmp_path: Path) -> None:
    experiment = {
        "apiVersion": "kubenas.io/v1alpha1",
        "kind": "NASExperiment",
        "metadata": {"name": "tiny-oneshot"},
        "spec": {
            "searchSpace": NB201_TINY,
            "strategy": {"name": "oneshot", "topK": 3},
            "seed": 1,
            "budget": {"maxTrials": 4},
            "fidelity": {"max": 3},
            "trial": {"dataset": "digits"},
        },
    }
    path = tmp_path / "experiment.yaml"
    path.write_text(json.dumps(experiment))  # JSON is YAML
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "kubenas_trainer.oneshot_check",
            "--experiment",
            str(path),
            "--architectures",
            "6",
            "--standalone-epochs",
            "1",
            "--supernet-epochs",
            "1",
            "--device",
            "cpu",
            "--seed-ceiling",
            "--json",
        ],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["method"] == "beta-darts" and figures["top_k"] == 3
    assert figures["supernet_epochs"] == 1 and figures["standalone_epochs"] == 1
    assert len(figures["architectures"]) == 6 and len(figures["derived"]) == 3
    assert -1 <= figures["kendall_tau"] <= 1
    assert -1 <= figures["seed_ceiling_tau"] <= 1
    shares = figures["parameter_free_share"]
    for group in ("supernet_top_k", "standalone_top"):
        assert set(shares[group]) == {"skip_connect", "none", "avg_pool_3x3", "total"}
        assert 0 <= shares[group]["total"] <= 1
    assert figures["supernet_train_seconds"] > 0 and figures["standalone_train_seconds"] > 0
