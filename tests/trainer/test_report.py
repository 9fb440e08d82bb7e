"""Reporting without torch: sinks chosen from the environment, termination message, Pushgateway."""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kubenas_trainer.config import ConfigError
from kubenas_trainer.report import TERMINATION_MESSAGE_LIMIT, Reporter


def test_reporter_from_env_writes_jsonl_and_termination_message(tmp_path: Path) -> None:
    reporter = Reporter.from_env(
        {
            "KUBENAS_REPORT": f"jsonl:{tmp_path / 'events.jsonl'}",
            "KUBENAS_TRIAL": "t-3",
            "KUBENAS_TERMINATION_MESSAGE_PATH": str(tmp_path / "termination-log"),
        }
    )
    reporter.epoch(1, {"val_accuracy": 0.5})
    summary = reporter.final({"val_accuracy": 0.75, "test_accuracy": 0.7}, checkpoint="/c.pt")
    lines = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert lines == [
        {"event": "epoch", "trial": "t-3", "epoch": 1, "metrics": {"val_accuracy": 0.5}},
        summary,
    ]
    assert summary["checkpoint"] == "/c.pt" and summary["metrics"]["val_accuracy"] == 0.75
    assert json.loads((tmp_path / "termination-log").read_text()) == summary


def test_oversized_termination_message_keeps_the_core_metrics(tmp_path: Path) -> None:
    reporter = Reporter([], termination_path=tmp_path / "termination-log")
    metrics = {f"extra_metric_{index}": float(index) for index in range(400)}
    reporter.final({**metrics, "val_accuracy": 0.9, "params": 12})
    text = (tmp_path / "termination-log").read_text()
    assert len(text.encode()) <= TERMINATION_MESSAGE_LIMIT
    assert json.loads(text)["metrics"] == {"val_accuracy": 0.9, "params": 12}


def test_unknown_sink_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="unknown report sink 'kafka'"):
        Reporter.from_env({"KUBENAS_REPORT": "stdout,kafka"})


def test_pushes_the_latest_metrics_under_the_trial_group(fake_pushgateway: Any) -> None:
    reporter = Reporter.from_env(
        {
            "KUBENAS_REPORT": "",
            "KUBENAS_PUSHGATEWAY_URL": fake_pushgateway.url,
            "KUBENAS_NAMESPACE": "ns",
            "KUBENAS_EXPERIMENT": "exp",
            "KUBENAS_TRIAL": "exp-1",
        }
    )
    reporter.start(params=10)
    reporter.epoch(1, {"val_accuracy": 0.5})
    reporter.epoch(2, {"val_accuracy": 0.625})
    reporter.final({"val_accuracy": 0.625, "test_accuracy": 0.5, "params": 10, "epochs": 2})
    bodies = [request.body for request in fake_pushgateway.requests]
    assert len(bodies) == 4
    assert "kubenas_trial_final 0.0" in bodies[0] and "kubenas_trial_epoch 0.0" in bodies[0]
    assert 'kubenas_trial_metric{name="val_accuracy"} 0.625' in bodies[2]
    assert "kubenas_trial_epoch 2.0" in bodies[2]
    for line in (
        "kubenas_trial_final 1.0",
        'kubenas_trial_metric{name="test_accuracy"} 0.5',
        'kubenas_trial_metric{name="params"} 10.0',
    ):
        assert line in bodies[3]
    assert "/job/kubenas-trial/" in fake_pushgateway.requests[0].path


def test_unreachable_pushgateway_is_logged_and_ignored(capsys: pytest.CaptureFixture[str]) -> None:
    reporter = Reporter.from_env(
        {"KUBENAS_REPORT": "", "KUBENAS_PUSHGATEWAY_URL": "http://127.0.0.1:9"}
    )
    reporter.epoch(1, {"val_accuracy": 0.5})
    assert "pushgateway push to http://127.0.0.1:9 failed" in capsys.readouterr().err


def test_report_module_works_without_torch() -> None:
    """A user's own trainer may not use torch at all; reporting must not drag it in."""
    code = (
        "import sys, kubenas_trainer.report as r; r.Reporter.from_env({}); "
        "sys.exit('torch' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
