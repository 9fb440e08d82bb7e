"""``kubenas export`` on runs that have no model to give: each refusal says what to do."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from kubenas.cli import main
from kubenas.export import ExportFailed, export_run


def _run(tmp_path: Path, summary: dict[str, Any]) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps(summary))
    return run


def test_a_folder_that_is_not_a_run_is_named(tmp_path: Path) -> None:
    with pytest.raises(ExportFailed, match=r"no summary\.json; give the results folder"):
        export_run(str(tmp_path), "onnx", tmp_path / "m.onnx")


def test_a_final_stage_awaiting_approval_says_how_to_release_it(tmp_path: Path) -> None:
    run = _run(tmp_path, {"final": {"awaitingApproval": True, "model": None}})
    with pytest.raises(ExportFailed, match=re.escape(f"run kubenas approve {run} first")):
        export_run(str(run), "onnx", tmp_path / "m.onnx")


def test_a_final_stage_without_an_exported_model_points_at_the_summary(tmp_path: Path) -> None:
    run = _run(tmp_path, {"final": {"awaitingApproval": False, "model": None}})
    with pytest.raises(ExportFailed, match="no final trial exported a model; see"):
        export_run(str(run), "torchscript", tmp_path / "m.pt")


def test_a_run_with_neither_final_stage_nor_checkpoint_is_refused(tmp_path: Path) -> None:
    run = _run(tmp_path, {"best": None})
    with pytest.raises(ExportFailed, match=r"no final stage and no best-checkpoint\.pt"):
        export_run(str(run), "onnx", tmp_path / "m.onnx")


def test_the_final_model_file_is_copied_and_the_cli_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "final-model"
    model.mkdir()
    (model / "model.onnx").write_bytes(b"onnx bytes")
    run = _run(tmp_path, {"final": {"awaitingApproval": False, "model": str(model)}})
    target = tmp_path / "out" / "served.onnx"
    assert main(["export", str(run), "--format", "onnx", "-o", str(target)]) == 0
    assert target.read_bytes() == b"onnx bytes"
    assert main(["export", str(run), "--format", "torchscript", "-o", str(target)]) == 1
    assert "model.torchscript.pt is missing" in capsys.readouterr().err
