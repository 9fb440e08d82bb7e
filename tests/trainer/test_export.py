"""Exports: TorchScript, ONNX and the rebuild script compute the model's logits, and the CLI."""

import json
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
onnxruntime = pytest.importorskip("onnxruntime")

from kubenas_trainer.checkpoint import save_checkpoint  # noqa: E402
from kubenas_trainer.export import ExportError, export_model, main  # noqa: E402
from kubenas_trainer.models import build_model  # noqa: E402

pytestmark = pytest.mark.trainer

DIGITS_SHAPE = (1, 8, 8)
DIGITS_CLASSES = 10
TOLERANCE = 1e-4


def _trained_looking(family: str, arch: dict[str, Any]) -> Any:
    """A model whose batch-norm statistics are not the defaults, so eval mode matters; left in
    training mode, as a trial hands it over."""
    torch.manual_seed(0)
    model = build_model(family, arch, DIGITS_SHAPE, DIGITS_CLASSES)
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, *DIGITS_SHAPE) * 3 + 1)
    return model


def _export(model: Any, family: str, arch: dict[str, Any], out_dir: Path, **kw: Any) -> Any:
    return export_model(
        model,
        family=family,
        architecture=arch,
        sample_shape=DIGITS_SHAPE,
        num_classes=DIGITS_CLASSES,
        out_dir=out_dir,
        **kw,
    )


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
@pytest.mark.parametrize("family", ["chain", "nb201-cell"])
def test_exports_compute_the_models_logits_at_any_batch_size(
    tmp_path: Path, family: str, small_architectures: dict[str, dict[str, Any]]
) -> None:
    arch = small_architectures[family]
    model = _trained_looking(family, arch).to(memory_format=torch.channels_last)
    manifest = _export(model, family, arch, tmp_path)

    assert model.training  # the caller's model is untouched: mode and layout
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    names = {"model.state_dict.pt", "architecture.json", "rebuild.py", "export.json"}
    assert names | {"model.torchscript.pt", "model.onnx"} == {p.name for p in tmp_path.iterdir()}
    assert json.loads((tmp_path / "export.json").read_text()) == manifest
    assert manifest["batch_size"] == 4
    assert set(manifest["formats"]) == {"torchscript", "onnx"}
    for checked in manifest["formats"].values():
        assert 0 <= checked["max_abs_diff"] <= checked["tolerance"] == TOLERANCE

    batch = torch.randn(7, *DIGITS_SHAPE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model.eval()(batch)
        scripted = torch.jit.load(str(tmp_path / "model.torchscript.pt"))(batch)
    session = onnxruntime.InferenceSession(
        str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    (from_onnx,) = session.run(["logits"], {"input": batch.numpy()})
    assert expected.shape == (7, DIGITS_CLASSES)
    torch.testing.assert_close(scripted, expected, rtol=0, atol=TOLERANCE)
    torch.testing.assert_close(torch.from_numpy(from_onnx), expected, rtol=0, atol=TOLERANCE)


def test_rebuild_script_runs_alone_and_rebuilds_the_same_network(
    tmp_path: Path, small_architectures: dict[str, dict[str, Any]]
) -> None:
    arch = small_architectures["nb201-cell"]
    model = _trained_looking("nb201-cell", arch)
    _export(model, "nb201-cell", arch, tmp_path, formats=())

    ran = subprocess.run(
        [sys.executable, tmp_path / "rebuild.py"], capture_output=True, text=True, check=False
    )
    assert ran.returncode == 0, ran.stderr
    count = sum(p.numel() for p in model.parameters())
    assert ran.stdout.strip() == f"{count} parameters"

    rebuilt = runpy.run_path(str(tmp_path / "rebuild.py"))["load"]()
    assert not rebuilt.training
    batch = torch.randn(5, *DIGITS_SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(batch), model.eval()(batch), rtol=0, atol=0)


def test_a_format_beyond_the_tolerance_is_an_export_error(
    tmp_path: Path, small_architectures: dict[str, dict[str, Any]]
) -> None:
    arch = small_architectures["chain"]
    model = build_model("chain", arch, DIGITS_SHAPE, DIGITS_CLASSES)
    with pytest.raises(ExportError, match=r"onnx export .* differs from the model by"):
        _export(model, "chain", arch, tmp_path, formats=("onnx",), tolerance=-1.0)
    assert not (tmp_path / "export.json").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_cuda_channels_last_model_exports_and_stays_on_the_gpu(
    tmp_path: Path, small_architectures: dict[str, dict[str, Any]]
) -> None:
    arch = small_architectures["chain"]
    model = _trained_looking("chain", arch).to("cuda", memory_format=torch.channels_last)
    manifest = _export(model, "chain", arch, tmp_path)
    assert all(c["max_abs_diff"] <= TOLERANCE for c in manifest["formats"].values())
    assert next(model.parameters()).is_cuda


def _checkpoint(directory: Path, arch: dict[str, Any], **recorded: Any) -> Path:
    model = _trained_looking("chain", arch)
    state = {"family": "chain", "architecture": arch, "model": model.state_dict(), **recorded}
    return save_checkpoint(directory, state)


def test_cli_exports_a_checkpoint_and_copies_the_chosen_format(
    tmp_path: Path,
    small_architectures: dict[str, dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    checkpoint = _checkpoint(
        tmp_path / "trial",
        small_architectures["chain"],
        sample_shape=list(DIGITS_SHAPE),
        num_classes=DIGITS_CLASSES,
    )
    target = tmp_path / "served" / "model.onnx"
    assert main(["--checkpoint", str(checkpoint), "--format", "onnx", "-o", str(target)]) == 0

    exported = tmp_path / "trial" / "export"
    assert target.read_bytes() == (exported / "model.onnx").read_bytes()
    assert not (exported / "model.torchscript.pt").exists()
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 6
    assert lines[-1] == f"wrote {target}"
    session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"input": torch.randn(2, *DIGITS_SHAPE).numpy()})
    assert logits.shape == (2, DIGITS_CLASSES)


def test_cli_flags_give_what_an_older_checkpoint_does_not_record(
    tmp_path: Path, small_architectures: dict[str, dict[str, Any]]
) -> None:
    checkpoint = _checkpoint(tmp_path, small_architectures["chain"])
    out_dir = tmp_path / "out"
    argv = ["--checkpoint", str(checkpoint), "--out-dir", str(out_dir)]
    assert main([*argv, "--sample-shape", "1,8,8", "--classes", "10"]) == 0
    assert {"model.onnx", "model.torchscript.pt"} <= {p.name for p in out_dir.iterdir()}
    spec = json.loads((out_dir / "architecture.json").read_text())
    assert (spec["sample_shape"], spec["num_classes"]) == ([1, 8, 8], 10)


def test_cli_on_a_missing_checkpoint_exits_2_saying_so(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "checkpoint.pt"
    ran = subprocess.run(
        [sys.executable, "-m", "kubenas_trainer.export", "--checkpoint", str(missing)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ran.returncode == 2
    assert "kubenas_trainer.export: error: --checkpoint" in ran.stderr
    assert str(missing) in ran.stderr
    assert ran.stdout == ""


@pytest.mark.parametrize(
    "flags,message",
    [
        ([], "give --sample-shape and --classes"),
        (["--format", "tflite"], "invalid choice: 'tflite'"),
        (["--sample-shape", "1,8,8", "--classes", "10", "-o", "m.onnx"], "-o needs a single"),
        (["--sample-shape", "1,8,8", "--classes", "3"], "cannot be rebuilt"),
    ],
)
def test_cli_refuses_what_cannot_work_with_status_2(
    tmp_path: Path,
    small_architectures: dict[str, dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    message: str,
) -> None:
    checkpoint = _checkpoint(tmp_path, small_architectures["chain"])
    with pytest.raises(SystemExit) as exited:
        main(["--checkpoint", str(checkpoint), *flags])
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert "kubenas_trainer.export: error:" in error
    assert message in error
    assert not (tmp_path / "export").exists()
