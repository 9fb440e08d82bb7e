"""The benchmark CLI runs a few real training steps and ends with its figures as JSON."""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("torch")

pytestmark = [pytest.mark.trainer, pytest.mark.slow]


def test_bench_reports_throughput_and_startup_as_json() -> None:
    arch = {"stem_channels": 8, "stages": [{"width": 8, "blocks": ["conv3x3"]}]}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "kubenas_trainer.bench",
            "--device",
            "cpu",
            "--json",
            "--dataset",
            "synthetic:3x16x16:10:400",
            "--batch-size",
            "32",
            "--steps",
            "2",
            "--architecture",
            json.dumps(arch),
        ],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout.splitlines()[-1])
    assert figures["device"] == "cpu" and figures["timed_steps"] == 2
    assert figures["images_per_second"] > 0 and figures["tflops_per_second"] > 0
    assert figures["training_flops_per_step"] > 0
    assert 0 < figures["startup_seconds"] < 300 and figures["epoch_seconds"] > 0
