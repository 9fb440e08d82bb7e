"""Whole trials: resume equivalence, nothing-to-train, and the CLI as the runtimes call it."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from kubenas_trainer.config import TrialConfig  # noqa: E402
from kubenas_trainer.report import JsonlSink, Reporter  # noqa: E402
from kubenas_trainer.settings import resolve_settings  # noqa: E402
from kubenas_trainer.trial import run_trial  # noqa: E402

pytestmark = pytest.mark.trainer


def _run(arch: dict[str, Any], *flags: str, report: Path) -> dict[str, Any]:
    argv = [
        "--family",
        "chain",
        "--architecture",
        json.dumps(arch),
        "--dataset",
        "digits",
        "--device",
        "cpu",
        *flags,
    ]
    config = TrialConfig.from_settings(resolve_settings(argv, {}))
    return run_trial(config, Reporter([JsonlSink(report)]))


def _events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_resumed_training_equals_one_straight_run(
    tmp_path: Path, small_architectures: dict[str, dict[str, Any]]
) -> None:
    arch = small_architectures["chain"]
    straight = _run(
        arch, "--epochs", "2", "--checkpoint-dir", str(tmp_path / "a"), report=tmp_path / "a.jsonl"
    )
    _run(
        arch,
        "--epochs",
        "1",
        "--schedule-epochs",
        "2",
        "--checkpoint-dir",
        str(tmp_path / "b"),
        report=tmp_path / "b.jsonl",
    )
    resumed = _run(
        arch,
        "--epochs",
        "2",
        "--resume-from",
        str(tmp_path / "b" / "checkpoint.pt"),
        "--checkpoint-dir",
        str(tmp_path / "b"),
        report=tmp_path / "b.jsonl",
    )
    for key in ("val_accuracy", "val_loss", "test_accuracy", "epochs"):
        assert resumed["metrics"][key] == pytest.approx(straight["metrics"][key], abs=1e-5)
    weights_a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["model"]
    weights_b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["model"]
    for name, tensor in weights_a.items():
        torch.testing.assert_close(weights_b[name], tensor, rtol=1e-5, atol=1e-6)
    assert [e["epoch"] for e in _events(tmp_path / "b.jsonl") if e["event"] == "epoch"] == [1, 2]


def test_epochs_already_reached_only_evaluates(
    tmp_path: Path, small_architectures: dict[str, dict[str, Any]]
) -> None:
    arch = small_architectures["chain"]
    first = _run(
        arch, "--epochs", "1", "--checkpoint-dir", str(tmp_path), report=tmp_path / "r.jsonl"
    )
    again = _run(
        arch,
        "--epochs",
        "1",
        "--resume-from",
        str(tmp_path / "checkpoint.pt"),
        report=tmp_path / "r.jsonl",
    )
    assert again["metrics"]["val_accuracy"] == first["metrics"]["val_accuracy"]
    assert again["metrics"]["epochs"] == 1 and again["metrics"]["train_seconds"] == 0
    assert [e["event"] for e in _events(tmp_path / "r.jsonl")][-2:] == ["start", "final"]


def test_a_run_started_again_continues_its_own_checkpoint_only(
    tmp_path: Path, small_architectures: dict[str, dict[str, Any]]
) -> None:
    """A preempted or killed pod's Job starts the same run again, with the same checkpoint
    folder and no --resume-from: it continues from the last epoch the folder holds. A
    checkpoint of another network there is not continued."""
    arch = small_architectures["chain"]
    folder = str(tmp_path / "ckpt")
    common = ("--schedule-epochs", "3", "--checkpoint-dir", folder)
    _run(arch, "--epochs", "1", *common, report=tmp_path / "first.jsonl")  # then preempted
    again = _run(arch, "--epochs", "3", *common, report=tmp_path / "again.jsonl")
    epochs = [e["epoch"] for e in _events(tmp_path / "again.jsonl") if e["event"] == "epoch"]
    assert epochs == [2, 3] and again["metrics"]["epochs"] == 3
    other_run = _run(  # another seed: other weights, so its checkpoint is not this run's
        arch, "--epochs", "3", "--seed", "7", *common, report=tmp_path / "other.jsonl"
    )
    epochs = [e["epoch"] for e in _events(tmp_path / "other.jsonl") if e["event"] == "epoch"]
    assert epochs == [1, 2, 3] and other_run["metrics"]["epochs"] == 3


@pytest.mark.slow
@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root's unshare"
)
def test_sigterm_stops_a_trainer_that_is_pid_1_at_once_and_its_checkpoint_continues(
    tmp_path: Path, small_architectures: dict[str, dict[str, Any]]
) -> None:
    """As its container's PID 1 (a PID namespace of its own here), the trainer gets SIGTERM
    when Kueue suspends its Job: it must stop then, not at the grace period's SIGKILL, and the
    same run started again continues from the epochs it had."""
    folder = tmp_path / "ckpt"
    argv = ["--family", "chain", "--dataset", "digits", "--device", "cpu", "--epochs", "400"]
    argv += ["--architecture", json.dumps(small_architectures["chain"])]
    argv += ["--checkpoint-dir", str(folder), "--report", f"jsonl:{tmp_path / 'first.jsonl'}"]
    command = ["unshare", "--fork", "--pid", "--kill-child", sys.executable, "-m"]
    namespace = subprocess.Popen(
        [*command, "kubenas_trainer", *argv], env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    deadline = time.monotonic() + 120
    while not (folder / "checkpoint.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    (trainer,) = map(
        int, Path(f"/proc/{namespace.pid}/task/{namespace.pid}/children").read_text().split()
    )
    os.kill(trainer, signal.SIGTERM)
    stopped = time.monotonic()
    assert namespace.wait(timeout=20) == 128 + signal.SIGTERM
    print(f"SIGTERM to PID 1 trainer: stopped in {time.monotonic() - stopped:.2f} s")
    first = [e["epoch"] for e in _events(tmp_path / "first.jsonl") if e["event"] == "epoch"]
    assert 1 <= first[-1] < 400
    again = _run(
        small_architectures["chain"],
        "--epochs",
        str(first[-1] + 1),
        "--schedule-epochs",
        "400",
        "--checkpoint-dir",
        str(folder),
        report=tmp_path / "again.jsonl",
    )
    epochs = [e["epoch"] for e in _events(tmp_path / "again.jsonl") if e["event"] == "epoch"]
    assert again["metrics"]["start_epoch"] >= first[-1] and epochs[-1] == first[-1] + 1


def _trainer(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kubenas_trainer", *args],
        env={**os.environ, "OMP_NUM_THREADS": "1", **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_digits_trial_reports_everywhere_and_learns(
    tmp_path: Path, small_architectures: dict[str, dict[str, Any]], fake_pushgateway: Any
) -> None:
    env = {
        "KUBENAS_FAMILY": "nb201-cell",
        "KUBENAS_DATASET": "digits",
        "KUBENAS_EPOCHS": "3",
        "KUBENAS_ARCHITECTURE": json.dumps(small_architectures["nb201-cell"]),
        "KUBENAS_REPORT": f"stdout,jsonl:{tmp_path / 'events.jsonl'}",
        "KUBENAS_PUSHGATEWAY_URL": fake_pushgateway.url,
        "KUBENAS_NAMESPACE": "team-a",
        "KUBENAS_EXPERIMENT": "digits",
        "KUBENAS_TRIAL": "digits-7",
        "KUBENAS_TERMINATION_MESSAGE_PATH": str(tmp_path / "termination-log"),
    }
    result = _trainer("--checkpoint-dir", str(tmp_path / "ckpt"), env=env)
    assert result.returncode == 0, result.stderr
    events = _events(tmp_path / "events.jsonl")
    assert [e["event"] for e in events] == ["start", "epoch", "epoch", "epoch", "final"]
    assert [json.loads(line) for line in result.stdout.splitlines()] == events
    final = events[-1]
    assert final["metrics"]["test_accuracy"] >= 0.9
    assert final["metrics"]["params"] == events[0]["params"] > 0
    assert final["checkpoint"] == str(tmp_path / "ckpt" / "checkpoint.pt")
    assert json.loads((tmp_path / "termination-log").read_text()) == final
    pushes = fake_pushgateway.requests
    assert len(pushes) == 5 and {push.method for push in pushes} == {"PUT"}
    assert {push.path for push in pushes} == {pushes[0].path}
    segments = pushes[0].path.removeprefix("/metrics/").split("/")
    group = dict(zip(segments[::2], segments[1::2], strict=True))  # the Pushgateway's view
    assert group == {
        "job": "kubenas-trial",
        "namespace": "team-a",
        "experiment": "digits",
        "trial": "digits-7",
    }
    assert "kubenas_trial_epoch 2.0" in pushes[2].body
    assert "kubenas_trial_final 1.0" in pushes[-1].body
    assert 'kubenas_trial_metric{name="test_accuracy"}' in pushes[-1].body


def test_bad_architecture_fails_fast_with_a_clear_message(tmp_path: Path) -> None:
    termination = tmp_path / "termination-log"
    result = _trainer(
        "--family",
        "chain",
        "--architecture",
        "{not json",
        "--dataset",
        "digits",
        "--epochs",
        "1",
        "--termination-message-path",
        str(termination),
        env={},
    )
    assert result.returncode == 2
    assert "architecture is not valid JSON" in result.stderr
    assert json.loads(termination.read_text())["event"] == "error"


def test_unknown_block_fails_with_a_clear_message(capsys: pytest.CaptureFixture[str]) -> None:
    from kubenas_trainer.__main__ import main

    arch = {"stem_channels": 8, "stages": [{"width": 8, "blocks": ["transformer"]}]}
    status = main(
        [
            "--family",
            "chain",
            "--architecture",
            json.dumps(arch),
            "--dataset",
            "digits",
            "--epochs",
            "1",
            "--report",
            "",
        ]
    )
    assert status == 2
    assert "unknown chain block 'transformer'" in capsys.readouterr().err
