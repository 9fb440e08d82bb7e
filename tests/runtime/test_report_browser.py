"""The HTML report in a real browser: headless Chromium opens the file with no network, every
image decodes, the drawings are there, the page logs nothing to its console, and a screenshot
is kept for a person to look at."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from kubenas.api.experiment import NASExperiment
from kubenas.api.records import TrialRole
from kubenas.report import render_report
from kubenas.runtime.outputs import write_outputs
from kubenas.runtime.simulated import simulate
from kubenas.space import Assignment

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install chromium)"
    ),
]

RESNET_CELL = "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|"
# Chromium writes each console message (log, warning, error, uncaught exception) to stderr as
# `[pid:tid:time:INFO:CONSOLE:2] "text", source: file:///... (2)`; older builds `CONSOLE(2)`.
CONSOLE_LINE = re.compile(r":CONSOLE[:(]")
BROWSER_SECONDS = 60


def _accuracy(params: Assignment, epoch: int) -> float:
    """Rises with epochs; architectures with more convolutions end higher."""
    convolutions = sum("conv" in str(v) for v in params.values())
    return (0.5 + 0.07 * convolutions) * (1 - 0.5**epoch)


def _costs(params: Assignment) -> dict[str, float]:
    convolutions = sum("conv" in str(v) for v in params.values())
    return {"params": 20_000.0 + 15_000 * convolutions if params else 150_000.0}


def _report(out: Path) -> Path:
    """A simulated nb201 search with a final stage and a baseline, reported as `report.html`."""
    resnet = {"cell": RESNET_CELL, "stem_channels": 16, "cells_per_stage": 1}
    experiment = NASExperiment.model_validate(
        {
            "apiVersion": "kubenas.io/v1alpha1",
            "kind": "NASExperiment",
            "metadata": {"name": "browser-demo"},
            "spec": {
                "searchSpace": {"family": "nb201-cell"},
                "seed": 3,
                "budget": {"maxTrials": 12, "parallelTrials": 2},
                "trial": {"dataset": "digits"},
                "fidelity": {"min": 1, "max": 9, "scheduler": "asha", "reductionFactor": 3},
                "final": {"topK": 2, "seeds": 2, "fidelity": 3},
                "baselines": [{"name": "resnet", "architecture": resnet}],
            },
        }
    )
    sim = simulate(experiment.spec, _accuracy, costs=_costs)
    records = [
        r.with_changes(metrics={**r.metrics, "test_accuracy": r.metrics["val_accuracy"] - 0.01})
        if r.role in (TrialRole.FINAL, TrialRole.BASELINE)
        else r
        for r in sim.records.values()
    ]
    summary = write_outputs(out, experiment, records, sim.final)
    page = out / "report.html"
    page.write_text(render_report(experiment, records, summary), encoding="utf-8")
    return page


def _chromium(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=5000",
            "--window-size=1280,2400",
            f"--user-data-dir={profile}",
            *args,
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=BROWSER_SECONDS,
        check=True,
    )


def _console_messages(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if CONSOLE_LINE.search(line)]


def _body_data(dom: str) -> dict[str, str]:
    match = re.search(r"<body([^>]*)>", dom)
    assert match is not None, dom[:500]
    return dict(re.findall(r'data-([a-z]+)="([^"]*)"', match.group(1)))


def _artifact(name: str) -> Path:
    default = Path(tempfile.gettempdir()) / "kubenas-test-artifacts"
    folder = Path(os.environ.get("KUBENAS_TEST_ARTIFACTS", default))
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


def test_the_report_opens_offline_with_every_image_and_a_silent_console(tmp_path: Path) -> None:
    page = _report(tmp_path)
    text = page.read_text(encoding="utf-8")
    dom = _chromium(page, tmp_path / "profile", "--dump-dom")
    data = _body_data(dom.stdout)
    assert data.get("ready") == "1", "the page's load script never ran"
    assert int(data["images"]) == text.count("<img ") > 0  # every <img> decoded
    assert int(data["drawings"]) == text.count("<svg") > 0
    assert _console_messages(dom.stderr) == []

    screenshot = tmp_path / "report.png"
    shot = _chromium(page, tmp_path / "profile", f"--screenshot={screenshot}")
    assert _console_messages(shot.stderr) == []
    assert screenshot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    kept = _artifact("report.png")
    shutil.copyfile(screenshot, kept)
    print(f"report screenshot: {kept}")


def test_a_console_message_of_a_broken_page_is_caught(tmp_path: Path) -> None:
    """The silence asserted above is heard: an error on a page does reach the check."""
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>broken</title></head>"
        "<body><script>console.error('broken on purpose'); missing();</script></body></html>",
        encoding="utf-8",
    )
    messages = _console_messages(_chromium(page, tmp_path / "profile", "--dump-dom").stderr)
    assert any('"broken on purpose"' in m for m in messages), messages
    assert any("missing is not defined" in m for m in messages), messages
